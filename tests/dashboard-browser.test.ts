/**
 * The dashboard in a real browser (Debian's Chromium driven by playwright-core) against a
 * real server and a real client on loopback: sign-in through the form, the overview turning a
 * group online through the live feed, creating a group (its token shown once), a group page
 * and its kick, a tenant who sees one group only, a phone-width and a dark rendering, and no
 * console error or CSP violation anywhere. Screenshots go to a temporary folder (logged).
 *
 * The tests run in order on one page, as a person would click through; each waits for what it
 * expects with a bounded wait, never a fixed sleep.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Browser, ConsoleMessage, Locator, Page } from "playwright-core";
import { clientConfig, createGroup, echoApp, onlineClient, TOKEN, testServer, until } from "./helpers.ts";
import { tempDir } from "./procs.ts";
import type { Connector } from "../lib/client/connector.ts";
import type { RunningServer } from "../server.ts";

/** Debian's package (`apt-get install chromium`); WARREN_CHROMIUM points elsewhere. */
const CHROMIUM = process.env.WARREN_CHROMIUM ?? "/usr/bin/chromium";
const HAVE_CHROMIUM = existsSync(CHROMIUM);
if (!HAVE_CHROMIUM) console.warn(`dashboard-browser.test.ts: skipped, no Chromium at ${CHROMIUM}; install it with \`apt-get install chromium\` (or set WARREN_CHROMIUM)`);
const SKIPPED = " (skipped: Chromium is not installed; apt-get install chromium)";

/** Longest wait for anything the page should show (the live feed ticks once a second). */
const WAIT_MS = 8_000;
const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 900 };

let server: RunningServer;
let browser: Browser;
let page: Page;
let base = "";
let shots = "";
let alphaPort = 0;
let echoPort = 0;
const cleanup: (() => unknown)[] = [];
let alpha: Connector | null = null;

/** Console errors, uncaught exceptions and CSP violations of the page, in order. */
const problems: string[] = [];
/** The browser's own log lines for HTTP error answers ("Failed to load resource: … 401"), with their URL. */
const httpErrors: { status: number; path: string }[] = [];

function onConsole(msg: ConsoleMessage): void {
  if (msg.type() !== "error") return;
  const m = /^Failed to load resource: the server responded with a status of (\d+)/.exec(msg.text());
  if (m) httpErrors.push({ status: Number(m[1]), path: new URL(msg.location().url).pathname });
  else problems.push(`console error: ${msg.text()} (${msg.location().url}:${msg.location().lineNumber})`);
}

/** Reports every CSP violation as a console error, where onConsole sees it (an init script runs outside the policy). */
const REPORT_CSP = `document.addEventListener("securitypolicyviolation", (e) => console.error("CSP violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " + e.sourceFile + ":" + e.lineNumber));`;

async function newPage(): Promise<Page> {
  const p = await browser.newPage({ viewport: DESKTOP });
  p.setDefaultTimeout(WAIT_MS);
  await p.addInitScript(REPORT_CSP);
  return p;
}

/** An admin bearer call, to check what the page did. */
async function adminApi(method: string, path: string): Promise<{ status: number; json: any }> {
  const res = await fetch(base + path, { method, headers: { authorization: `Bearer ${server.adminToken}` } });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

/** Waits until the element's text matches. */
async function seeText(loc: Locator, re: RegExp, what: string, ms = WAIT_MS): Promise<void> {
  await until(async () => re.test((await loc.textContent({ timeout: ms }).catch(() => null)) ?? ""), ms, what);
}

/** A full-page screenshot into the run's folder; its path is logged. */
async function shot(name: string): Promise<void> {
  const file = join(shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot: ${file}`);
}

/** The page has no horizontal scrolling. */
async function noHorizontalOverflow(): Promise<void> {
  const { scroll, inner, wide } = await page.evaluate(() => {
    const inner = window.innerWidth;
    // The first element that pokes out (outside the tables, which scroll in their box), to name it in a failure.
    let wide = "";
    for (const el of document.querySelectorAll("body *")) {
      const r = el.getBoundingClientRect();
      if (r.right > inner + 0.5 && !el.closest(".table-wrap")) { wide = `${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}.${el.className} right=${Math.round(r.right)}`; break; }
    }
    return { scroll: document.scrollingElement!.scrollWidth, inner, wide };
  });
  expect({ scroll: scroll <= inner, wide }).toEqual({ scroll: true, wide: "" });
}

/** The page is the same document (no reload happened) since `mark` was called. */
const mark = () => page.evaluate(() => ((window as any).__notReloaded = true));
const notReloaded = () => page.evaluate(() => (window as any).__notReloaded === true);

/** The open modal dialog (there is one at a time here). */
const openDialog = () => page.locator("dialog[open]");

describe("dashboard in a browser", () => {
  beforeAll(async () => {
    if (!HAVE_CHROMIUM) return;
    const { chromium } = await import("playwright-core");
    server = await testServer();
    cleanup.push(() => server.stop());
    base = `http://127.0.0.1:${server.apiPort}`;
    const echo = await echoApp();
    cleanup.push(() => echo.close());
    expect(await createGroup(server, "alpha", ["web"])).toBe(201);
    expect(await createGroup(server, "beta", ["db"])).toBe(201);
    alphaPort = (await adminApi("GET", "/api/groups/alpha")).json.apps[0].remotePort;
    expect(alphaPort).toBeGreaterThan(0);
    shots = tempDir();
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    cleanup.unshift(() => browser.close());
    page = await newPage();
    page.on("console", onConsole);
    page.on("pageerror", (err) => problems.push(`uncaught: ${err.message}`));
    echoPort = echo.port;
  }, 30_000);

  afterAll(async () => {
    alpha?.stop();
    for (const f of cleanup) await f();
    if (shots) console.log(`dashboard screenshots are in ${shots}`);
  });

  test.skipIf(!HAVE_CHROMIUM)(`the admin signs in through the form; the overview lists the groups and turns one online live${HAVE_CHROMIUM ? "" : SKIPPED}`, async () => {
    await page.goto(base + "/");
    const token = page.locator("#signin-token");
    await token.waitFor();
    expect(await token.getAttribute("type")).toBe("password");
    expect(await page.locator("#session").isHidden()).toBe(true);

    // A wrong token: the server's message next to the form, which stays.
    await token.fill("not-the-admin-token-0123");
    await token.press("Enter");
    await seeText(page.locator("#signin-error"), /wrong administrator token/, "the sign-in error");

    await token.fill(server.adminToken);
    await token.press("Enter");
    const rows = page.locator("#groups tbody tr[data-group]");
    await until(async () => (await rows.count()) === 2, WAIT_MS, "two group rows");
    expect(await rows.evaluateAll((trs) => trs.map((tr) => (tr as HTMLElement).dataset.group))).toEqual(["alpha", "beta"]);
    await seeText(page.locator("#who"), /administrator/, "the header's who");
    const alphaRow = page.locator('#groups tr[data-group="alpha"]');
    await seeText(alphaRow, /offline/, "alpha offline");
    await seeText(page.locator("#live-status"), /Live/, "the live feed");

    // The client logs in while the page is open: the feed, not a reload, shows it.
    await mark();
    const { connector } = await onlineClient(clientConfig(server, "alpha", [{ name: "web", localAddr: `127.0.0.1:${echoPort}` }]));
    alpha = connector;
    await seeText(alphaRow, /online/, "alpha online through the feed");
    await seeText(alphaRow, /127\.0\.0\.1:\d+/, "alpha's client address");
    await seeText(page.locator("#totals"), /1 \/ 2/, "one of two groups online");
    expect(await notReloaded()).toBe(true);
    await seeText(page.locator('#groups tr[data-group="beta"]'), /offline/, "beta still offline");

    // The search box filters, and keeps its text while the feed updates the table.
    await page.locator("#search").fill("alp");
    await until(async () => (await rows.count()) === 1, WAIT_MS, "one row after the search");
    await seeText(page.locator("#live-status"), /Live/, "the feed after the search");
    expect(await page.locator("#search").inputValue()).toBe("alp");
    await page.locator("#search").fill("");
    await until(async () => (await rows.count()) === 2, WAIT_MS, "two rows again");
    await shot("overview");
  }, 30_000);

  test.skipIf(!HAVE_CHROMIUM)(`a group created from the page exists, and its token is shown once${HAVE_CHROMIUM ? "" : SKIPPED}`, async () => {
    await page.locator("#new-group").click();
    const name = page.locator("#new-group-name");
    await name.waitFor();
    await name.fill("gamma");
    await name.press("Enter");
    const value = page.locator("#token-once #token-once-value");
    await value.waitFor();
    const token = (await value.textContent()) ?? "";
    expect(token.length).toBeGreaterThanOrEqual(16);
    await until(() => page.evaluate(() => location.hash === "#/group/gamma"), WAIT_MS, "the new group's page");
    await seeText(page.locator("main h1"), /^gamma$/, "the new group's heading");

    // The group exists, and the token shown is the one that works.
    expect((await adminApi("GET", "/api/groups/gamma")).status).toBe(200);
    const login = await fetch(base + "/ui/login", { method: "POST", body: JSON.stringify({ group: "gamma", token }) });
    await login.body?.cancel();
    expect(login.status).toBe(200);

    // Escape does not lose it; Done does, and a reload never shows it again.
    await page.keyboard.press("Escape");
    expect(await page.locator("#token-once").isVisible()).toBe(true);
    await page.locator("#token-once button[type=submit]").click();
    await page.locator("#token-once").waitFor({ state: "detached" });
    await page.reload();
    await seeText(page.locator("main h1"), /^gamma$/, "the group page after the reload");
    await seeText(page.locator("#live-status"), /Live/, "the feed after the reload");
    expect(await page.locator("#token-once").count()).toBe(0);
    expect(await page.content()).not.toContain(token);
  }, 30_000);

  test.skipIf(!HAVE_CHROMIUM)(`a group page lists apps with their public address, and kicks the session after a confirmation${HAVE_CHROMIUM ? "" : SKIPPED}`, async () => {
    await page.locator(".brand").click();
    const link = page.locator('#groups tr[data-group="alpha"] a');
    await link.click();
    await seeText(page.locator("main h1"), /^alpha$/, "alpha's heading");
    const web = page.locator('#apps tr[data-app="web"]');
    await seeText(web.locator("td.addr"), new RegExp(`^127\\.0\\.0\\.1:${alphaPort}$`), "web's public address");
    await seeText(web, /online/, "web online");
    await seeText(page.locator("#live-status"), /Live/, "the group feed");
    await seeText(page.locator("#charts"), /web/, "web's traffic chart");
    await shot("group");

    const before = (await adminApi("GET", "/api/groups/alpha")).json;
    expect(before.online).toBe(true);
    const kick = page.locator("#kick");
    await until(() => kick.isEnabled(), WAIT_MS, "the kick button enabled");
    await kick.click();
    const dialog = openDialog();
    await seeText(dialog, /Disconnect the client of group alpha/, "the kick confirmation");
    // Cancel first: nothing happens.
    await dialog.getByRole("button", { name: "Cancel" }).click();
    await dialog.waitFor({ state: "detached" });
    expect((await adminApi("GET", "/api/groups/alpha")).json.onlineSince).toBe(before.onlineSince);

    await kick.click();
    await openDialog().getByRole("button", { name: "Kick", exact: true }).click();
    await openDialog().waitFor({ state: "detached" });
    await until(async () => {
      const g = (await adminApi("GET", "/api/groups/alpha")).json;
      return !g.online || g.onlineSince !== before.onlineSince;
    }, WAIT_MS, "the session ended or replaced");
    const events = (await adminApi("GET", "/api/groups/alpha/events")).json.events;
    expect(events.some((e: { kind: string }) => e.kind === "kicked")).toBe(true);
    await seeText(page.locator("#events"), /kicked/, "the kick in the page's events");
    // The client comes back by itself (a new connection), and the page shows the new session.
    let again: { online: boolean; onlineSince: string; clientAddr: string } = { online: false, onlineSince: "", clientAddr: "" };
    await until(async () => (again = (await adminApi("GET", "/api/groups/alpha")).json).online && again.onlineSince !== before.onlineSince, 15_000, "alpha back online");
    await seeText(page.locator(".group-head .facts"), new RegExp(again.clientAddr.replace(/\./g, "\\.")), "the new session on the page");
    await seeText(page.locator(".group-head .page-head"), /online/, "alpha online again on the page");
  }, 30_000);

  test.skipIf(!HAVE_CHROMIUM)(`at phone width nothing overflows sideways; the dark scheme is dark${HAVE_CHROMIUM ? "" : SKIPPED}`, async () => {
    await page.setViewportSize(PHONE);
    await seeText(page.locator("#apps"), /127\.0\.0\.1/, "the group page at phone width");
    await noHorizontalOverflow();
    await shot("group-phone");
    await page.locator(".brand").click();
    await until(async () => (await page.locator("#groups tbody tr[data-group]").count()) === 3, WAIT_MS, "the overview at phone width");
    await noHorizontalOverflow();
    await shot("overview-phone");

    /** How bright the body's background or text colour is: 0 black .. 1 white. */
    const brightness = (what: "backgroundColor" | "color") => page.evaluate((what) => {
      const [r, g, b] = getComputedStyle(document.body)[what].match(/\d+(\.\d+)?/g)!.map(Number) as [number, number, number];
      return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
    }, what);
    expect(await brightness("backgroundColor")).toBeGreaterThan(0.8);
    await page.emulateMedia({ colorScheme: "dark" });
    await until(async () => (await brightness("backgroundColor")) < 0.2, WAIT_MS, "a dark background");
    expect(await brightness("color")).toBeGreaterThan(0.7); // light text on it
    await noHorizontalOverflow();
    await shot("overview-phone-dark");
    await page.setViewportSize(DESKTOP);
    await page.locator('#groups tr[data-group="alpha"] a').click();
    await seeText(page.locator('#apps tr[data-app="web"]'), /online/, "the group page in the dark");
    await shot("group-dark");
    await page.emulateMedia({ colorScheme: "light" });
  }, 30_000);

  test.skipIf(!HAVE_CHROMIUM)(`a tenant signs in with the group's name and token and sees that group only${HAVE_CHROMIUM ? "" : SKIPPED}`, async () => {
    await page.locator("#signout").click();
    await page.locator("#signin").waitFor();
    expect(await page.locator("#session").isHidden()).toBe(true);
    // The next person starts at their own start page, not at this session's last group.
    expect(await page.evaluate(() => location.hash)).toBe("#/");
    // The session is over on the server too.
    expect(await page.evaluate(() => fetch("/ui/me").then((r) => r.status))).toBe(401);

    await page.locator("#signin-group").fill("beta");
    await page.locator("#signin-token").fill(TOKEN);
    await page.locator("#signin-token").press("Enter");
    await seeText(page.locator("main h1"), /^beta$/, "beta's page");
    await until(() => page.evaluate(() => location.hash === "#/group/beta"), WAIT_MS, "the tenant's own group in the address");
    await seeText(page.locator("#who"), /group beta/, "the header's who");
    expect(await page.locator("#nav").isHidden()).toBe(true);
    expect(await page.locator("#delete-group").count()).toBe(0);
    await seeText(page.locator('#apps tr[data-app="db"]'), /db/, "beta's app");
    await seeText(page.locator("#live-status"), /Live/, "the tenant's feed");
    const listed = await page.evaluate(() => fetch("/api/groups").then((r) => r.json()));
    expect(listed.groups.map((g: { name: string }) => g.name)).toEqual(["beta"]);
    expect(await page.locator("body").textContent()).not.toMatch(/alpha|gamma/);

    // Another group's page is not found, whether it exists or not; the overview is the own group.
    await page.evaluate(() => (location.hash = "#/group/alpha"));
    await seeText(page.locator("main"), /group "alpha" does not exist/, "alpha not found for the tenant");
    expect(await page.locator("#apps").count()).toBe(0);
    await page.evaluate(() => (location.hash = "#/group/nope"));
    await seeText(page.locator("main"), /group "nope" does not exist/, "a missing group, the same answer");
    await page.getByRole("link", { name: "Back to group beta" }).click();
    await seeText(page.locator("main h1"), /^beta$/, "beta's page through the back link");
    await page.evaluate(() => (location.hash = "#/group/alpha"));
    await seeText(page.locator("main"), /group "alpha" does not exist/, "alpha not found again");
    await page.evaluate(() => (location.hash = "#/"));
    await seeText(page.locator("main h1"), /^beta$/, "back on beta's page");
    await page.setViewportSize(PHONE);
    await noHorizontalOverflow();
    await shot("tenant-phone");
    await page.setViewportSize(DESKTOP);
  }, 30_000);

  test.skipIf(!HAVE_CHROMIUM)(`no console error, uncaught exception or CSP violation happened${HAVE_CHROMIUM ? "" : SKIPPED}`, async () => {
    expect(problems).toEqual([]);
    // The browser logs each HTTP error answer itself; only the expected ones happened:
    // "not signed in" before the first sign-in, and the wrong token.
    expect(httpErrors).toEqual([
      { status: 401, path: "/ui/me" },
      { status: 401, path: "/ui/login" },
      { status: 401, path: "/ui/me" },
    ]);

    // The watch works: an inline script on a page under the policy is reported.
    const probe = await newPage();
    const seen: string[] = [];
    probe.on("console", (m) => void (m.type() === "error" && seen.push(m.text())));
    await probe.goto(base + "/");
    await probe.evaluate(() => document.head.append(Object.assign(document.createElement("script"), { textContent: "1" })));
    await until(() => seen.some((t) => t.startsWith("CSP violation: script-src")), WAIT_MS, "the probe's CSP violation");
    await probe.close();
  }, 30_000);
});
