/**
 * The dashboard's page and assets, served at / on the API port. Everything is
 * bundled into the server (no CDN: it must work offline); assets are named by
 * their content hash and cached for a year, the page itself never. The
 * Content-Security-Policy allows scripts and styles from this origin only;
 * images also from data: and blob: URLs (the inspector previews an image body
 * through a blob: URL made from its bytes).
 */
import { Hono } from "hono";
import html from "./assets/index.html" with { type: "text" };
import core from "./assets/core.js" with { type: "text" };
import overview from "./assets/overview.js" with { type: "text" };
import group from "./assets/group.js" with { type: "text" };
import actions from "./assets/actions.js" with { type: "text" };
import chart from "./assets/chart.js" with { type: "text" };
import inspect from "./assets/inspect.js" with { type: "text" };
import request from "./assets/request.js" with { type: "text" };
import main from "./assets/main.js" with { type: "text" };
import css from "./assets/app.css" with { type: "text" };

/**
 * The browser's script, app.js: the dashboard's files joined in this order into one module
 * (one scope: they call each other's functions without imports; main.js, last, starts it).
 */
const js = [core, overview, group, actions, chart, inspect, request, main].join("\n");

/** The policy every dashboard response carries. */
export const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/** Headers of every dashboard response: the policy, and no sniffing, framing or referrers. */
export const SECURITY_HEADERS: Record<string, string> = {
  "content-security-policy": CSP,
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
};

/** An asset's name with the first 16 hex digits of its SHA-256: a new build is a new URL. */
function hashed(name: string, body: string): string {
  const digest = new Bun.CryptoHasher("sha256").update(body).digest("hex").slice(0, 16);
  const dot = name.lastIndexOf(".");
  return `${name.slice(0, dot)}.${digest}${name.slice(dot)}`;
}

const ASSETS = new Map<string, { body: string; type: string }>([
  [hashed("app.js", js), { body: js, type: "text/javascript; charset=utf-8" }],
  [hashed("app.css", css), { body: css, type: "text/css; charset=utf-8" }],
]);
// bun-types types every .html import as an HTMLBundle; with `type: "text"` it is the file's text.
const PAGE = (html as unknown as string).replace("{{JS}}", `/assets/${hashed("app.js", js)}`).replace("{{CSS}}", `/assets/${hashed("app.css", css)}`);

/** Routes of the page (/) and its assets (/assets/…). */
export function dashboardRoutes(): Hono {
  const ui = new Hono();
  ui.get("/", (c) => c.html(PAGE, 200, { ...SECURITY_HEADERS, "cache-control": "no-store" }));
  ui.get("/assets/:file", (c) => {
    const a = ASSETS.get(c.req.param("file"));
    if (!a) return c.text("no such asset", 404, SECURITY_HEADERS);
    return c.body(a.body, 200, { ...SECURITY_HEADERS, "content-type": a.type, "cache-control": "public, max-age=31536000, immutable" });
  });
  return ui;
}
