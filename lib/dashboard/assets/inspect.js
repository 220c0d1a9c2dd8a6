// Warren dashboard: the request inspector of an http app (issue 19): the live
// list of its last requests, its filters, and clearing it. Part of app.js; see
// core.js. One request's detail (bodies, replay, curl) is in request.js.

/* ------------------------------------------------------------------ inspector page */

/** Most rows the page keeps, whatever the server keeps (inspectRequests may be 10,000). */
const INSPECT_MAX_ROWS = 1000;
const COMMON_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
const STATUS_FILTERS = { "": "Any status", "2xx": "2xx", "3xx": "3xx", "4xx": "4xx", "5xx": "5xx", failed: "Failed", open: "Open" };

const inspectHref = (group, app, id) => `#/group/${enc(group)}/app/${enc(app)}/requests${id != null ? `/${id}` : ""}`;

/** A status badge for a summary: the code (or failed/open) in the colour of its class. */
function statusBadge(s) {
  if (s.state === "failed" && s.status === null) return badge("error", "failed");
  if (s.status === null) return badge("offline", "open");
  const kind = { 1: "info", 2: "online", 3: "info", 4: "warn", 5: "error" }[Math.floor(s.status / 100)] ?? "info";
  return badge(kind, String(s.status));
}

/** Whether a summary passes the status-class filter ("open" and "failed" are states; the others classes of status). */
function statusMatches(s, cls) {
  if (!cls) return true;
  if (cls === "open" || cls === "failed") return s.state === cls;
  return s.status !== null && `${Math.floor(s.status / 100)}xx` === cls;
}

/** "0.42 ms", "12 ms", "1.25 s"; "…" while nothing is known. */
function formatMs(ms) {
  if (ms == null) return "…";
  if (ms < 10) return `${ms.toFixed(ms < 1 ? 2 : 1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

/**
 * The inspector of app `appName` of `groupName`, with request `id` open (null: none). On the
 * inspector of that app already (only the request changed), it only opens that request: the
 * list and its feed stay as they are.
 */
async function showInspector(groupName, appName, id) {
  const ins = current?.inspector;
  if (ins && ins.group === groupName && ins.app === appName) return ins.select(id);
  const page = newPage();
  page.inspector = { group: groupName, app: appName, select: (next) => void (id = next) }; // until it is built
  document.title = `Requests to ${appName} — Warren`;
  main.replaceChildren(h("p", { class: "loading" }, "Loading requests…"));
  const path = `/api/groups/${enc(groupName)}/apps/${enc(appName)}/requests`;
  let list, group;
  try {
    [list, group] = await Promise.all([api("GET", `${path}?limit=${INSPECT_MAX_ROWS}`), api("GET", `/api/groups/${enc(groupName)}`)]);
  } catch (err) {
    if (page.alive) groupError(err);
    return;
  }
  if (page.alive) inspectorPage(page, { group, appName, path, list, id });
}

function inspectorPage(page, { group, appName, path, list, id }) {
  const app = group.apps.find((a) => a.name === appName);
  const ctx = { page, group: group.name, app: appName, path, urls: app?.urls ?? [], merge: null };
  const liveStatus = h("span", { id: "live-status", class: "live-status", role: "status" }, list.inspecting ? "Connecting…" : "Off");
  const clear = h("button", { id: "clear-requests", type: "button", class: "danger", onclick: () => clearDialog() }, "Clear");
  const urls = ctx.urls.length ? h("p", { class: "app-urls" }, "Public address: ", ctx.urls.map((u, i) => [i ? ", " : "", h("span", { class: "mono" }, u)])) : null;
  const head = h("section", { class: "inspect-head" },
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" },
      h("a", { href: groupHref(group.name) }, `Group ${group.name}`), " › ", h("span", {}, `app ${appName}`)),
    h("div", { class: "page-head" }, h("h1", {}, "Requests to ", h("span", { class: "mono" }, appName)), liveStatus, list.inspecting ? clear : null),
    urls);

  if (!list.inspecting) {
    page.inspector = { group: group.name, app: appName, select: () => {} };
    main.replaceChildren(head, inspectOff(group.name, appName, list.reason));
    return;
  }

  const st = { rows: new Map(), keep: Math.min(list.limit || INSPECT_MAX_ROWS, INSPECT_MAX_ROWS), fresh: false, selected: null };
  const rowCache = new Map();
  const tbody = h("tbody");
  const count = h("span", { id: "request-count", class: "count", role: "status" });
  const method = h("select", { id: "filter-method" }, h("option", { value: "" }, "Any method"), COMMON_METHODS.map((m) => h("option", { value: m }, m)));
  const status = h("select", { id: "filter-status" }, Object.entries(STATUS_FILTERS).map(([v, label]) => h("option", { value: v }, label)));
  const text = h("input", { id: "filter-path", type: "search", placeholder: "Filter by path", autocomplete: "off", spellcheck: "false" });
  const detail = requestDetail(ctx);

  main.replaceChildren(head,
    h("section", { class: "inspect-list", "aria-labelledby": "requests-title" },
      h("h2", { id: "requests-title", class: "visually-hidden" }, "Requests"),
      h("div", { class: "toolbar filters" },
        h("label", { for: "filter-method", class: "visually-hidden" }, "Method"), method,
        h("label", { for: "filter-status", class: "visually-hidden" }, "Status"), status,
        h("label", { for: "filter-path", class: "visually-hidden" }, "Path"), text,
        count),
      h("div", { class: "table-wrap requests-wrap" },
        h("table", { id: "requests", class: "clickable" },
          h("caption", { class: "visually-hidden" }, "Requests, newest first"),
          h("thead", {}, h("tr", {},
            ["Time", "Method", "Path", "Status", "Duration", "Sizes (req / resp)"].map((label, i) =>
              h("th", { scope: "col", class: ["col-time", null, null, null, "num", "num col-sizes"][i] }, label)))),
          tbody)),
      h("p", { class: "hint" }, `Newest first; the server keeps the last ${integer.format(list.limit)} requests of this app, in memory only.`)),
    detail.el);

  for (const el of [method, status]) el.addEventListener("change", render);
  text.addEventListener("input", render);
  tbody.addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-id]");
    if (tr && !e.target.closest("a, button")) location.hash = inspectHref(group.name, appName, Number(tr.dataset.id));
  });

  function render() {
    const q = text.value.trim().toLowerCase();
    const all = [...st.rows.values()].sort((a, b) => b.id - a.id);
    const shown = all.filter((s) => (!method.value || s.method === method.value) && statusMatches(s, status.value) && (!q || s.url.toLowerCase().includes(q)));
    setText(count, shown.length === all.length ? `${integer.format(all.length)} request${all.length === 1 ? "" : "s"}` : `${integer.format(shown.length)} of ${integer.format(all.length)} shown`);
    if (!shown.length) {
      rowCache.clear();
      const why = all.length ? "No request matches the filters." : "No requests yet. Requests to the app show up here as they happen.";
      tbody.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "empty" }, why)));
      return;
    }
    syncRows(tbody, rowCache, shown, (s) => s.id, createRequestRow, updateRequestRow);
    for (const [key, row] of rowCache) row.el.classList.toggle("is-selected", key === st.selected);
  }

  function createRequestRow(s) {
    const cells = {
      time: h("td", { class: "time col-time" }), method: h("td", { class: "method mono" }), path: h("td", { class: "path" }),
      status: h("td"), duration: h("td", { class: "num" }), sizes: h("td", { class: "num col-sizes" }),
    };
    const link = h("a", { href: inspectHref(group.name, appName, s.id) });
    cells.path.append(link);
    return { el: h("tr", { dataset: { id: s.id } }, Object.values(cells)), cells, link, key: "" };
  }

  function updateRequestRow(row, s) {
    const key = `${s.status}|${s.state}|${s.totalMs}|${s.requestBytes}|${s.responseBytes}`;
    if (row.key === key) return;
    const { cells } = row;
    const first = row.key === "";
    row.key = key;
    if (first) {
      setText(cells.time, new Date(s.at).toLocaleTimeString());
      cells.time.title = localTime(s.at);
      setText(cells.method, s.method);
      setText(row.link, s.url);
      row.link.title = s.url;
      if (s.replayOf !== null) cells.path.append(" ", h("span", { class: "replay-mark" }, `replay of #${s.replayOf}`));
    }
    fill(cells.status, statusBadge(s), s.websocket ? h("span", { class: "replay-mark ws-mark" }, " websocket") : null);
    cells.status.title = s.error ?? "";
    setText(cells.duration, formatMs(s.totalMs));
    cells.duration.title = s.ttfbMs != null ? `first byte of the response after ${formatMs(s.ttfbMs)}` : "";
    setText(cells.sizes, `${formatBytes(s.requestBytes)} / ${formatBytes(s.responseBytes)}`);
  }

  /** Takes summaries that began or changed (replace: all there is), keeps the newest `keep`, and shows them. */
  ctx.merge = (summaries, replace = false) => {
    if (replace) st.rows.clear();
    for (const s of summaries) {
      st.rows.set(s.id, s);
      if (!COMMON_METHODS.includes(s.method) && ![...method.options].some((o) => o.value === s.method)) method.append(h("option", { value: s.method }, s.method));
    }
    if (st.rows.size > st.keep) for (const old of [...st.rows.keys()].sort((a, b) => b - a).slice(st.keep)) st.rows.delete(old);
    render();
    detail.changed(summaries);
  };

  // Events that come while the list is asked for again: applied after it, or the answer (older
  // than they are) would replace them and a request would vanish from the page.
  let during = null;
  async function reload() {
    during = [];
    try {
      const res = await api("GET", `${path}?limit=${INSPECT_MAX_ROWS}`);
      if (page.alive) {
        ctx.merge(res.requests ?? [], true);
        for (const d of during) ctx.merge(d);
      }
    } catch { /* the feed's status says whether the server is there */ }
    during = null;
  }

  function clearDialog() {
    confirmAction({
      title: "Clear requests",
      message: `Forget every captured request of app ${appName}? This cannot be undone; new requests are captured as before.`,
      label: "Clear", danger: true,
      action: async () => {
        await api("DELETE", path);
        ctx.merge([], true);
        if (st.selected !== null) location.hash = inspectHref(group.name, appName, null);
      },
    });
  }

  page.inspector = {
    group: group.name, app: appName,
    select(next) {
      st.selected = next;
      for (const [key, row] of rowCache) row.el.classList.toggle("is-selected", key === next);
      detail.select(next);
    },
  };
  ctx.merge(list.requests ?? [], true);
  page.inspector.select(id);
  // The first event after each (re)connect holds every kept request (the server's feed starts from
  // nothing): it replaces the list. Later ones hold what began or changed. An empty one means requests
  // left without a word (cleared, elsewhere perhaps): the list is asked for again.
  liveFeed(page, `${path}/live`, "requests", (data) => {
    if (!Array.isArray(data)) return;
    if (st.fresh) { st.fresh = false; ctx.merge(data, true); }
    else if (!data.length) reload();
    else {
      during?.push(data);
      ctx.merge(data);
    }
  }, liveStatus, () => { st.fresh = true; });
}

/** What the page says when the app keeps nothing: why, and how to turn it on. */
function inspectOff(groupName, appName, reason) {
  const howTo = /allowInspect/.test(reason ?? "")
    ? [h("p", {}, "The server forbids the inspector on every app. To allow it, set this in server.toml and restart the server:"), h("pre", { class: "code" }, "allowInspect = true")]
    : /vhost/.test(reason ?? "")
      ? [h("p", {}, "The inspector needs the server's HTTP port for apps (vhostHTTPPort in server.toml).")]
      : [
        h("p", {}, "To turn it on, set inspect = true on the app: on the group page, edit the app and tick “Inspect requests”, or in server.toml:"),
        h("pre", { class: "code" }, `[[groups.apps]]\nname = "${appName}"\n# … the app's other keys, as they are …\ninspect = true`),
        h("p", { class: "hint" }, "It keeps other people's requests (secrets masked) in the server's memory; that is why it is off by default."),
      ];
  return h("section", { id: "inspect-off", class: "card notice" },
    h("h2", {}, "This app's requests are not captured"),
    h("p", {}, `Reason: ${reason ?? "inspect is off"}.`),
    howTo,
    h("p", {}, h("a", { href: groupHref(groupName) }, `Back to group ${groupName}`)));
}
