// Warren dashboard: the overview of every group (administrator only). Part of
// app.js; see core.js.

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
  const state = { groups: [], loaded: false, query: "", sort: "name", dir: 1, page: 0 };
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
      const text = !state.loaded ? "Loading groups…" : state.groups.length ? "No group matches the search." : "No groups yet. Create one with “New group”.";
      tbody.replaceChildren(h("tr", {}, h("td", { colspan: GROUP_COLUMNS.length, class: "empty" }, text)));
      return;
    }
    syncRows(tbody, rowCache, rows, (g) => g.name, createGroupRow, (row, g) => updateGroupRow(row, g, rates.rate(g.name)));
  }

  /** The error of the first fetch, shown until the feed brings the data after all. */
  let failed = null;

  function apply(data) {
    const now = performance.now();
    failed?.remove();
    failed = null;
    state.loaded = true;
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
    if (page.alive) main.prepend((failed = errorBox(err)));
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
  // In a cluster, a group held by another node shows that node (its client's address is that node's to show).
  setText(cells.clientAddr, g.clientAddr ?? (g.node ? `on node ${g.node}` : "—"));
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

