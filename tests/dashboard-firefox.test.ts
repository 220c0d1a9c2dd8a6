/**
 * The dashboard in Debian's Firefox (issue 17: "works in current Chromium and Firefox"), through
 * WebDriver BiDi (tests/bidi.ts): sign-in through the form, the overview turning a group online
 * through the live feed without a reload, the group page, a tenant's view, and at phone width no
 * sideways scrolling; no console error or CSP violation anywhere. Chromium's fuller walk-through
 * is tests/dashboard-browser.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { clientConfig, echoApp, onlineClient, TOKEN, testServer } from "./helpers.ts";
import { Firefox, FIREFOX } from "./bidi.ts";
import type { RunningServer } from "../server.ts";
import type { Connector } from "../lib/client/connector.ts";

const HAVE = existsSync(FIREFOX);
if (!HAVE) console.warn(`dashboard-firefox.test.ts: skipped, no Firefox at ${FIREFOX}; install it with \`apt-get install firefox-esr\` (or set WARREN_FIREFOX)`);
const suite = HAVE ? describe : describe.skip;
const WAIT_MS = 8_000;

let server: RunningServer;
let ff: Firefox;
let client: Connector | null = null;
const echo = await echoApp();
let base = "";

beforeAll(async () => {
  if (!HAVE) return;
  server = await testServer({ groups: [
    { name: "alpha", token: TOKEN, apps: [{ name: "web" }] },
    { name: "beta", token: "beta-token-0123456789abcdef", apps: [{ name: "ssh" }] },
  ] });
  base = `http://127.0.0.1:${server.apiPort}`;
  ff = await Firefox.launch(1280, 900);
  // CSP violations are reported as console errors, where the BiDi log sees them.
  await ff.navigate(base + "/");
}, 120_000);

afterAll(async () => {
  client?.stop();
  await ff?.close();
  await server?.stop();
  echo.close();
});

/** Fills the sign-in form and presses Enter in the token field, as a person does. */
function signIn(token: string, group = ""): Promise<unknown> {
  return ff.eval(`(() => {
    document.addEventListener("securitypolicyviolation", (e) => console.error("CSP violation: " + e.violatedDirective));
    const g = document.querySelector("#signin-group"); g.value = ${JSON.stringify(group)}; g.dispatchEvent(new Event("input", { bubbles: true }));
    const t = document.querySelector("#signin-token"); t.value = ${JSON.stringify(token)}; t.dispatchEvent(new Event("input", { bubbles: true }));
    t.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    t.form?.requestSubmit();
  })()`);
}

suite("the dashboard in Firefox", () => {
  test("admin sign-in; a group comes online through the live feed without a reload", async () => {
    await ff.until(`document.querySelector("#signin-token")?.type === "password"`, WAIT_MS, "the sign-in form");
    // The error watch works: a console error of the page reaches it (then it is taken back out).
    await ff.eval(`console.error("probe of the error watch")`);
    for (let i = 0; i < 100 && !ff.errors.some((e) => e.includes("probe of the error watch")); i++) await Bun.sleep(20);
    expect(ff.errors.some((e) => e.includes("probe of the error watch"))).toBe(true);
    ff.errors.length = 0;
    await signIn(server.adminToken);
    await ff.until(`document.querySelectorAll("#groups tr[data-group]").length === 2`, WAIT_MS, "the overview's two rows");
    await ff.eval(`window.__marker = 42`);
    client = (await onlineClient(clientConfig(server, "alpha", [{ name: "web", localAddr: `127.0.0.1:${echo.port}` }]))).connector;
    await ff.until(`/online/.test(document.querySelector('#groups tr[data-group="alpha"]')?.textContent ?? "") && !/offline/.test(document.querySelector('#groups tr[data-group="alpha"]')?.textContent ?? "")`, WAIT_MS, "alpha online in the overview");
    expect(await ff.eval<number>(`window.__marker`)).toBe(42); // no reload happened
  }, 30_000);

  test("the group page lists its app", async () => {
    await ff.eval(`location.hash = "#/group/alpha"`);
    await ff.until(`/web/.test(document.querySelector("#apps")?.textContent ?? "")`, WAIT_MS, "the apps table");
  }, 20_000);

  test("at phone width nothing scrolls sideways", async () => {
    await ff.send("browsingContext.setViewport", { context: ff.context, viewport: { width: 390, height: 844 } });
    for (const hash of ["#/group/alpha", "#/"]) {
      await ff.eval(`location.hash = ${JSON.stringify(hash)}`);
      await ff.until(`document.querySelector("#apps, #groups")`, WAIT_MS, `the page ${hash}`);
      expect(await ff.eval<number>(`document.scrollingElement.scrollWidth - window.innerWidth`)).toBeLessThanOrEqual(0);
    }
  }, 20_000);

  test("a tenant sees its own group only; no console error or CSP violation anywhere", async () => {
    await ff.send("browsingContext.setViewport", { context: ff.context, viewport: { width: 1280, height: 900 } });
    await ff.eval(`document.querySelector("#signout").click()`);
    await ff.until(`document.querySelector("#signin-token")`, WAIT_MS, "the sign-in form again");
    await signIn("beta-token-0123456789abcdef", "beta");
    await ff.until(`/ssh/.test(document.querySelector("#apps")?.textContent ?? "")`, WAIT_MS, "beta's group page");
    expect(await ff.eval<boolean>(`document.body.textContent.includes("alpha")`)).toBe(false);
    // The only errors allowed: the 401 of /ui/me while signed out, which Firefox logs as a network error.
    expect(ff.errors.filter((e) => !/401|Unauthorized/.test(e))).toEqual([]);
  }, 20_000);
});
