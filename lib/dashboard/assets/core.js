// Warren dashboard, browser side: shared helpers (DOM, formatting, the API,
// live feeds, tables and dialogs).
//
// The dashboard is plain ES2022, no build step and no dependencies. Its files
// (core.js, overview.js, group.js, actions.js, chart.js, inspect.js,
// request.js, main.js) are concatenated in that order into the one module the server serves as app.js
// (lib/dashboard/page.ts), so they share one scope: a function of one file is
// called from another without imports. main.js, the last, starts the page.
//
// The page is served under a strict Content-Security-Policy, so nothing here
// may use inline styles, eval or external URLs. Every string from the server
// reaches the page through textContent or setAttribute (never innerHTML), so
// names, addresses and error messages cannot inject markup.

/* ------------------------------------------------------------------ DOM helpers */

const SVG_NS = "http://www.w3.org/2000/svg";
const main = document.getElementById("main");

/** Applies attrs (on* = listener, text, dataset, else attribute) and appends children. */
function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value == null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child)); // strings become text nodes
  }
  return el;
}

/** h("p", { class: "x" }, "text", child): an HTML element. */
function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** The same for SVG, which needs its namespace. */
function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replaces an element's children; unlike replaceChildren, null and false are skipped, not printed. */
function fill(el, ...children) {
  el.replaceChildren();
  return build(el, null, children);
}

/** Sets text only when it changed, so once-a-second updates do not touch the DOM needlessly. */
function setText(el, text) {
  const s = String(text);
  if (el.textContent !== s) el.textContent = s;
}

const enc = encodeURIComponent;
const groupHref = (name) => `#/group/${enc(name)}`;

/* ------------------------------------------------------------------ formatting */

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
const integer = new Intl.NumberFormat();

function formatBytes(n) {
  if (!Number.isFinite(n) || n <= 0) return "0 B";
  const units = ["B", "kB", "MB", "GB", "TB", "PB"];
  let i = 0;
  while (n >= 999.5 && i < units.length - 1) { n /= 1000; i++; }
  return `${i === 0 ? Math.round(n) : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

const formatRate = (bytesPerSecond) => `${formatBytes(bytesPerSecond)}/s`;

/** "12 s ago", "3 min ago", "5 h ago", "2 d ago"; "—" for null. */
function ago(iso) {
  if (!iso) return "—";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (!Number.isFinite(seconds)) return "—";
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

const localTime = (iso) => (iso ? new Date(iso).toLocaleString() : "");

/** A status badge: always text plus colour, never colour alone. */
function badge(kind, text) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

function groupStatus(g) {
  if (!g.enabled) return ["disabled", "disabled"];
  return g.online ? ["online", "online"] : ["offline", "offline"];
}

/* ------------------------------------------------------------------ API */

class ApiError extends Error {
  constructor(status, message, issues = []) {
    super(message);
    this.status = status;
    this.issues = issues;
  }
}

/** The signed-in session: { role, group, csrf }, or null. The cookie itself is HttpOnly. */
let session = null;

/**
 * The one way the page talks to the server. Non-GET requests carry the CSRF
 * header and a JSON body; every failure becomes an ApiError with the server's
 * message; a 401 on a signed-in session means it expired, so we sign out.
 */
async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") {
    init.headers["Content-Type"] = "application/json";
    if (session) init.headers["X-CSRF-Token"] = session.csrf;
    init.body = JSON.stringify(body ?? {});
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, "The server cannot be reached. Check the connection and try again.");
  }
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (res.ok) return data;
  const message = typeof data?.error === "string" ? data.error : `Request failed (${res.status})`;
  const issues = Array.isArray(data?.issues) ? data.issues : [];
  if (res.status === 401 && session && path !== "/ui/login") sessionExpired();
  throw new ApiError(res.status, message, issues);
}

/** A new alert box showing err. */
function errorBox(err) {
  const box = h("div", { class: "error", role: "alert" });
  showError(box, err);
  return box;
}

/** Puts an error (and the server's per-field issues) into a container next to what failed. */
function showError(container, err) {
  const message = err.message || "Something went wrong.";
  const where = [];
  const issues = [];
  for (const i of err.issues ?? []) {
    const path = Array.isArray(i.path) ? i.path.join(".") : i.path;
    // An issue that repeats the message only adds where it is: said once, not twice.
    if (String(i.message) === message) { if (path) where.push(path); }
    else issues.push(h("li", {}, path ? `${path}: ${i.message}` : String(i.message)));
  }
  fill(container, h("p", {}, where.length ? `${message} (${where.join(", ")})` : message), issues.length ? h("ul", {}, issues) : null);
}

/* ------------------------------------------------------------------ pages and live feeds */

/** The page on screen: leaving it closes its feeds and timers, and late answers are ignored. */
let current = null;

function newPage() {
  leavePage();
  current = { alive: true, cleanups: [] };
  return current;
}

function leavePage() {
  if (!current) return;
  current.alive = false;
  for (const cleanup of current.cleanups) cleanup();
  current = null;
}

/**
 * Opens an EventSource (the cookie goes with it: same origin) for the page's
 * lifetime. EventSource reconnects by itself after a dropped stream, but gives
 * up for good after a non-200 answer, so then we retry ourselves. On any error
 * we ask /ui/me: a 401 there sends the user to the sign-in form. onOpen, if
 * given, runs each time the stream (re)connects, before its first event.
 */
function liveFeed(page, url, event, onData, statusEl, onOpen) {
  let source = null;
  let retry = null;
  const status = (ok) => {
    setText(statusEl, ok ? "Live" : "Reconnecting…");
    statusEl.className = `live-status ${ok ? "is-live" : "is-down"}`;
  };
  const open = () => {
    source = new EventSource(url);
    // Connected is live, even before a first event (a feed that sends only what changed may wait long).
    source.onopen = () => {
      status(true);
      if (page.alive) onOpen?.();
    };
    source.addEventListener(event, (e) => {
      let data;
      try { data = JSON.parse(e.data); } catch { return; }
      status(true);
      if (page.alive) onData(data);
    });
    source.onerror = () => {
      status(false);
      api("GET", "/ui/me").catch(() => {}); // only for its 401 side effect
      if (source.readyState === EventSource.CLOSED && page.alive) retry = setTimeout(open, 5000);
    };
  };
  open();
  page.cleanups.push(() => { clearTimeout(retry); source?.close(); });
}

/**
 * Remembers the last cumulative byte counters per key and turns two samples
 * into bytes per second. Samples closer than 250 ms apart (the first fetch
 * and the first feed event) keep the previous rate rather than a noisy one.
 */
function rateTracker() {
  const last = new Map(); // key -> { t, bytesIn, bytesOut, in, out }
  return {
    sample(key, bytesIn, bytesOut, t = performance.now()) {
      const prev = last.get(key);
      if (prev && t - prev.t < 250) return { in: prev.in, out: prev.out, dIn: 0, dOut: 0 };
      const dt = prev ? (t - prev.t) / 1000 : 0;
      // A counter that went down (server restart) counts as a fresh start, not a negative rate.
      const dIn = prev ? Math.max(0, bytesIn - prev.bytesIn) : 0;
      const dOut = prev ? Math.max(0, bytesOut - prev.bytesOut) : 0;
      const rate = { in: dt ? dIn / dt : 0, out: dt ? dOut / dt : 0 };
      last.set(key, { t, bytesIn, bytesOut, ...rate });
      return { ...rate, dIn, dOut };
    },
    rate: (key) => last.get(key) ?? { in: 0, out: 0 },
    keep(keys) { for (const k of last.keys()) if (!keys.has(k)) last.delete(k); },
  };
}

/**
 * Keeps a tbody in step with a list without rebuilding it: rows are reused by
 * key (so buttons keep focus and nothing flickers), new ones are created,
 * gone ones dropped, and the order is only rewritten when it changed.
 */
function syncRows(tbody, cache, items, keyOf, create, update) {
  const seen = new Set();
  const rows = items.map((item) => {
    const key = keyOf(item);
    seen.add(key);
    let row = cache.get(key);
    if (!row) cache.set(key, (row = create(item)));
    update(row, item);
    return row.el;
  });
  for (const key of cache.keys()) if (!seen.has(key)) cache.delete(key);
  const same = rows.length === tbody.children.length && rows.every((el, i) => tbody.children[i] === el);
  if (!same) tbody.replaceChildren(...rows);
}

/** A table inside a box that scrolls sideways on narrow screens. */
function table(id, columns, tbody, caption) {
  return h("div", { class: "table-wrap" },
    h("table", { id }, caption ? h("caption", { class: "visually-hidden" }, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
      tbody));
}

/* ------------------------------------------------------------------ dialogs */

/**
 * A modal form in a <dialog>. onSubmit runs on submit; if it throws, the
 * dialog stays open and shows the error inside it, next to the action.
 */
function openDialog({ title, body, submitLabel, danger = false, onSubmit, id }) {
  const error = h("div", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit", class: danger ? "danger" : "primary" }, submitLabel);
  const titleId = `dialog-title-${Math.random().toString(36).slice(2)}`;
  const dialog = h("dialog", { id, "aria-labelledby": titleId });
  const form = h("form", { class: "dialog-form" },
    h("h2", { id: titleId }, title),
    body,
    error,
    h("div", { class: "dialog-actions" },
      h("button", { type: "button", onclick: () => dialog.close() }, "Cancel"),
      submit));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    submit.disabled = true;
    error.replaceChildren();
    try {
      await onSubmit(form);
      dialog.close();
    } catch (err) {
      showError(error, err);
      error.scrollIntoView({ block: "nearest" }); // a long form on a phone: the error may be out of view
    } finally {
      submit.disabled = false;
    }
  });
  dialog.append(form);
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return { dialog, form, submit };
}

function confirmAction({ title, message, label, danger = false, action }) {
  return openDialog({ title, body: h("p", {}, message), submitLabel: label, danger, onSubmit: action });
}

/**
 * Shows a token the server will never show again. It lives only in this
 * dialog's DOM (never in storage, the URL or the console) and is wiped when
 * the dialog closes. Escape is held off once so a stray key does not lose it.
 */
function showTokenOnce(groupName, token) {
  const code = h("code", { id: "token-once-value" }, token);
  const copied = h("p", { class: "copy-status", role: "status" });
  const copy = h("button", { type: "button", id: "copy-token", onclick: () => copyToken(code, copied) }, "Copy");
  const dialog = h("dialog", { id: "token-once", "aria-labelledby": "token-once-title" },
    h("form", { class: "dialog-form", onsubmit: (e) => { e.preventDefault(); dialog.close(); } },
      h("h2", { id: "token-once-title" }, "Token for group ", h("span", { class: "mono" }, groupName)),
      h("p", { class: "warning" }, "Shown once; it cannot be shown again. Copy it now into the client's config."),
      h("div", { class: "token-box" }, code, copy),
      copied,
      h("div", { class: "dialog-actions" }, h("button", { type: "submit", class: "primary" }, "Done"))));
  dialog.addEventListener("cancel", (e) => e.preventDefault());
  dialog.addEventListener("close", () => { code.textContent = ""; dialog.remove(); });
  document.body.append(dialog);
  dialog.showModal();
}

async function copyToken(code, statusEl) {
  try {
    await navigator.clipboard.writeText(code.textContent);
    statusEl.textContent = "Copied to the clipboard.";
  } catch {
    // The Clipboard API needs HTTPS or localhost; elsewhere select the text so Ctrl+C works.
    const range = document.createRange();
    range.selectNodeContents(code);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    statusEl.textContent = "Could not copy automatically: the token is selected, press Ctrl+C (⌘C).";
  }
}

