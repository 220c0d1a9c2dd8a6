// Warren dashboard, browser side. Plain ES2022 module, no build step and no
// dependencies: the server bundles this file as-is and serves it under a strict
// Content-Security-Policy, so nothing here may use inline styles, eval or
// external URLs. Every string from the server reaches the page through
// textContent or setAttribute (never innerHTML), so names, addresses and error
// messages cannot inject markup.

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
  const issues = (err.issues ?? []).map((i) => {
    const path = Array.isArray(i.path) ? i.path.join(".") : i.path;
    return h("li", {}, path ? `${path}: ${i.message}` : String(i.message));
  });
  fill(container, h("p", {}, err.message || "Something went wrong."), issues.length ? h("ul", {}, issues) : null);
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
 * we ask /ui/me: a 401 there sends the user to the sign-in form.
 */
function liveFeed(page, url, event, onData, statusEl) {
  let source = null;
  let retry = null;
  const status = (ok) => {
    setText(statusEl, ok ? "Live" : "Reconnecting…");
    statusEl.className = `live-status ${ok ? "is-live" : "is-down"}`;
  };
  const open = () => {
    source = new EventSource(url);
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

/* ------------------------------------------------------------------ session and routing */

function setHeader() {
  document.getElementById("session").hidden = !session;
  document.getElementById("nav").hidden = session?.role !== "admin";
  setText(document.getElementById("who"), !session ? "" : session.role === "admin" ? "Signed in as administrator" : `Signed in as group ${session.group}`);
}

function sessionExpired() {
  session = null;
  // Close open forms: they would fail anyway. A token box stays until it is dismissed.
  for (const d of document.querySelectorAll("dialog:not(#token-once)")) d.close();
  showSignIn("Your session has expired. Please sign in again.");
}

function route() {
  if (!session) return showSignIn();
  setHeader();
  if (session.role === "owner") {
    // An owner only ever sees their own group.
    const own = groupHref(session.group);
    if (location.hash !== own) history.replaceState(null, "", own);
    return showGroup(session.group);
  }
  const m = /^#\/group\/(.+)$/.exec(location.hash);
  if (m) {
    try { return showGroup(decodeURIComponent(m[1])); } catch { /* malformed: fall through */ }
  }
  showOverview();
}

function showSignIn(message = "") {
  leavePage();
  setHeader();
  document.title = "Sign in — Warren";
  const error = h("div", { id: "signin-error", class: "error", role: "alert" }, message);
  const group = h("input", { id: "signin-group", name: "group", type: "text", autocomplete: "username", autocapitalize: "none", spellcheck: "false" });
  const token = h("input", { id: "signin-token", name: "token", type: "password", autocomplete: "current-password", required: true });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { id: "signin", class: "card signin" },
    h("h1", {}, "Sign in"),
    h("div", { class: "field" },
      h("label", { for: "signin-group" }, "Group"),
      group,
      h("p", { class: "hint" }, "Leave empty to sign in as the administrator.")),
    h("div", { class: "field" }, h("label", { for: "signin-token" }, "Token"), token),
    error,
    h("div", { class: "form-actions" }, submit));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    submit.disabled = true;
    error.replaceChildren();
    const body = { token: token.value };
    if (group.value.trim()) body.group = group.value.trim();
    try {
      session = await api("POST", "/ui/login", body);
      token.value = "";
      route();
    } catch (err) {
      showError(error, err);
      token.select();
    } finally {
      submit.disabled = false;
    }
  });
  main.replaceChildren(h("section", { class: "signin-wrap" }, form));
  group.focus();
}

document.getElementById("signout").addEventListener("click", async () => {
  try { await api("POST", "/ui/logout", {}); } catch { /* signed out either way */ }
  session = null;
  showSignIn();
});

window.addEventListener("hashchange", route);

/* ------------------------------------------------------------------ overview (admin) */

const PAGE_SIZE = 100;

/** Columns of #groups: how to sort each, and whether a first click sorts big-first. */
const GROUP_COLUMNS = [
  { key: "name", label: "Name", value: (g) => g.name },
  { key: "status", label: "Status", value: (g) => (!g.enabled ? 2 : g.online ? 0 : 1) },
  { key: "clientAddr", label: "Client address", value: (g) => g.clientAddr ?? "" },
  { key: "version", label: "Version", value: (g) => g.clientVersion ?? "" },
  { key: "onlineSince", label: "Online since", value: (g) => (g.onlineSince ? Date.parse(g.onlineSince) : Infinity) },
  { key: "apps", label: "Apps", num: true, desc: true, value: (g) => g.apps },
  { key: "connections", label: "Connections", num: true, desc: true, value: (g) => g.connections },
  { key: "inRate", label: "In", num: true, desc: true, value: (g, rates) => rates.rate(g.name).in },
  { key: "outRate", label: "Out", num: true, desc: true, value: (g, rates) => rates.rate(g.name).out },
];

function compare(a, b) {
  return typeof a === "number" && typeof b === "number" ? a - b : collator.compare(String(a), String(b));
}

async function showOverview() {
  const page = newPage();
  document.title = "Overview — Warren";
  const state = { groups: [], query: "", sort: "name", dir: 1, page: 0 };
  const rates = rateTracker();
  const totalRates = rateTracker();
  const rowCache = new Map();

  const totals = {
    online: h("strong", {}, "—"), connections: h("strong", {}, "—"), inRate: h("strong", {}, "—"), outRate: h("strong", {}, "—"),
  };
  const stat = (label, el, hint) => h("div", { class: "stat" }, h("span", { class: "stat-label", title: hint }, label), el);
  const liveStatus = h("span", { id: "live-status", class: "live-status", role: "status" }, "Connecting…");
  const search = h("input", { id: "search", type: "search", placeholder: "Search name or client address", autocomplete: "off" });
  const pageInfo = h("span", { id: "page-info", class: "page-info" });
  const prev = h("button", { id: "prev", type: "button" }, "Previous");
  const next = h("button", { id: "next", type: "button" }, "Next");
  const tbody = h("tbody");
  const headerCells = GROUP_COLUMNS.map((col) => {
    const arrow = h("span", { class: "sort-arrow", "aria-hidden": "true" });
    const button = h("button", { type: "button", class: "sort", dataset: { sort: col.key } }, col.label, arrow);
    return { col, th: h("th", { scope: "col", class: col.num ? "num" : null }, button), arrow };
  });

  main.replaceChildren(
    h("section", { class: "page-head" },
      h("h1", {}, "Groups"),
      liveStatus,
      h("button", { id: "new-group", type: "button", class: "primary", onclick: () => newGroupDialog() }, "New group")),
    h("section", { id: "totals", class: "totals", "aria-label": "Totals" },
      stat("Groups online", totals.online),
      stat("Live connections", totals.connections),
      stat("In", totals.inRate, "From users to apps"),
      stat("Out", totals.outRate, "From apps to users")),
    h("div", { class: "toolbar" },
      h("label", { for: "search", class: "visually-hidden" }, "Search groups"), search,
      h("div", { class: "pager" }, prev, pageInfo, next)),
    h("div", { class: "table-wrap" },
      h("table", { id: "groups", class: "clickable" },
        h("caption", { class: "visually-hidden" }, "Groups; In is from users to apps, Out is to users"),
        h("thead", {}, h("tr", {}, headerCells.map((c) => c.th))),
        tbody)),
    h("p", { class: "hint" }, "In: from users to apps. Out: from apps to users. Rates are per second."));

  // The search box is built once and never re-rendered, so typing survives updates.
  search.addEventListener("input", () => { state.query = search.value.trim().toLowerCase(); state.page = 0; render(); });
  prev.addEventListener("click", () => { state.page--; render(); });
  next.addEventListener("click", () => { state.page++; render(); });
  for (const { col, th } of headerCells) {
    th.firstChild.addEventListener("click", () => {
      if (state.sort === col.key) state.dir = -state.dir;
      else { state.sort = col.key; state.dir = col.desc ? -1 : 1; }
      render();
    });
  }
  // A click anywhere on a row opens the group; the name link keeps it keyboard-reachable.
  tbody.addEventListener("click", (e) => {
    const row = e.target.closest("tr[data-group]");
    if (row && !e.target.closest("a, button")) location.hash = groupHref(row.dataset.group);
  });

  function render() {
    const col = GROUP_COLUMNS.find((c) => c.key === state.sort);
    for (const c of headerCells) {
      const active = c.col === col;
      c.th.setAttribute("aria-sort", active ? (state.dir > 0 ? "ascending" : "descending") : "none");
      setText(c.arrow, active ? (state.dir > 0 ? " ▲" : " ▼") : "");
    }
    const q = state.query;
    const shown = q ? state.groups.filter((g) => g.name.toLowerCase().includes(q) || (g.clientAddr ?? "").toLowerCase().includes(q)) : state.groups.slice();
    shown.sort((a, b) => state.dir * compare(col.value(a, rates), col.value(b, rates)) || collator.compare(a.name, b.name));
    const pages = Math.max(1, Math.ceil(shown.length / PAGE_SIZE));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    const start = state.page * PAGE_SIZE;
    const rows = shown.slice(start, start + PAGE_SIZE);
    prev.disabled = state.page === 0;
    next.disabled = state.page >= pages - 1;
    setText(pageInfo, shown.length ? `${integer.format(start + 1)}–${integer.format(start + rows.length)} of ${integer.format(shown.length)}` : "0 of 0");
    if (!rows.length) {
      rowCache.clear();
      const text = state.groups.length ? "No group matches the search." : "No groups yet. Create one with “New group”.";
      tbody.replaceChildren(h("tr", {}, h("td", { colspan: GROUP_COLUMNS.length, class: "empty" }, text)));
      return;
    }
    syncRows(tbody, rowCache, rows, (g) => g.name, createGroupRow, (row, g) => updateGroupRow(row, g, rates.rate(g.name)));
  }

  function apply(data) {
    const now = performance.now();
    state.groups = data.groups ?? [];
    for (const g of state.groups) rates.sample(g.name, g.bytesIn, g.bytesOut, now);
    rates.keep(new Set(state.groups.map((g) => g.name)));
    const t = data.totals ?? {};
    const r = totalRates.sample("all", t.bytesIn ?? 0, t.bytesOut ?? 0, now);
    setText(totals.online, `${integer.format(t.groupsOnline ?? 0)} / ${integer.format(t.groups ?? 0)}`);
    setText(totals.connections, integer.format(t.connections ?? 0));
    setText(totals.inRate, formatRate(r.in));
    setText(totals.outRate, formatRate(r.out));
    render();
  }

  render();
  try {
    const data = await api("GET", "/api/overview");
    if (page.alive) apply(data);
  } catch (err) {
    if (page.alive) main.prepend(errorBox(err));
  }
  if (page.alive) liveFeed(page, "/api/live", "overview", apply, liveStatus);
}

function createGroupRow(g) {
  const cells = {
    name: h("td", { class: "name" }, h("a", { href: groupHref(g.name) }, g.name)),
    status: h("td"), clientAddr: h("td", { class: "mono" }), version: h("td"), since: h("td"),
    apps: h("td", { class: "num" }), connections: h("td", { class: "num" }),
    inRate: h("td", { class: "num" }), outRate: h("td", { class: "num" }),
  };
  return { el: h("tr", { dataset: { group: g.name } }, Object.values(cells)), cells, status: null };
}

function updateGroupRow(row, g, rate) {
  const { cells } = row;
  const [kind, text] = groupStatus(g);
  if (row.status !== kind) { row.status = kind; cells.status.replaceChildren(badge(kind, text)); }
  setText(cells.clientAddr, g.clientAddr ?? "—");
  setText(cells.version, g.clientVersion ?? "—");
  setText(cells.since, g.online ? ago(g.onlineSince) : "—");
  cells.since.title = g.online ? localTime(g.onlineSince) : "";
  setText(cells.apps, integer.format(g.apps));
  setText(cells.connections, integer.format(g.connections));
  setText(cells.inRate, formatRate(rate.in));
  setText(cells.outRate, formatRate(rate.out));
}

function newGroupDialog() {
  const name = h("input", { id: "new-group-name", name: "name", required: true, autocomplete: "off", spellcheck: "false" });
  openDialog({
    id: "new-group-dialog",
    title: "New group",
    submitLabel: "Create group",
    body: [
      h("div", { class: "field" }, h("label", { for: "new-group-name" }, "Name"), name),
      h("p", { class: "hint" }, "A token is generated for the group's client and shown once. Add apps on the group's page."),
    ],
    onSubmit: async () => {
      const created = await api("POST", "/api/groups", { name: name.value.trim(), apps: [] });
      location.hash = groupHref(created.name);
      showTokenOnce(created.name, created.token);
    },
  });
  name.focus();
}

/* ------------------------------------------------------------------ group page */

const RANGES = { "1h": "last hour", "24h": "last 24 hours", "30d": "last 30 days" };
const RANGE_SECONDS = { "1h": 3600, "24h": 86400, "30d": 30 * 86400 };

async function showGroup(name) {
  const page = newPage();
  document.title = `${name} — Warren`;
  main.replaceChildren(h("p", { class: "loading" }, "Loading group…"));
  let group;
  try {
    group = await api("GET", `/api/groups/${enc(name)}`);
  } catch (err) {
    if (!page.alive) return;
    fill(main, errorBox(err), session?.role === "admin" ? h("p", {}, h("a", { href: "#/" }, "Back to the overview")) : null);
    return;
  }
  if (page.alive) groupPage(page, group);
}

/**
 * The group page. `ctx` is what the row builders and actions below share:
 * the group's name and API path, its newest GroupView, and apply() to show a
 * GroupView the server answered with.
 */
function groupPage(page, initial) {
  const admin = session.role === "admin";
  const appRates = rateTracker();
  const connRates = rateTracker();
  const ctx = { name: initial.name, path: `/api/groups/${enc(initial.name)}`, group: initial, apply: null, actionsError: null, connRows: new Map() };

  // --- header: name, badges, facts and the actions this role may take
  const statusBadge = h("span");
  const facts = { addr: h("dd", { class: "mono" }), version: h("dd"), since: h("dd"), apps: h("dd"), ports: h("dd"), bandwidth: h("dd") };
  const fact = (label, dd) => h("div", {}, h("dt", {}, label), dd);
  ctx.actionsError = h("div", { id: "actions-error", class: "error", role: "alert" });
  const liveStatus = h("span", { id: "live-status", class: "live-status", role: "status" }, "Connecting…");
  const kick = h("button", { id: "kick", type: "button", onclick: () => kickDialog(ctx) }, "Kick session");
  const changeToken = h("button", { id: "change-token", type: "button", onclick: () => tokenDialog(ctx) }, "Change token");
  const enable = h("button", { id: "enable", type: "button", onclick: () => enableGroup(ctx, enable) }, "Enable");
  const disable = h("button", { id: "disable", type: "button", onclick: () => disableDialog(ctx) }, "Disable");
  const del = h("button", { id: "delete-group", type: "button", class: "danger", onclick: () => deleteDialog(ctx) }, "Delete group");

  // --- sections
  const appRows = new Map();
  const appsBody = h("tbody");
  const connBody = h("tbody");
  const connCount = h("span", { class: "count" });
  const events = h("ol", { id: "events", class: "events" });
  const charts = h("div", { id: "charts", class: "charts" });
  const range = h("select", { id: "range" }, Object.entries(RANGES).map(([v, label]) => h("option", { value: v }, label)));
  const chart = chartState(page, ctx.name, charts, range);

  main.replaceChildren(
    h("section", { class: "group-head" },
      h("div", { class: "page-head" }, h("h1", {}, ctx.name), statusBadge, liveStatus),
      h("dl", { class: "facts" },
        fact("Client address", facts.addr), fact("Version", facts.version), fact("Online since", facts.since),
        fact("Apps", facts.apps), fact("Allowed ports", facts.ports), fact("Bandwidth limit", facts.bandwidth)),
      h("div", { class: "actions" }, kick, changeToken, admin ? [enable, disable, del] : null),
      ctx.actionsError),
    h("section", { "aria-labelledby": "apps-title" },
      h("div", { class: "section-head" },
        h("h2", { id: "apps-title" }, "Apps"),
        h("button", { id: "add-app", type: "button", class: "primary", onclick: () => appDialog(ctx, null) }, "Add app")),
      table("apps", [
        { label: "Name and type" }, { label: "Public address" }, { label: "Status" },
        { label: "Live conns", num: true }, { label: "In/s", num: true }, { label: "Out/s", num: true },
        { label: "Total in/out", num: true }, { label: "Total conns", num: true }, { label: "Refused", num: true },
        { label: "Actions" },
      ], appsBody, "Apps"),
      h("p", { class: "hint" }, "In: from users to the app. Out: from the app to users.")),
    h("section", { "aria-labelledby": "traffic-title" },
      h("div", { class: "section-head" },
        h("h2", { id: "traffic-title" }, "Traffic"),
        h("div", { class: "inline-field" }, h("label", { for: "range" }, "Range"), range)),
      h("p", { class: "legend" }, h("span", { class: "swatch swatch-in" }), "In ", h("span", { class: "swatch swatch-out" }), "Out"),
      charts),
    h("section", { "aria-labelledby": "conns-title" },
      h("h2", { id: "conns-title" }, "Live connections ", connCount),
      table("connections", [
        { label: "App" }, { label: "User address" }, { label: "Since" }, { label: "In", num: true }, { label: "Out", num: true },
        { label: "In rate", num: true }, { label: "Out rate", num: true }, { label: "Action" },
      ], connBody, "Live connections")),
    h("section", { "aria-labelledby": "events-title" },
      h("h2", { id: "events-title" }, "Recent events"),
      events));

  let eventsKey = "";

  /** Takes a GroupView (and, from the feed, connections and events) and updates every section. */
  ctx.apply = (group, connections, newEvents) => {
    const now = performance.now();
    ctx.group = group;
    const [kind, text] = groupStatus(group);
    statusBadge.replaceChildren(badge(kind, text));
    setText(facts.addr, group.clientAddr ?? "—");
    setText(facts.version, group.clientVersion ?? "—");
    setText(facts.since, group.online ? `${ago(group.onlineSince)} (${localTime(group.onlineSince)})` : "offline");
    setText(facts.apps, group.maxApps ? `${group.apps.length} of at most ${group.maxApps}` : String(group.apps.length));
    setText(facts.ports, group.allowPorts || "server default");
    setText(facts.bandwidth, group.bandwidthLimit || "none");
    kick.disabled = !group.online;
    kick.title = group.online ? "" : "The client is offline";
    enable.hidden = group.enabled;
    disable.hidden = !group.enabled;

    for (const app of group.apps) {
      const r = appRates.sample(app.name, app.bytesIn, app.bytesOut, now);
      chart.addLive(app.name, r.dIn, r.dOut);
    }
    appRates.keep(new Set(group.apps.map((a) => a.name)));
    if (!group.apps.length) {
      appRows.clear();
      appsBody.replaceChildren(h("tr", {}, h("td", { colspan: 10, class: "empty" }, "No apps yet. Add one with “Add app”.")));
    } else {
      syncRows(appsBody, appRows, group.apps, (a) => a.name, (app) => createAppRow(ctx, app), (row, app) => updateAppRow(row, app, appRates.rate(app.name)));
    }
    chart.setApps(group.apps.map((a) => a.name));

    if (connections) {
      for (const c of connections) connRates.sample(c.id, c.bytesIn, c.bytesOut, now);
      connRates.keep(new Set(connections.map((c) => c.id)));
      // Thousands of rows help nobody and cost a lot each second: the newest 500 are shown.
      const shown = connections.slice(-500).reverse();
      setText(connCount, connections.length > shown.length ? `(${shown.length} newest of ${connections.length})` : `(${connections.length})`);
      if (!shown.length) {
        ctx.connRows.clear();
        connBody.replaceChildren(h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No live connections.")));
      } else {
        syncRows(connBody, ctx.connRows, shown, (c) => c.id, (c) => createConnRow(ctx, c), (row, c) => updateConnRow(row, c, connRates.rate(c.id)));
      }
    }
    if (newEvents) eventsKey = renderEvents(events, newEvents, eventsKey);
  };

  ctx.apply(initial);
  liveFeed(page, `/api/live?group=${enc(ctx.name)}`, "group", (d) => ctx.apply(d.group, d.connections ?? [], d.events ?? []), liveStatus);
  chart.load();
}

/** Shows the newest 50 events first; returns the list's key so an unchanged list is left alone. */
function renderEvents(ol, list, lastKey) {
  const last = list[list.length - 1];
  const key = `${list.length}|${last?.at}|${last?.kind}|${last?.message}`;
  if (key === lastKey) return key; // unchanged: keep the DOM (and any text selection) as it is
  if (!list.length) ol.replaceChildren(h("li", { class: "empty" }, "No events yet."));
  else ol.replaceChildren(...list.slice(-50).reverse().map(eventItem));
  return key;
}

/* ------------------------------------------------------------------ group page: table rows */

function createAppRow(ctx, app) {
  const cells = {
    name: h("td", { class: "name" }), addr: h("td", { class: "addr" }), status: h("td"),
    conns: h("td", { class: "num" }), inRate: h("td", { class: "num" }), outRate: h("td", { class: "num" }),
    totals: h("td", { class: "num" }), connsTotal: h("td", { class: "num" }), refused: h("td", { class: "num" }),
  };
  // The buttons act on row.app, which each update replaces with the newest view of the app.
  const actions = h("td", {}, h("div", { class: "row-actions" },
    h("button", { type: "button", class: "small", onclick: () => appDialog(ctx, row.app) }, "Edit"),
    h("button", { type: "button", class: "small danger", onclick: () => removeAppDialog(ctx, row.app) }, "Remove")));
  const row = { el: h("tr", { dataset: { app: app.name } }, Object.values(cells), actions), cells, app, nameKey: "", addrKey: "", statusKey: "" };
  return row;
}

function updateAppRow(row, app, rate) {
  const { cells } = row;
  row.app = app;
  if (row.nameKey !== `${app.name}|${app.type}`) {
    row.nameKey = `${app.name}|${app.type}`;
    fill(cells.name, app.name, " ", h("span", { class: "app-type" }, app.type));
  }
  const addrKey = app.type === "tcp" || app.type === "udp" ? `${app.type}:${app.remotePort}` : JSON.stringify(app.urls);
  if (row.addrKey !== addrKey) { row.addrKey = addrKey; cells.addr.replaceChildren(...publicAddress(app)); }
  const statusKey = `${app.online}|${app.error}`;
  if (row.statusKey !== statusKey) {
    row.statusKey = statusKey;
    fill(cells.status,
      app.error ? badge("error", "error") : app.online ? badge("online", "online") : badge("offline", "offline"),
      app.error ? h("span", { class: "app-error" }, app.error) : null);
  }
  setText(cells.conns, integer.format(app.connections));
  setText(cells.inRate, formatRate(rate.in));
  setText(cells.outRate, formatRate(rate.out));
  setText(cells.totals, `${formatBytes(app.bytesIn)} / ${formatBytes(app.bytesOut)}`);
  setText(cells.connsTotal, integer.format(app.connectionsTotal) + (app.requests != null ? ` (${integer.format(app.requests)} requests)` : ""));
  // One number keeps the table narrow; the breakdown is in the cell's tooltip.
  const refused = app.deniedConnections + app.overLimitConnections + app.queueFullConnections + app.droppedDatagrams;
  setText(cells.refused, integer.format(refused));
  cells.refused.title = `denied by IP rules: ${app.deniedConnections}, over the connection limit: ${app.overLimitConnections}, queue full: ${app.queueFullConnections}, UDP datagrams dropped: ${app.droppedDatagrams}`;
}

function createConnRow(ctx, c) {
  const cells = {
    app: h("td", {}, c.app), user: h("td", { class: "mono" }, c.userAddr), since: h("td"),
    bytesIn: h("td", { class: "num" }), bytesOut: h("td", { class: "num" }), inRate: h("td", { class: "num" }), outRate: h("td", { class: "num" }),
  };
  const cut = h("button", { type: "button", class: "small danger", onclick: () => cutDialog(ctx, c) }, "Cut");
  return { el: h("tr", { dataset: { connection: c.id } }, Object.values(cells), h("td", {}, cut)), cells };
}

function updateConnRow(row, c, rate) {
  const { cells } = row;
  setText(cells.since, ago(c.since));
  cells.since.title = localTime(c.since);
  setText(cells.bytesIn, formatBytes(c.bytesIn));
  setText(cells.bytesOut, formatBytes(c.bytesOut));
  setText(cells.inRate, formatRate(rate.in));
  setText(cells.outRate, formatRate(rate.out));
}

/* ------------------------------------------------------------------ group page: actions */

function cutDialog(ctx, c) {
  confirmAction({
    title: "Cut connection",
    message: `Cut the connection from ${c.userAddr} to app ${c.app}? The user's connection is closed at once.`,
    label: "Cut", danger: true,
    action: async () => {
      await api("DELETE", `${ctx.path}/connections/${enc(c.id)}`);
      ctx.connRows.get(c.id)?.el.remove(); // gone now, not at the next feed event
    },
  });
}

function kickDialog(ctx) {
  confirmAction({
    title: "Kick session",
    message: `Disconnect the client of group ${ctx.name}? Its apps stop until the client logs in again.`,
    label: "Kick", danger: true,
    action: () => api("POST", `${ctx.path}/kick`, {}),
  });
}

function tokenDialog(ctx) {
  confirmAction({
    title: "Change token",
    message: `Make a new token for group ${ctx.name}? The client logged in with the old token is disconnected, and the old token stops working.`,
    label: "Change token", danger: true,
    action: async () => {
      const res = await api("POST", `${ctx.path}/token`, {});
      showTokenOnce(res.name, res.token);
    },
  });
}

/** Enabling harms nothing, so it needs no confirmation; its errors show under the buttons. */
async function enableGroup(ctx, button) {
  ctx.actionsError.replaceChildren();
  button.disabled = true;
  try {
    ctx.apply(await api("POST", `${ctx.path}/enable`, {}));
  } catch (err) {
    showError(ctx.actionsError, err);
  } finally {
    button.disabled = false;
  }
}

function disableDialog(ctx) {
  confirmAction({
    title: "Disable group",
    message: `Disable group ${ctx.name}? Its client is disconnected and cannot log in until the group is enabled again.`,
    label: "Disable", danger: true,
    action: async () => ctx.apply(await api("POST", `${ctx.path}/disable`, {})),
  });
}

/** Deleting cannot be undone, so the user types the group's name first. */
function deleteDialog(ctx) {
  const input = h("input", { id: "delete-confirm", autocomplete: "off", spellcheck: "false" });
  const { submit } = openDialog({
    title: "Delete group",
    submitLabel: "Delete group", danger: true,
    body: [
      h("p", {}, `This deletes group ${ctx.name}, its apps and its token, and disconnects its client. It cannot be undone.`),
      h("div", { class: "field" }, h("label", { for: "delete-confirm" }, "Type the group's name to confirm"), input),
    ],
    onSubmit: async () => {
      if (input.value !== ctx.name) throw new ApiError(0, "The name does not match.");
      await api("DELETE", ctx.path);
      location.hash = "#/";
    },
  });
  submit.disabled = true;
  input.addEventListener("input", () => { submit.disabled = input.value !== ctx.name; });
  input.focus();
}

/** PUT replaces the whole app list; the answer is the updated GroupView. */
async function putApps(ctx, apps) {
  ctx.apply(await api("PUT", ctx.path, { apps }));
}

function removeAppDialog(ctx, app) {
  confirmAction({
    title: "Remove app",
    message: `Remove app ${app.name} from group ${ctx.name}? Its public address stops working and live connections to it are closed.`,
    label: "Remove", danger: true,
    action: () => putApps(ctx, ctx.group.apps.filter((a) => a.name !== app.name).map(appInput)),
  });
}

/** Adds an app (app = null) or edits one; the list is built from the newest GroupView. */
function appDialog(ctx, app) {
  const form = appFields(app);
  openDialog({
    id: "app-dialog",
    title: app ? `Edit app ${app.name}` : "Add app",
    submitLabel: app ? "Save" : "Add app",
    body: form.body,
    onSubmit: () => {
      const input = form.read();
      const apps = ctx.group.apps.filter((a) => !app || a.name !== app.name).map(appInput);
      // An edited app keeps its place in the list; a new one goes last.
      const index = app ? ctx.group.apps.findIndex((a) => a.name === app.name) : -1;
      if (index >= 0) apps.splice(index, 0, input);
      else apps.push(input);
      return putApps(ctx, apps);
    },
  });
  form.focus();
}

/** The public address of an app: host:port for TCP/UDP, links for HTTP(S). */
function publicAddress(app) {
  if (app.type === "tcp" || app.type === "udp") {
    return [h("span", { class: "mono" }, app.remotePort ? `${location.hostname}:${app.remotePort}` : "—")];
  }
  if (!app.urls?.length) return ["—"];
  return app.urls.map((url) => {
    // Only http(s) URLs become links: anything else (javascript: …) stays inert text.
    const safe = /^https?:\/\//i.test(url);
    return h("div", {}, safe ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, url) : url);
  });
}

function eventItem(ev) {
  const tone = { login: "online", enabled: "online", offline: "offline", apps_changed: "info", token_changed: "info", takeover: "warn", kicked: "warn", disabled: "warn", login_failed: "error", refused: "error" }[ev.kind] ?? "info";
  const details = [ev.app && `app ${ev.app}`, ev.addr && `from ${ev.addr}`, ev.reason && `reason: ${ev.reason}`, ev.count > 1 && `×${ev.count}`].filter(Boolean);
  return h("li", {},
    h("time", { datetime: ev.at, title: localTime(ev.at) }, new Date(ev.at).toLocaleTimeString()),
    badge(tone, ev.kind.replace(/_/g, " ")),
    h("span", { class: "event-message" }, ev.message),
    details.length ? h("span", { class: "event-details" }, details.join(" · ")) : null);
}

/* ------------------------------------------------------------------ app form */

const APP_TYPES = ["tcp", "udp", "http", "https"];
const listOf = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

/** The AppInput of an existing app: only the keys PUT accepts (never a password: the server keeps it). */
function appInput(app) {
  const input = { name: app.name, type: app.type, allowIPs: app.allowIPs ?? [], denyIPs: app.denyIPs ?? [], maxConnections: app.maxConnections ?? 0 };
  if (app.bandwidthLimit) input.bandwidthLimit = app.bandwidthLimit;
  if (app.type === "tcp" || app.type === "udp") input.remotePort = app.remotePort;
  else {
    if (app.subdomain) input.subdomain = app.subdomain;
    if (app.customDomains?.length) input.customDomains = app.customDomains;
    if (app.type === "http" && app.locations?.length) input.locations = app.locations;
    if (app.hostHeaderRewrite) input.hostHeaderRewrite = app.hostHeaderRewrite;
    if (app.httpUser) input.httpUser = app.httpUser;
  }
  return input;
}

/** The fields of the add/edit app form; only those relevant for the chosen type are shown. */
function appFields(app) {
  const v = app ?? { name: "", type: "tcp", remotePort: 0, allowIPs: [], denyIPs: [], maxConnections: 0 };
  const wrappers = [];
  const field = (id, label, input, hint, types = APP_TYPES) => {
    input.id = id;
    const el = h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("p", { class: "hint" }, hint) : null);
    wrappers.push({ el, types });
    return el;
  };
  const text = (value, extra = {}) => h("input", { type: "text", value: value ?? "", autocomplete: "off", spellcheck: "false", ...extra });
  const number = (value, max) => h("input", { type: "number", min: 0, max, step: 1, value: value ?? 0, inputmode: "numeric" });
  const web = ["http", "https"];

  const f = {
    name: text(v.name, { required: true }),
    type: h("select", {}, APP_TYPES.map((t) => h("option", { value: t, selected: t === v.type }, t.toUpperCase()))),
    remotePort: number(v.remotePort, 65535),
    subdomain: text(v.subdomain),
    customDomains: text((v.customDomains ?? []).join(", ")),
    locations: text((v.locations ?? []).join(", ")),
    hostHeaderRewrite: text(v.hostHeaderRewrite),
    httpUser: text(v.httpUser),
    httpPassword: h("input", { type: "password", autocomplete: "new-password", placeholder: v.basicAuth ? "leave empty to keep" : "" }),
    allowIPs: text((v.allowIPs ?? []).join(", ")),
    denyIPs: text((v.denyIPs ?? []).join(", ")),
    maxConnections: number(v.maxConnections),
    bandwidthLimit: text(v.bandwidthLimit, { placeholder: "e.g. 10MB" }),
  };
  const body = [
    field("app-name", "Name", f.name),
    field("app-type", "Type", f.type),
    field("app-remote-port", "Public port", f.remotePort, "0 lets the server pick a free port.", ["tcp", "udp"]),
    field("app-subdomain", "Subdomain", f.subdomain, null, web),
    field("app-custom-domains", "Custom domains", f.customDomains, "Comma separated.", web),
    field("app-locations", "Locations", f.locations, "URL path prefixes, comma separated.", ["http"]),
    field("app-host-header", "Host header rewrite", f.hostHeaderRewrite, null, web),
    field("app-http-user", "Basic auth user", f.httpUser, "Empty: no basic auth.", web),
    field("app-http-password", "Basic auth password", f.httpPassword, v.basicAuth ? "Leave empty to keep the current password." : null, web),
    field("app-allow-ips", "Allow IPs", f.allowIPs, "CIDRs, comma separated; empty allows everyone.", APP_TYPES),
    field("app-deny-ips", "Deny IPs", f.denyIPs, "CIDRs, comma separated.", APP_TYPES),
    field("app-max-connections", "Max connections", f.maxConnections, "0: no limit.", APP_TYPES),
    field("app-bandwidth", "Bandwidth limit", f.bandwidthLimit, "Empty: no limit.", APP_TYPES),
  ];
  const showFor = () => { for (const w of wrappers) w.el.hidden = !w.types.includes(f.type.value); };
  f.type.addEventListener("change", showFor);
  showFor();

  return {
    body: h("div", { class: "form-grid" }, body),
    focus: () => f.name.focus(),
    read() {
      const type = f.type.value;
      const input = { name: f.name.value.trim(), type, allowIPs: listOf(f.allowIPs.value), denyIPs: listOf(f.denyIPs.value), maxConnections: Number(f.maxConnections.value || 0) };
      if (f.bandwidthLimit.value.trim()) input.bandwidthLimit = f.bandwidthLimit.value.trim();
      if (type === "tcp" || type === "udp") input.remotePort = Number(f.remotePort.value || 0);
      else {
        const optional = { subdomain: f.subdomain.value.trim(), hostHeaderRewrite: f.hostHeaderRewrite.value.trim(), httpUser: f.httpUser.value.trim() };
        for (const [k, val] of Object.entries(optional)) if (val) input[k] = val;
        if (listOf(f.customDomains.value).length) input.customDomains = listOf(f.customDomains.value);
        if (type === "http" && listOf(f.locations.value).length) input.locations = listOf(f.locations.value);
        // No password typed: omit it, and the server keeps the one it has.
        if (f.httpPassword.value) input.httpPassword = f.httpPassword.value;
      }
      return input;
    },
  };
}

/* ------------------------------------------------------------------ traffic charts */

/**
 * Per-app traffic charts for the chosen range. History comes from the server
 * once per range; while the 1 h range is shown, the byte differences of the
 * live feed are added to the current step so the chart moves with the feed.
 */
function chartState(page, groupName, container, select) {
  let range = "1h";
  let step = 60;
  let apps = [];
  const series = new Map(); // app -> Map(stepStart -> [in, out])
  const figures = new Map(); // app -> { fig, ... }
  let loaded = false;

  async function load() {
    const wanted = range;
    loaded = false;
    container.replaceChildren(h("p", { class: "loading" }, "Loading traffic…"));
    figures.clear();
    try {
      const res = await api("GET", `/api/groups/${enc(groupName)}/history?range=${wanted}`);
      if (!page.alive || wanted !== range) return;
      step = res.stepSeconds || 60;
      series.clear();
      for (const a of res.apps ?? []) {
        const m = new Map();
        for (const [t, bytesIn, bytesOut] of a.points) m.set(Math.floor(t / step) * step, [bytesIn, bytesOut]);
        series.set(a.app, m);
      }
      loaded = true;
      container.replaceChildren();
      render();
    } catch (err) {
      if (page.alive && wanted === range) container.replaceChildren(errorBox(err));
    }
  }

  function addLive(app, dIn, dOut) {
    if (!loaded || range !== "1h" || (!dIn && !dOut)) return;
    const t = Math.floor(Date.now() / 1000 / step) * step;
    if (!series.has(app)) series.set(app, new Map());
    const point = series.get(app).get(t) ?? [0, 0];
    series.get(app).set(t, [point[0] + dIn, point[1] + dOut]);
  }

  function setApps(names) {
    apps = names;
    if (loaded) render();
  }

  function render() {
    const count = Math.round(RANGE_SECONDS[range] / step);
    const end = Math.floor(Date.now() / 1000 / step) * step;
    const start = end - (count - 1) * step;
    for (const app of apps) {
      const m = series.get(app) ?? new Map();
      for (const t of m.keys()) if (t < start) m.delete(t); // old live points fall off the left
      const points = [];
      for (let t = start; t <= end; t += step) points.push(m.get(t) ?? [0, 0]);
      let fig = figures.get(app);
      if (!fig) figures.set(app, (fig = chartFigure(app)));
      drawChart(fig, app, points, step, range);
    }
    const figs = apps.map((a) => figures.get(a).el);
    for (const key of figures.keys()) if (!apps.includes(key)) figures.delete(key);
    if (!figs.length) container.replaceChildren(h("p", { class: "empty" }, "No apps, so no traffic."));
    else if (figs.some((el, i) => container.children[i] !== el) || container.children.length !== figs.length) container.replaceChildren(...figs);
  }

  select.addEventListener("change", () => { range = select.value; load(); });
  return { load, addLive, setApps };
}

const CHART_W = 600;
const CHART_H = 120;

function chartFigure(app) {
  const inArea = svg("path", { class: "area-in" });
  const outArea = svg("path", { class: "area-out" });
  const inLine = svg("path", { class: "line-in" });
  const outLine = svg("path", { class: "line-out" });
  const grid = [0.25, 0.5, 0.75].map((f) => svg("line", { class: "grid", x1: 0, x2: CHART_W, y1: CHART_H * f, y2: CHART_H * f }));
  const chart = svg("svg", { viewBox: `0 0 ${CHART_W} ${CHART_H}`, preserveAspectRatio: "none", role: "img", class: "chart" }, grid, outArea, inArea, outLine, inLine);
  const caption = h("figcaption", {});
  const peak = h("span", { class: "chart-peak" });
  const from = h("span");
  const el = h("figure", { class: "chart-figure", dataset: { app } }, caption, h("div", { class: "chart-box" }, peak, chart), h("div", { class: "chart-axis" }, from, h("span", {}, "now")));
  return { el, chart, caption, peak, from, inArea, outArea, inLine, outLine };
}

/** Draws in (bottom) and out (stacked above it) bytes per step, scaled to the peak. */
function drawChart(fig, app, points, step, range) {
  let totalIn = 0;
  let totalOut = 0;
  let max = 0;
  for (const [i, o] of points) { totalIn += i; totalOut += o; max = Math.max(max, i + o); }
  const scale = max > 0 ? (CHART_H - 4) / max : 0;
  const dx = points.length > 1 ? CHART_W / (points.length - 1) : CHART_W;
  const x = (i) => (i * dx).toFixed(1);
  const y = (v) => (CHART_H - v * scale).toFixed(1);
  const line = (f) => points.map((p, i) => `${i ? "L" : "M"}${x(i)},${y(f(p))}`).join("");
  const area = (top, bottom) => `${line(top)}${points.map((p, i) => `L${x(points.length - 1 - i)},${y(bottom(points[points.length - 1 - i]))}`).join("")}Z`;
  fig.inArea.setAttribute("d", area((p) => p[0], () => 0));
  fig.outArea.setAttribute("d", area((p) => p[0] + p[1], (p) => p[0]));
  fig.inLine.setAttribute("d", line((p) => p[0]));
  fig.outLine.setAttribute("d", line((p) => p[0] + p[1]));
  const summary = `in ${formatBytes(totalIn)}, out ${formatBytes(totalOut)} in the ${RANGES[range]}`;
  fig.chart.setAttribute("aria-label", `Traffic of app ${app}: ${summary}`);
  fig.caption.replaceChildren(h("strong", {}, app), ` — ${summary}`);
  setText(fig.peak, max ? `peak ${formatRate(max / step)}` : "no traffic");
  setText(fig.from, range === "30d" ? "30 d ago" : range === "24h" ? "24 h ago" : "60 min ago");
}

/* ------------------------------------------------------------------ start */

async function start() {
  try {
    session = await api("GET", "/ui/me");
  } catch (err) {
    session = null;
    if (err.status !== 401) return showSignIn(err.message);
  }
  route();
}

start();
