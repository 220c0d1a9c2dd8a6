// Warren dashboard: what a group's page does (kick, token, enable, disable,
// delete, cut a connection, add, edit and remove apps). Part of app.js; see
// core.js.

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
    // Kept as they are: the form does not show them, and PUT replaces the whole app.
    for (const k of ["requestHeaders", "responseHeaders", "inspect", "inspectSecrets"]) if (app.type === "http" && app[k] !== undefined) input[k] = app[k];
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
    inspect: h("input", { type: "checkbox", checked: !!v.inspect }),
  };
  const check = (id, label, input, hint, types) => {
    input.id = id;
    const el = h("div", { class: "field check" }, h("label", { for: id }, input, " ", label), hint ? h("p", { class: "hint" }, hint) : null);
    wrappers.push({ el, types });
    return el;
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
    check("app-inspect", "Inspect requests", f.inspect, "Keeps the last requests in the server's memory (secrets masked) for the inspector.", ["http"]),
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
        if (type === "http") {
          if (f.inspect.checked) input.inspect = true;
          for (const k of ["requestHeaders", "responseHeaders", "inspectSecrets"]) if (app?.type === "http" && app[k] !== undefined) input[k] = app[k];
        }
        // No password typed: omit it, and the server keeps the one it has.
        if (f.httpPassword.value) input.httpPassword = f.httpPassword.value;
      }
      return input;
    },
  };
}

