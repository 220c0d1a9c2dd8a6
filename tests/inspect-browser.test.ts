/**
 * The request inspector's page (issue 19) in a real browser (Debian's Chromium driven by
 * playwright-core) against a real server with a vhost port, a real client and a Bun.serve origin
 * that echoes what it got (method, path, end-to-end headers, body) as JSON and records it: the
 * group page's Inspect links, the page of an app that is not inspected (and turning it on from the
 * app's edit form, which keeps the app's other keys), a request appearing live
 * without reload, the filters, the detail with its body shown by type (JSON pretty and invalid,
 * a form, an image through a blob: URL, a hex dump, truncation, WebSocket counts), Replay and
 * "Edit and replay" beside the original, "Copy as curl" run with bash and curl, Clear, the
 * group's owner, phone width, dark and light, and no console error or CSP violation anywhere.
 * Screenshots go to a temporary folder (logged).
 *
 * The curl command the page builds targets the public URL (http://api.insp.test:PORT/…), a name
 * that does not resolve here: the test runs it with `--connect-to ::127.0.0.1:PORT` added after
 * `curl`, so curl connects to the vhost port while URL and Host stay as generated.
 *
 * The tests run in order on one page, as a person would click through; each waits for what it
 * expects with a bounded wait, never a fixed sleep.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import type { Browser, ConsoleMessage, Locator, Page } from "playwright-core";
import { freePort } from "../bench/common.ts";
import type { Connector } from "../lib/client/connector.ts";
import type { RunningServer } from "../server.ts";
import { clientConfig, onlineClient, TOKEN, testServer, until } from "./helpers.ts";
import { requestHead, wsClientFrame } from "./inspect-helpers.ts";
import { tempDir } from "./procs.ts";

/** Debian's package (`apt-get install chromium`); WARREN_CHROMIUM points elsewhere. */
const CHROMIUM = process.env.WARREN_CHROMIUM ?? "/usr/bin/chromium";
const HAVE_CHROMIUM = existsSync(CHROMIUM);
if (!HAVE_CHROMIUM) console.warn(`inspect-browser.test.ts: skipped, no Chromium at ${CHROMIUM}; install it with \`apt-get install chromium\` (or set WARREN_CHROMIUM)`);
const SKIPPED = HAVE_CHROMIUM ? "" : " (skipped: Chromium is not installed; apt-get install chromium)";
const it = test.skipIf(!HAVE_CHROMIUM);

const WAIT_MS = 8_000;
const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 900 };
const BODY_LIMIT = 4096; // inspectBodyBytes of the server
/** A 1×1 PNG. */
const PNG = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==", "base64");
/** Headers of one connection: the echo leaves them out, so a request sent again by other means echoes the same. */
const HOP = new Set(["connection", "keep-alive"]);

/** The app behind the tunnel: echoes method, path, end-to-end headers and body as JSON (and records them); a few paths answer otherwise. */
function origin() {
  const seen: { method: string; path: string; headers: Record<string, string>; body: string }[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req, srv) {
      const url = new URL(req.url);
      const path = url.pathname + url.search;
      if (url.pathname === "/ws" && srv.upgrade(req)) return undefined;
      const body = await req.text();
      const headers = Object.fromEntries([...req.headers].filter(([k]) => !HOP.has(k)).sort(([a], [b]) => a.localeCompare(b)));
      seen.push({ method: req.method, path, headers, body });
      if (url.pathname === "/logo.png") return new Response(PNG, { headers: { "content-type": "image/png" } });
      if (url.pathname === "/broken") return new Response('{"ok": true,, "n": 1}', { headers: { "content-type": "application/json" } });
      if (url.pathname.startsWith("/missing")) return Response.json({ error: "not here" }, { status: 404 });
      return Response.json({ method: req.method, path, headers, body });
    },
    websocket: {
      message(ws, msg) {
        ws.send(msg);
      },
    },
  });
  return { server, seen, port: server.port! };
}

let server: RunningServer;
let browser: Browser;
let page: Page;
let base = "";
let shots = "";
let vport = 0;
let host = "";
const o = origin();
let client: Connector | null = null;
const problems: string[] = [];
const httpErrors: { status: number; path: string }[] = [];

function onConsole(msg: ConsoleMessage): void {
  if (msg.type() !== "error") return;
  const m = /^Failed to load resource: the server responded with a status of (\d+)/.exec(msg.text());
  if (m) httpErrors.push({ status: Number(m[1]), path: new URL(msg.location().url).pathname });
  else problems.push(`console error: ${msg.text()} (${msg.location().url}:${msg.location().lineNumber})`);
}

const REPORT_CSP = `document.addEventListener("securitypolicyviolation", (e) => console.error("CSP violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " + e.sourceFile + ":" + e.lineNumber));`;

async function adminApi(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(base + path, { method, headers: { authorization: `Bearer ${server.adminToken}` }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

async function seeText(loc: Locator, re: RegExp, what: string, ms = WAIT_MS): Promise<void> {
  await until(async () => re.test((await loc.first().textContent({ timeout: ms }).catch(() => null)) ?? ""), ms, what);
}

/** A full-page screenshot into the run's folder (and, `top`, one of what the screen shows); paths are logged. */
async function shot(name: string, top = false): Promise<void> {
  for (const [file, fullPage] of [[join(shots, `${name}.png`), true], ...(top ? [[join(shots, `${name}-screen.png`), false]] : [])] as [string, boolean][]) {
    await page.screenshot({ path: file, fullPage });
    console.log(`screenshot: ${file}`);
  }
}

async function noHorizontalOverflow(): Promise<void> {
  const { scroll, inner, wide } = await page.evaluate(() => {
    const inner = window.innerWidth;
    let wide = "";
    for (const el of document.querySelectorAll("body *")) {
      const r = el.getBoundingClientRect();
      // Tables and code blocks scroll sideways in their own box; nothing else may poke out.
      if (r.right > inner + 0.5 && !el.closest(".table-wrap, pre")) { wide = `${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}.${el.className} right=${Math.round(r.right)}`; break; }
    }
    return { scroll: document.scrollingElement!.scrollWidth, inner, wide };
  });
  expect({ scroll: scroll <= inner, wide }).toEqual({ scroll: true, wide: "" });
}

const mark = () => page.evaluate(() => ((window as any).__notReloaded = true));
const notReloaded = () => page.evaluate(() => (window as any).__notReloaded === true);
const openDialog = () => page.locator("dialog[open]");

/** A request to the app as a user sends it: to the vhost port, with the app's Host. */
async function userRequest(method: string, path: string, body?: string | Uint8Array<ArrayBuffer>, type?: string): Promise<{ status: number; text: string }> {
  const headers: Record<string, string> = { host };
  if (type) headers["content-type"] = type;
  const res = await fetch(`http://127.0.0.1:${vport}${path}`, { method, headers, body });
  return { status: res.status, text: await res.text() };
}

/** The id of the newest capture of `url` (not a replay), once its exchange is over. */
async function captureId(url: string): Promise<number> {
  let id = 0;
  await until(async () => {
    const r = await adminApi("GET", "/api/groups/shop/apps/api/requests?limit=1000");
    id = r.json.requests.find((x: any) => x.url === url && x.replayOf === null && x.state !== "open")?.id ?? 0;
    return id > 0;
  }, WAIT_MS, `the capture of ${url}`);
  return id;
}

const row = (id: number) => page.locator(`#requests tr[data-id="${id}"]`);
const rowIds = () => page.locator("#requests tbody tr[data-id]").evaluateAll((trs) => trs.map((tr) => Number((tr as HTMLElement).dataset.id)));

/** Opens request `id` by clicking its row, and waits for its detail. */
async function openRequest(id: number): Promise<void> {
  await row(id).locator("td.method").click();
  await until(() => page.evaluate((id) => location.hash.endsWith(`/requests/${id}`), id), WAIT_MS, `#${id} in the address`);
  await seeText(page.locator("#request-title"), new RegExp(`^Request #${id}$`), `the detail of #${id}`);
}

const ORDER = { order: { id: 42, items: ["tea", "scones"], paid: true }, note: `it's "quoted" & 50% off; $HOME \`x\`` };
const ORDER_TEXT = JSON.stringify(ORDER);
let orderId = 0;
let orderResponse = "";

describe("the request inspector in a browser", () => {
  beforeAll(async () => {
    if (!HAVE_CHROMIUM) return;
    const { chromium } = await import("playwright-core");
    vport = await freePort();
    host = `api.insp.test:${vport}`;
    server = await testServer({
      vhostHTTPPort: vport,
      subdomainHost: "insp.test",
      inspectBodyBytes: BODY_LIMIT,
      groups: [{
        name: "shop",
        token: TOKEN,
        apps: [
          { name: "api", type: "http", subdomain: "api", inspect: true },
          { name: "site", type: "http", subdomain: "site" },
          { name: "ssh", type: "tcp" },
        ],
      }],
    });
    base = `http://127.0.0.1:${server.apiPort}`;
    // The client's types must match the server's (clientConfig's type says tcp or udp only).
    const local = (name: string, type: string) => ({ name, type: type as never, localAddr: `127.0.0.1:${o.port}` });
    client = (await onlineClient(clientConfig(server, "shop", [local("api", "http"), local("site", "http"), local("ssh", "tcp")]))).connector;
    shots = tempDir();
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    page = await browser.newPage({ viewport: DESKTOP, permissions: ["clipboard-read", "clipboard-write"] });
    page.setDefaultTimeout(WAIT_MS);
    await page.addInitScript(REPORT_CSP);
    page.on("console", onConsole);
    page.on("pageerror", (err) => problems.push(`uncaught: ${err.message}`));
  }, 30_000);

  afterAll(async () => {
    client?.stop();
    await browser?.close();
    await server?.stop();
    o.server.stop(true);
    if (shots) console.log(`inspector screenshots are in ${shots}`);
  });

  it(`the group page links each http app to its inspector; an app without inspect says how to turn it on${SKIPPED}`, async () => {
    await page.goto(base + "/");
    await page.locator("#signin-token").fill(server.adminToken);
    await page.locator("#signin-token").press("Enter");
    await page.locator('#groups tr[data-group="shop"] a').click();
    const api = page.locator('#apps tr[data-app="api"]');
    await seeText(api, /online/, "api online");
    expect(await api.locator("a.inspect-link").isVisible()).toBe(true);
    expect(await page.locator('#apps tr[data-app="site"] a.inspect-link').isVisible()).toBe(true);
    expect(await page.locator('#apps tr[data-app="ssh"] a.inspect-link').isHidden()).toBe(true);

    await page.locator('#apps tr[data-app="site"] a.inspect-link').click();
    await until(() => page.evaluate(() => location.hash === "#/group/shop/app/site/requests"), WAIT_MS, "site's inspector address");
    const off = page.locator("#inspect-off");
    await seeText(off, /not captured/, "the not-inspected notice");
    await seeText(off, /the app does not set inspect = true/, "the server's reason");
    await seeText(off, /inspect = true/, "how to turn it on");
    expect(await page.locator("#requests").count()).toBe(0);
    await shot("inspector-off");

    // A group of the API (not server.toml) turns it on from the page: edit the app, tick the box.
    const blog = { name: "blog", type: "http", subdomain: "blog", requestHeaders: { set: { "x-kept": "yes" } } };
    expect((await adminApi("POST", "/api/groups", { name: "lab", apps: [blog] })).status).toBe(201);
    await page.evaluate(() => (location.hash = "#/group/lab/app/blog/requests"));
    await seeText(page.locator("#inspect-off"), /the app does not set inspect = true/, "blog not inspected");
    await page.locator("#inspect-off a").click();
    await page.locator('#apps tr[data-app="blog"] button', { hasText: "Edit" }).click();
    await page.locator("#app-inspect").check();
    await openDialog().getByRole("button", { name: "Save" }).click();
    await openDialog().waitFor({ state: "detached" });
    expect((await adminApi("GET", "/api/groups/lab")).json.apps[0]).toMatchObject({ inspect: true, requestHeaders: { set: { "x-kept": "yes" } } });
    await page.locator('#apps tr[data-app="blog"] a.inspect-link').click();
    await seeText(page.locator("#requests tbody"), /No requests yet/, "blog's inspector, on");
    await page.evaluate(() => (location.hash = "#/group/shop"));
    await seeText(page.locator("main h1"), /^shop$/, "shop's page");
    expect((await adminApi("DELETE", "/api/groups/lab")).status).toBe(204);
    await page.locator('#apps tr[data-app="api"] a.inspect-link').click();
    await until(() => page.evaluate(() => location.hash === "#/group/shop/app/api/requests"), WAIT_MS, "api's inspector address");
    await seeText(page.locator("#live-status"), /Live/, "the inspector's live feed");
    await seeText(page.locator("#requests tbody"), /No requests yet/, "an empty list");
  }, 30_000);

  it(`a request made while the page is open appears at once, newest first, and the filters narrow the list${SKIPPED}`, async () => {
    await mark();
    const res = await userRequest("POST", "/orders?src=test", ORDER_TEXT, "application/json");
    expect(res.status).toBe(200);
    orderResponse = res.text;
    orderId = await captureId("/orders?src=test");
    await seeText(row(orderId), /POST/, "the request in the list");
    await seeText(row(orderId).locator(".badge"), /^200$/, "its status");
    expect(await row(orderId).locator(".badge").getAttribute("class")).toContain("badge-online");
    expect(await notReloaded()).toBe(true);

    expect((await userRequest("GET", "/missing/page")).status).toBe(404);
    const missing = await captureId("/missing/page");
    await seeText(row(missing).locator(".badge"), /^404$/, "the 404 in the list");
    expect(await row(missing).locator(".badge").getAttribute("class")).toContain("badge-warn");
    expect(await rowIds()).toEqual([missing, orderId]);
    expect(await notReloaded()).toBe(true);

    await page.locator("#filter-method").selectOption("POST");
    await until(async () => JSON.stringify(await rowIds()) === JSON.stringify([orderId]), WAIT_MS, "only the POST");
    await page.locator("#filter-method").selectOption("");
    await page.locator("#filter-status").selectOption("4xx");
    await until(async () => JSON.stringify(await rowIds()) === JSON.stringify([missing]), WAIT_MS, "only the 4xx");
    await page.locator("#filter-status").selectOption("5xx");
    await seeText(page.locator("#requests tbody"), /No request matches the filters/, "nothing for 5xx");
    await page.locator("#filter-status").selectOption("");
    await page.locator("#filter-path").fill("ORDERS");
    await until(async () => JSON.stringify(await rowIds()) === JSON.stringify([orderId]), WAIT_MS, "the path filter");
    await page.locator("#filter-path").fill("");
    await until(async () => (await rowIds()).length === 2, WAIT_MS, "both again");
  }, 30_000);

  it(`the detail shows the request line, headers, timings and the JSON body pretty-printed${SKIPPED}`, async () => {
    await openRequest(orderId);
    const detail = page.locator("#request-detail");
    await seeText(detail.locator("#request-line"), /^POST \/orders\?src=test HTTP\/1\.1$/, "the request line");
    await seeText(detail.locator("#status-line"), /^200 OK$/, "the status line");
    const req = detail.locator('section[aria-label="Request"]');
    expect(await req.locator(".body-json").textContent()).toBe(JSON.stringify(ORDER, null, 2));
    expect(await req.locator(".request-headers").textContent()).toContain(host);
    const res = detail.locator('section[aria-label="Response"]');
    expect(JSON.parse((await res.locator(".body-json").textContent())!)).toEqual(JSON.parse(orderResponse));
    expect(await res.locator(".response-headers").textContent()).toMatch(/content-type.*application\/json/i);
    for (const label of ["User address", "Connection", "Total", "Response head after"]) await seeText(detail.locator(".request-facts"), new RegExp(label), label);
    await seeText(detail.locator(".request-facts"), /127\.0\.0\.1/, "the user's address");
    await seeText(detail.locator(".request-facts"), /Connection#\d+/, "the connection number");
    expect(await row(orderId).getAttribute("class")).toContain("is-selected");
    await shot("inspector-detail");
  }, 30_000);

  it(`Replay sends it again and shows the new exchange beside the old one; Edit and replay sends the edits${SKIPPED}`, async () => {
    const before = o.seen.length;
    await page.locator("#replay").click();
    const replayed = page.locator("#compare-replay");
    await seeText(replayed, /Replay/, "the replay's card");
    await seeText(replayed.locator(".status-line"), /^200 OK/, "the replay's status");
    await seeText(page.locator("#compare-original .status-line"), /^200 OK/, "the original's status beside it");
    const got = o.seen.slice(before);
    expect(got.map((x) => [x.method, x.path, x.body])).toEqual([["POST", "/orders?src=test", ORDER_TEXT]]);
    const echoed = JSON.parse((await replayed.locator(".body-json").textContent())!);
    expect([echoed.method, echoed.path, echoed.body]).toEqual(["POST", "/orders?src=test", ORDER_TEXT]);
    const replayId = Number(((await replayed.locator("h3 a").textContent()) ?? "").slice(1));
    expect(replayId).toBeGreaterThan(orderId);
    await seeText(row(replayId), /replay of #\d+/, "the replay in the list");
    expect((await rowIds())[0]).toBe(replayId);

    await page.locator("#edit-replay").click();
    const dialog = openDialog();
    await dialog.locator("#replay-method").fill("PUT");
    await dialog.locator("#replay-path").fill("/orders/42?edited=1");
    const headers = await dialog.locator("#replay-headers").inputValue();
    expect(headers).toContain(`Host: ${host}`);
    expect(headers).not.toMatch(/content-length/i);
    await dialog.locator("#replay-headers").fill(`${headers}\nX-Edited: yes`);
    await dialog.locator("#replay-body").fill('{"edited":true}');
    await dialog.getByRole("button", { name: "Replay" }).click();
    await dialog.waitFor({ state: "detached" });
    await seeText(replayed.locator(".request-line"), /^PUT \/orders\/42\?edited=1$/, "the edited replay's card");
    const last = o.seen.at(-1)!;
    expect([last.method, last.path, last.body, last.headers["x-edited"]]).toEqual(["PUT", "/orders/42?edited=1", '{"edited":true}', "yes"]);
    await shot("inspector-replay");
  }, 30_000);

  it(`Copy as curl gives a command that, run by bash, gets the response the user got${SKIPPED}`, async () => {
    await page.locator("#copy-curl").click();
    const area = page.locator("#curl-command");
    await area.waitFor();
    const cmd = await area.inputValue();
    expect(cmd.startsWith(`curl 'http://${host}/orders?src=test'`)).toBe(true);
    expect(cmd).toContain("--data-binary '");
    expect(cmd).not.toMatch(/-H 'host:|content-length|connection:/i);
    await seeText(page.locator("#curl-status"), /Copied to the clipboard|selected/, "the copy's status");
    if (/Copied/.test((await page.locator("#curl-status").textContent()) ?? "")) {
      expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(cmd);
    }
    // The public name does not resolve here: curl connects to the vhost port, URL and Host as generated.
    const before = o.seen.length;
    const run = Bun.spawn(["bash", "-c", cmd.replace(/^curl /, `curl -sS --max-time 10 --connect-to ::127.0.0.1:${vport} `)], { stdout: "pipe", stderr: "pipe" });
    const [out, err] = await Promise.all([new Response(run.stdout).text(), new Response(run.stderr).text()]);
    expect({ code: await run.exited, err }).toEqual({ code: 0, err: "" });
    expect(JSON.parse(out)).toEqual(JSON.parse(orderResponse));
    expect(out).toBe(orderResponse);
    expect(o.seen.at(-1)!.body).toBe(ORDER_TEXT);
    expect(o.seen.length).toBe(before + 1);
  }, 30_000);

  it(`bodies are shown by type: a form as a table, an image, invalid JSON marked, bytes as a hex dump, truncation, WebSocket counts${SKIPPED}`, async () => {
    expect((await userRequest("POST", "/signup", "name=Ann+Lee&city=Z%C3%BCrich&empty=", "application/x-www-form-urlencoded")).status).toBe(200);
    await openRequest(await captureId("/signup"));
    const form = page.locator('#request-detail section[aria-label="Request"] .body-form tbody tr');
    // The title shows before the body is drawn: wait for the table (a loaded machine showed it empty once).
    await until(async () => (await form.count()) === 3, WAIT_MS, "the form table's 3 rows");
    expect(await form.evaluateAll((trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)))).toEqual([["name", "Ann Lee"], ["city", "Zürich"], ["empty", ""]]);

    expect((await userRequest("GET", "/logo.png")).status).toBe(200);
    await openRequest(await captureId("/logo.png"));
    const img = page.locator('#request-detail section[aria-label="Response"] img.body-image');
    await until(() => img.evaluate((el) => (el as HTMLImageElement).complete && (el as HTMLImageElement).naturalWidth === 1), WAIT_MS, "the image preview loaded");
    expect(await img.getAttribute("src")).toMatch(/^blob:/);

    expect((await userRequest("GET", "/broken")).status).toBe(200);
    await openRequest(await captureId("/broken"));
    const res = page.locator('#request-detail section[aria-label="Response"]');
    await seeText(res.locator(".invalid-json"), /^invalid JSON at position 12$/, "the invalid-JSON mark");
    expect(await res.locator("mark").textContent()).toBe(",");
    await shot("inspector-invalid-json");

    const bytes = new Uint8Array(300).map((_, i) => i & 0xff);
    expect((await userRequest("POST", "/upload", bytes, "application/octet-stream")).status).toBe(200);
    await openRequest(await captureId("/upload"));
    const dump = page.locator('#request-detail section[aria-label="Request"] .hexdump');
    await until(async () => (await dump.count()) === 1, WAIT_MS, "the hex dump");
    const hex = (await dump.textContent())!.split("\n");
    expect(hex[0]).toBe("00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  |................|");
    expect(hex[4]).toBe("00000040  40 41 42 43 44 45 46 47 48 49 4a 4b 4c 4d 4e 4f  |@ABCDEFGHIJKLMNO|");
    expect(hex.length).toBe(Math.ceil(300 / 16));
    await shot("inspector-hexdump");

    const big = "x".repeat(BODY_LIMIT + 1000);
    expect((await userRequest("POST", "/big", big, "text/plain")).status).toBe(200);
    await openRequest(await captureId("/big"));
    await seeText(page.locator('#request-detail section[aria-label="Request"] .truncated'), /^truncated at 4,096 of 5,096 bytes$/, "the truncation mark");
    expect((await page.locator('#request-detail section[aria-label="Request"] .body-text').textContent())!.length).toBe(BODY_LIMIT);
    // A cut body cannot be replayed as captured: the server's 409 shows by the buttons.
    await page.locator("#replay").click();
    await seeText(page.locator("#request-error"), /cut at 4096 of 5096 bytes/, "the refusal to replay a cut body");

    // A WebSocket: two frames from the user, echoed; the counts show once it closed.
    const s = net.connect(vport, "127.0.0.1");
    let got = Buffer.alloc(0);
    s.on("data", (d: Buffer) => (got = Buffer.concat([got, d])));
    s.write(requestHead("GET", "/ws", host, [["Upgrade", "websocket"], ["Connection", "Upgrade"], ["Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="], ["Sec-WebSocket-Version", "13"]]));
    await until(() => got.includes("\r\n\r\n"), WAIT_MS, "the 101");
    const head = got.indexOf("\r\n\r\n") + 4;
    s.write(wsClientFrame(1, new TextEncoder().encode("hello")));
    s.write(wsClientFrame(1, new TextEncoder().encode("again")));
    await until(() => got.length >= head + 14, WAIT_MS, "two echoes");
    s.destroy();
    const ws = await captureId("/ws");
    await seeText(row(ws), /websocket/, "the WebSocket in the list");
    await openRequest(ws);
    await seeText(page.locator("#request-detail .request-facts"), /WebSocket from the user2 frames, 2\d B/, "frames from the user");
    await seeText(page.locator("#request-detail .request-facts"), /WebSocket from the app2 frames, 14 B/, "frames from the app");
  }, 30_000);

  it(`at phone width nothing overflows sideways, in light and dark${SKIPPED}`, async () => {
    await openRequest(orderId);
    await page.locator("#replay").click();
    await seeText(page.locator("#compare-replay .status-line"), /^200/, "a replay beside it");
    await page.locator("#copy-curl").click();
    await page.locator("#curl-command").waitFor();
    await shot("inspector-desktop");
    await page.setViewportSize(PHONE);
    await noHorizontalOverflow();
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot("inspector-phone", true);
    await page.emulateMedia({ colorScheme: "dark" });
    const dark = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    expect(dark).not.toBe("rgb(246, 247, 249)");
    await noHorizontalOverflow();
    await page.locator("#request-detail").scrollIntoViewIfNeeded();
    await shot("inspector-phone-dark", true);
    await page.setViewportSize(DESKTOP);
    await shot("inspector-desktop-dark");
    await page.emulateMedia({ colorScheme: "light" });
  }, 30_000);

  it(`Clear asks first, then empties the list here and on the server${SKIPPED}`, async () => {
    await page.locator("#clear-requests").click();
    await seeText(openDialog(), /Forget every captured request of app api/, "the confirmation");
    await openDialog().getByRole("button", { name: "Cancel" }).click();
    await openDialog().waitFor({ state: "detached" });
    expect((await adminApi("GET", "/api/groups/shop/apps/api/requests")).json.requests.length).toBeGreaterThan(0);
    await page.locator("#clear-requests").click();
    await openDialog().getByRole("button", { name: "Clear", exact: true }).click();
    await openDialog().waitFor({ state: "detached" });
    await seeText(page.locator("#requests tbody"), /No requests yet/, "an empty list");
    expect((await adminApi("GET", "/api/groups/shop/apps/api/requests")).json.requests).toEqual([]);
    await until(() => page.evaluate(() => location.hash === "#/group/shop/app/api/requests"), WAIT_MS, "no request open");
    expect(await page.locator("#request-detail").isHidden()).toBe(true);
    // Capture goes on: the next request shows up.
    await userRequest("GET", "/after-clear");
    await seeText(page.locator("#requests tbody"), /\/after-clear/, "a request after the clear");
  }, 30_000);

  it(`the group's owner inspects the group's app too${SKIPPED}`, async () => {
    await page.locator("#signout").click();
    await page.locator("#signin-group").fill("shop");
    await page.locator("#signin-token").fill(TOKEN);
    await page.locator("#signin-token").press("Enter");
    await page.locator('#apps tr[data-app="api"] a.inspect-link').click();
    await seeText(page.locator("#requests tbody"), /\/after-clear/, "the owner's list");
    await userRequest("POST", "/orders?src=owner", ORDER_TEXT, "application/json");
    const id = await captureId("/orders?src=owner");
    await openRequest(id);
    expect(await page.locator('#request-detail section[aria-label="Request"] .body-json').textContent()).toBe(JSON.stringify(ORDER, null, 2));
    await page.setViewportSize(PHONE);
    await noHorizontalOverflow();
    await shot("inspector-owner-phone");
    await page.setViewportSize(DESKTOP);
  }, 30_000);

  it(`no console error, uncaught exception or CSP violation happened${SKIPPED}`, async () => {
    expect(problems).toEqual([]);
    // The browser logs each HTTP error answer itself: "not signed in" before the sign-ins, and the
    // refused replay of a cut body; nothing else.
    expect(httpErrors.filter((e) => !(e.status === 401 && e.path === "/ui/me"))).toEqual([{ status: 409, path: expect.stringMatching(/^\/api\/groups\/shop\/apps\/api\/requests\/\d+\/replay$/) as unknown as string }]);
  }, 30_000);
});
