// Warren dashboard: sign-in, routing and start. Part of app.js (the last
// file: it starts the page); see core.js.

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
  if (!session) {
    // On the form already (only the address changed): keep what was typed.
    if (!document.getElementById("signin")) showSignIn();
    return;
  }
  setHeader();
  // #/group/NAME, or an app's inspector: #/group/NAME/app/APP/requests, with /ID for one request.
  const m = /^#\/group\/([^/]+)\/app\/([^/]+)\/requests(?:\/(\d+))?\/?$/.exec(location.hash) ?? /^#\/group\/(.+)$/.exec(location.hash);
  let name = null;
  let app = null;
  if (m) {
    try {
      name = decodeURIComponent(m[1]);
      app = m[2] === undefined ? null : decodeURIComponent(m[2]);
    } catch { name = app = null; /* malformed: as if no group were named */ }
  }
  const show = () => (app !== null ? showInspector(name, app, m[3] === undefined ? null : Number(m[3])) : showGroup(name));
  if (session.role === "owner") {
    // An owner has one group: it is their start page. Another group's page is not found, as the
    // server would answer (for a group that exists or not alike), without asking it.
    if (name === null) {
      history.replaceState(null, "", groupHref(session.group));
      return showGroup(session.group);
    }
    return name === session.group ? show() : showNotFound(name);
  }
  if (name !== null) return show();
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
  // Whoever signs in next starts at their own start page, not at this session's last one.
  history.replaceState(null, "", "#/");
  showSignIn();
});

window.addEventListener("hashchange", route);

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
