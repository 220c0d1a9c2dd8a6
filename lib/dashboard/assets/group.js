// Warren dashboard: a group's page and its table rows. Part of app.js; see
// core.js. The actions it offers are in actions.js, its charts in chart.js.

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
    if (page.alive) groupError(err);
    return;
  }
  if (page.alive) groupPage(page, group);
}

/** What an owner sees at another group's address: the answer the server gives for it. */
function showNotFound(name) {
  newPage();
  document.title = "Not found — Warren";
  groupError(new ApiError(404, `group "${name}" does not exist`));
}

/** A group page that cannot be shown: why, and the way back to the session's start page. */
function groupError(err) {
  const back = session?.role === "owner"
    ? h("a", { href: groupHref(session.group) }, `Back to group ${session.group}`)
    : h("a", { href: "#/" }, "Back to the overview");
  fill(main, errorBox(err), session ? h("p", {}, back) : null);
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
    setText(facts.addr, group.clientAddr ?? (group.node ? `on node ${group.node}` : "—"));
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
  // Only http apps are inspected (https passes through unread): the link shows for them alone.
  const inspect = h("a", { class: "button-link small inspect-link", href: inspectHref(ctx.name, app.name) }, "Inspect");
  const actions = h("td", {}, h("div", { class: "row-actions" },
    inspect,
    h("button", { type: "button", class: "small", onclick: () => appDialog(ctx, row.app) }, "Edit"),
    h("button", { type: "button", class: "small danger", onclick: () => removeAppDialog(ctx, row.app) }, "Remove")));
  const row = { el: h("tr", { dataset: { app: app.name } }, Object.values(cells), actions), cells, app, inspect, nameKey: "", addrKey: "", statusKey: "" };
  return row;
}

function updateAppRow(row, app, rate) {
  const { cells } = row;
  row.app = app;
  if (row.nameKey !== `${app.name}|${app.type}`) {
    row.nameKey = `${app.name}|${app.type}`;
    fill(cells.name, app.name, " ", h("span", { class: "app-type" }, app.type));
  }
  row.inspect.hidden = app.type !== "http";
  row.inspect.title = app.inspect ? "The requests this app received" : "Inspect is off for this app: the page says how to turn it on";
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

