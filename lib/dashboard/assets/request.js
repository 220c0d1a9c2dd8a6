// Warren dashboard: one captured request of the inspector (issue 19): its
// heads, timings and bodies (shown by content type), replay as captured or
// edited beside the original, and "Copy as curl". Part of app.js; see core.js
// and inspect.js (the list that opens it).

/* ------------------------------------------------------------------ bytes and text */

const MASKED = "[masked]";
/** Bytes of a body the hex dump shows. */
const HEX_BYTES = 2048;

function fromBase64(b64) {
  const s = atob(b64 || "");
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function toBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** The text of UTF-8 bytes, or null when they are not UTF-8 text (invalid, or holding NUL). */
function strictText(bytes) {
  try {
    const s = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return s.includes("\0") ? null : s;
  } catch {
    return null;
  }
}

/** Text in the charset the content type names (UTF-8 when it names none, or one the browser does not know). */
function decodeText(bytes, contentType) {
  const charset = /;\s*charset="?([\w.:-]+)/i.exec(contentType)?.[1];
  try { return new TextDecoder(charset || "utf-8").decode(bytes); } catch { return new TextDecoder().decode(bytes); }
}

/** The value of the first header `name` (any case), or null. */
function headerValue(headers, name) {
  const n = name.toLowerCase();
  return headers.find(([k]) => k.toLowerCase() === n)?.[1] ?? null;
}

/**
 * Where text stops being JSON (an index into it), or null when it is JSON. JSON.parse's messages
 * do not always say ("Unexpected token …" has no position in V8), so the grammar is walked here.
 */
function jsonErrorAt(s) {
  let i = 0;
  const ws = () => { while (i < s.length && " \t\n\r".includes(s[i])) i++; };
  const fail = () => { throw i; };
  const number = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
  function string() {
    for (i++; i < s.length;) {
      const c = s[i];
      if (c === '"') return void i++;
      if (c < " ") fail();
      if (c !== "\\") { i++; continue; }
      if (s[i + 1] !== undefined && '"\\/bfnrt'.includes(s[i + 1])) i += 2;
      else if (s[i + 1] === "u" && /^[0-9a-fA-F]{4}$/.test(s.slice(i + 2, i + 6))) i += 6;
      else fail();
    }
    fail();
  }
  function list(close, item) {
    i++;
    ws();
    if (s[i] === close) return void i++;
    for (;;) {
      item();
      ws();
      if (s[i] === close) return void i++;
      if (s[i] !== ",") fail();
      i++;
    }
  }
  function value() {
    ws();
    const c = s[i];
    if (c === "{") return list("}", () => { ws(); if (s[i] !== '"') fail(); string(); ws(); if (s[i] !== ":") fail(); i++; value(); });
    if (c === "[") return list("]", value);
    if (c === '"') return string();
    for (const word of ["true", "false", "null"]) if (s.startsWith(word, i)) return void (i += word.length);
    number.lastIndex = i;
    if (number.test(s)) return void (i = number.lastIndex);
    fail();
  }
  try {
    value();
    ws();
    return i < s.length ? i : null;
  } catch (at) {
    return typeof at === "number" ? at : null; // null: too deep to walk here
  }
}

/* ------------------------------------------------------------------ body views */

const isJsonType = (mime) => mime === "application/json" || mime.endsWith("+json");
const isTextType = (mime) => mime.startsWith("text/") || mime.endsWith("+xml") ||
  ["application/xml", "application/javascript", "application/ecmascript", "application/x-ndjson", "application/graphql", "application/yaml", "application/x-yaml", "application/toml", "application/sql"].includes(mime);

/** A body as its content type says: JSON pretty, a form as a table, text, an image, or else a hex dump. */
function bodyView(body, headers, blobs, id) {
  const bytes = fromBase64(body.base64);
  if (body.size === 0) return h("p", { class: "empty body-empty" }, "No body.");
  const type = headerValue(headers, "content-type") ?? "";
  const mime = type.split(";")[0].trim().toLowerCase();
  const encoding = headerValue(headers, "content-encoding");
  const meta = h("p", { class: "body-meta" }, `${mime || "no content type"} · ${integer.format(body.size)} bytes`);
  const cut = body.truncated ? h("p", { class: "truncated" }, `truncated at ${integer.format(bytes.length)} of ${integer.format(body.size)} bytes`) : null;
  if (!bytes.length) return h("div", { class: "body-view" }, meta, h("p", { class: "empty" }, "No bytes kept (inspectBodyBytes = 0)."));
  let view;
  if (encoding && encoding.toLowerCase() !== "identity") view = [h("p", { class: "hint" }, `Encoded (${encoding}): the bytes as they passed.`), hexDump(bytes)];
  else if (isJsonType(mime)) view = jsonView(decodeText(bytes, type), body.truncated, id);
  else if (mime === "application/x-www-form-urlencoded") view = formView(decodeText(bytes, type));
  else if (mime.startsWith("image/")) view = imageView(bytes, mime, blobs);
  else if (isTextType(mime) || (!mime && strictText(bytes) !== null)) view = h("pre", { class: "code body-text" }, decodeText(bytes, type));
  else view = hexDump(bytes);
  return h("div", { class: "body-view" }, meta, cut, view);
}

function jsonView(text, truncated, id) {
  try {
    return h("pre", { class: "code body-json" }, JSON.stringify(JSON.parse(text), null, 2));
  } catch (err) {
    // Where the walk stopped; if it found none (it disagrees, or the nesting was too deep), V8's "position N".
    const at = Math.min(jsonErrorAt(text) ?? Number(/position (\d+)/.exec(err.message)?.[1] ?? text.length), text.length);
    return [
      h("p", { class: "invalid-json", role: "note" }, `invalid JSON at position ${at}${truncated ? " (the body is truncated)" : ""}`),
      h("pre", { class: "code body-text" }, text.slice(0, at), h("mark", { id: id ? `json-error-${id}` : null }, text.slice(at, at + 1) || " "), text.slice(at + 1)),
    ];
  }
}

function formView(text) {
  const fields = [...new URLSearchParams(text)];
  if (!fields.length) return h("p", { class: "empty" }, "No fields.");
  return kvTable(fields, "Field", "Value", "body-form");
}

function imageView(bytes, mime, blobs) {
  const url = URL.createObjectURL(new Blob([bytes], { type: mime }));
  blobs.push(url);
  const note = h("p", { class: "hint", hidden: true }, "The image cannot be shown (cut short, or not what its type says).");
  const img = h("img", { class: "body-image", src: url, alt: `The body (${mime})` });
  img.addEventListener("error", () => { img.hidden = true; note.hidden = false; });
  return [img, note];
}

/** Offset, hex and ASCII of the first HEX_BYTES bytes, 16 a line. */
function hexDump(bytes) {
  const n = Math.min(bytes.length, HEX_BYTES);
  const lines = [];
  for (let off = 0; off < n; off += 16) {
    const row = bytes.subarray(off, Math.min(off + 16, n));
    const hex = [...row].map((b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = [...row].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${off.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  |${ascii}|`);
  }
  return [
    h("pre", { class: "code hexdump" }, lines.join("\n")),
    bytes.length > n ? h("p", { class: "hint" }, `The first ${integer.format(n)} of ${integer.format(bytes.length)} bytes kept.`) : null,
  ];
}

function kvTable(pairs, left, right, cls) {
  if (!pairs.length) return h("p", { class: "empty" }, "None.");
  return h("div", { class: "table-wrap kv-wrap" }, h("table", { class: `kv ${cls}` },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, left), h("th", { scope: "col" }, right))),
    h("tbody", {}, pairs.map(([k, v]) => h("tr", {}, h("td", { class: "mono kv-name" }, k), h("td", { class: "mono" }, v))))));
}

/* ------------------------------------------------------------------ copy as curl */

/** Headers curl sets itself, or that belong to one connection: left out of the command. */
const CURL_SKIP = new Set(["host", "content-length", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"]);

/** A word for a POSIX shell: in single quotes, each ' written as '\''. */
const shq = (s) => `'${String(s).replace(/'/g, "'\\''")}'`;

/** "https" when an https URL of the app (and no http one) has the Host's name and port; "http" otherwise. */
function schemeFor(host, urls) {
  const [, name = "", port = ""] = /^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/.exec(host.toLowerCase()) ?? [];
  const matches = (u, scheme) => {
    const m = /^(https?):\/\/(\[[^\]]*\]|[^:/]*)(?::(\d+))?\//i.exec(u);
    if (!m || m[1].toLowerCase() !== scheme) return false;
    const def = scheme === "https" ? "443" : "80";
    const pattern = m[2].toLowerCase();
    const nameOk = pattern.startsWith("*.") ? name.endsWith(pattern.slice(1)) : pattern === name;
    return nameOk && (m[3] || def) === (port || def);
  };
  return urls.some((u) => matches(u, "https")) && !urls.some((u) => matches(u, "http")) ? "https" : "http";
}

/** A curl command line of a captured request against its public URL; masked and hop-by-hop headers are left out. */
function curlCommand(d, urls) {
  const headers = d.request.headers;
  const host = headerValue(headers, "host") ?? "";
  const url = /^https?:\/\//i.test(d.url) ? d.url : `${schemeFor(host, urls)}://${host}${d.url}`;
  const bytes = fromBase64(d.request.body.base64);
  const text = strictText(bytes);
  const lines = [];
  let first = "curl";
  if (/[[\]{}]/.test(url)) first += " --globoff"; // curl would read [] and {} as its URL patterns
  if (d.method === "HEAD") first += " --head";
  else if (!(d.method === "GET" && !bytes.length) && !(d.method === "POST" && bytes.length)) first += ` -X ${shq(d.method)}`;
  lines.push(`${first} ${shq(url)}`);
  for (const [k, v] of headers) {
    if (CURL_SKIP.has(k.toLowerCase()) || v.includes(MASKED)) continue;
    lines.push(`-H ${shq(v === "" ? `${k};` : `${k}: ${v}`)}`); // "Name;" is curl's way to send an empty value
  }
  let pipe = "";
  if (bytes.length && text !== null) lines.push(`--data-binary ${shq(text)}`);
  else if (bytes.length) {
    // Bytes that are not text go through printf's octal escapes, which every POSIX shell knows.
    pipe = `printf '${[...bytes].map((b) => "\\" + b.toString(8).padStart(3, "0")).join("")}' | `;
    lines.push("--data-binary @-");
  }
  return pipe + lines.join(" \\\n  ");
}

/* ------------------------------------------------------------------ the detail view */

/** The detail panel of the inspector page: select(id) opens a request; changed(summaries) refreshes it when it changed. */
function requestDetail(ctx) {
  const el = h("section", { id: "request-detail", class: "request-detail", "aria-labelledby": "request-title", hidden: true });
  const state = { shown: null, token: 0, blobs: [] };
  const revoke = () => { for (const u of state.blobs.splice(0)) URL.revokeObjectURL(u); };
  ctx.page.cleanups.push(revoke);
  const curlBox = h("div", { id: "curl-box", class: "curl-box", hidden: true });
  const compare = h("div", { id: "replay-result", class: "replay-result", hidden: true });
  const actionsError = h("div", { id: "request-error", class: "error", role: "alert" });

  async function select(id, refresh = false) {
    const token = ++state.token;
    if (id == null) {
      state.shown = null;
      revoke();
      el.hidden = true;
      el.replaceChildren();
      return;
    }
    el.hidden = false;
    if (!refresh) {
      revoke();
      for (const box of [curlBox, compare]) (box.hidden = true, box.replaceChildren());
      actionsError.replaceChildren();
      fill(el, h("h2", { id: "request-title" }, `Request #${id}`), h("p", { class: "loading" }, "Loading…"));
    }
    try {
      const d = await api("GET", `${ctx.path}/${id}`);
      if (token === state.token && ctx.page.alive) render(d);
    } catch (err) {
      if (token === state.token && ctx.page.alive) fill(el, h("h2", { id: "request-title" }, `Request #${id}`), errorBox(err));
    }
  }

  function render(d) {
    state.shown = d;
    const fact = (label, value) => (value == null || value === "" ? null : h("div", {}, h("dt", {}, label), h("dd", {}, value)));
    const ws = d.websocket;
    const replayOf = d.replayOf !== null ? h("a", { href: inspectHref(ctx.group, ctx.app, d.replayOf) }, `#${d.replayOf}`) : null;
    const replayBtn = h("button", { id: "replay", type: "button", class: "primary", onclick: () => replay(null, replayBtn) }, "Replay");
    const editBtn = h("button", { id: "edit-replay", type: "button", onclick: () => editDialog() }, "Edit and replay");
    const curlBtn = h("button", { id: "copy-curl", type: "button", onclick: () => showCurl() }, "Copy as curl");
    fill(el,
      h("div", { class: "section-head" }, h("h2", { id: "request-title" }, `Request #${d.id}`), statusBadge(d),
        h("a", { class: "close-detail", href: inspectHref(ctx.group, ctx.app, null) }, "Close")),
      h("p", { id: "request-line", class: "request-line mono" }, `${d.method} ${d.url} ${d.httpVersion}`),
      d.status !== null ? h("p", { id: "status-line", class: "status-line mono" }, `${d.status} ${d.response.reason}`) : null,
      d.error ? h("p", { class: "error" }, `Failed: ${d.error}`) : null,
      h("dl", { class: "facts request-facts" },
        fact("Time", localTime(d.at)), fact("State", d.state),
        fact("Response head after", formatMs(d.ttfbMs)), fact("Total", formatMs(d.totalMs)),
        fact("User address", h("span", { class: "mono" }, d.userAddr || "—")),
        fact("Connection", d.connection ? `#${d.connection}` : "— (a replay)"),
        fact("Replay of", replayOf),
        fact("Request body", formatBytes(d.requestBytes)), fact("Response body", formatBytes(d.responseBytes)),
        ws ? fact("WebSocket from the user", `${integer.format(ws.framesIn)} frames, ${formatBytes(ws.bytesIn)}`) : null,
        ws ? fact("WebSocket from the app", `${integer.format(ws.framesOut)} frames, ${formatBytes(ws.bytesOut)}`) : null),
      h("div", { class: "actions" }, replayBtn, editBtn, curlBtn),
      actionsError, curlBox, compare,
      h("div", { class: "exchange" },
        h("section", { class: "exchange-part", "aria-label": "Request" },
          h("h3", {}, "Request headers"), kvTable(d.request.headers, "Name", "Value", "request-headers"),
          h("h3", {}, "Request body"), bodyView(d.request.body, d.request.headers, state.blobs, `req-${d.id}`)),
        h("section", { class: "exchange-part", "aria-label": "Response" },
          h("h3", {}, "Response headers"), d.status === null ? h("p", { class: "empty" }, "No response yet.") : kvTable(d.response.headers, "Name", "Value", "response-headers"),
          h("h3", {}, "Response body"), d.status === null ? h("p", { class: "empty" }, "—") : bodyView(d.response.body, d.response.headers, state.blobs, `res-${d.id}`))));
  }

  /** Sends the shown request again (edits: null as captured) and shows the new exchange beside it. */
  async function replay(edits, button) {
    const original = state.shown;
    if (button) button.disabled = true;
    actionsError.replaceChildren();
    try {
      const res = await api("POST", `${ctx.path}/${original.id}/replay`, edits ?? {});
      if (!ctx.page.alive) return;
      const { httpVersion, request, response, ...summary } = res;
      ctx.merge([summary]); // in the list at once, not at the feed's next event
      if (state.shown?.id === original.id) showCompare(original, res);
    } catch (err) {
      if (button) showError(actionsError, err);
      else throw err; // the edit dialog shows it
    } finally {
      if (button) button.disabled = false;
    }
  }

  function showCompare(original, replayed) {
    const card = (label, d, id) => h("article", { id, class: "exchange-card" },
      h("h3", {}, `${label} `, h("a", { href: inspectHref(ctx.group, ctx.app, d.id) }, `#${d.id}`), " ", statusBadge(d)),
      h("p", { class: "request-line mono" }, `${d.method} ${d.url}`),
      h("p", { class: "status-line mono" }, d.status !== null ? `${d.status} ${d.response.reason} · ${formatMs(d.totalMs)}` : d.error ?? d.state),
      h("h4", {}, "Response headers"), kvTable(d.response.headers, "Name", "Value", "response-headers"),
      h("h4", {}, "Response body"), bodyView(d.response.body, d.response.headers, state.blobs, null));
    fill(compare, h("h3", { class: "compare-title" }, "Replayed"), h("div", { class: "compare" }, card("Original", original, "compare-original"), card("Replay", replayed, "compare-replay")));
    compare.hidden = false;
    compare.scrollIntoView({ block: "nearest" });
  }

  function editDialog() {
    const d = state.shown;
    const bytes = fromBase64(d.request.body.base64);
    const text = new TextDecoder().decode(bytes);
    const binary = bytes.length > 0 && strictText(bytes) === null;
    // Host stays (the request needs it); framing ones go (the server sets them), and masked ones (never kept).
    const headers = d.request.headers.filter(([k, v]) => (k.toLowerCase() === "host" || !CURL_SKIP.has(k.toLowerCase())) && !v.includes(MASKED));
    const f = {
      method: h("input", { id: "replay-method", type: "text", value: d.method, list: "replay-methods", required: true, autocomplete: "off", spellcheck: "false" }),
      path: h("input", { id: "replay-path", type: "text", value: d.url, required: true, autocomplete: "off", spellcheck: "false" }),
      headers: h("textarea", { id: "replay-headers", rows: Math.min(12, headers.length + 2), spellcheck: "false", class: "mono" }),
      body: h("textarea", { id: "replay-body", rows: 8, spellcheck: "false", class: "mono" }),
    };
    f.headers.value = headers.map(([k, v]) => `${k}: ${v}`).join("\n");
    f.body.value = text;
    const field = (id, label, input, hint) => h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("p", { class: "hint" }, hint) : null);
    const bodyHint = d.request.body.truncated
      ? `The captured body was cut at ${integer.format(bytes.length)} of ${integer.format(d.request.body.size)} bytes: what is here is sent.`
      : binary ? "The captured body is not text: left as it is, the captured bytes are sent; edited, the text is sent (UTF-8)." : "Sent as UTF-8; Content-Length is set from it.";
    openDialog({
      id: "replay-dialog",
      title: `Edit and replay #${d.id}`,
      submitLabel: "Replay",
      body: [
        h("div", { class: "form-grid replay-grid" }, field("replay-method", "Method", f.method), field("replay-path", "Path", f.path)),
        h("datalist", { id: "replay-methods" }, COMMON_METHODS.map((m) => h("option", { value: m }))),
        field("replay-headers", "Headers", f.headers, "One “Name: value” a line. Masked headers are left out (their values were never kept); framing headers are set by the server."),
        field("replay-body", "Body", f.body, bodyHint),
      ],
      onSubmit: async () => {
        const edits = { method: f.method.value.trim(), path: f.path.value.trim(), headers: parseHeaderLines(f.headers.value) };
        // Untouched and whole, the captured bytes go as they are (exact even when they are not text).
        if (f.body.value !== text || d.request.body.truncated) edits.bodyBase64 = toBase64(new TextEncoder().encode(f.body.value));
        await replay(edits, null);
      },
    });
    f.path.focus();
  }

  function showCurl() {
    const cmd = curlCommand(state.shown, ctx.urls);
    const area = h("textarea", { id: "curl-command", class: "mono", readonly: true, rows: Math.min(14, cmd.split("\n").length + 1), spellcheck: "false" });
    area.value = cmd;
    const status = h("p", { id: "curl-status", class: "copy-status", role: "status" });
    const masked = state.shown.request.headers.some(([, v]) => v.includes(MASKED));
    fill(curlBox,
      h("label", { for: "curl-command" }, "curl command"), area,
      masked ? h("p", { class: "hint" }, "Masked headers are left out: add them yourself if the app needs them.") : null,
      state.shown.request.body.truncated ? h("p", { class: "truncated" }, "The body was truncated: the command sends only the part kept.") : null,
      status);
    curlBox.hidden = false;
    copyText(cmd, area, status);
  }

  return {
    el,
    select: (id) => select(id),
    /** Summaries that began or changed: the open request is read again when it is one of them and changed. */
    changed(summaries) {
      const d = state.shown;
      const s = d && summaries.find((x) => x.id === d.id);
      if (s && (s.state !== d.state || s.status !== d.status || s.totalMs !== d.totalMs)) select(d.id, true);
    },
  };
}

/** "Name: value" lines into [name, value] pairs; blank lines are skipped, anything else is an error. */
function parseHeaderLines(text) {
  const out = [];
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (!line) continue;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new ApiError(0, `Headers, line ${i + 1}: “${line.slice(0, 60)}” is not “Name: value”.`);
    out.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
  }
  return out;
}

/** Copies text to the clipboard; where the browser will not, selects it in `area` for Ctrl+C. */
async function copyText(text, area, statusEl) {
  try {
    await navigator.clipboard.writeText(text);
    statusEl.textContent = "Copied to the clipboard.";
  } catch {
    area.focus();
    area.select();
    statusEl.textContent = "Could not copy automatically: the command is selected, press Ctrl+C (⌘C).";
  }
}
