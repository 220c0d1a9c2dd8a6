/**
 * What an operator does to a running group beyond its registration: kick its
 * session, enable or disable it, list and cut live connections, read its
 * recent events and its traffic history. The dashboard calls these; so can
 * anyone with curl (nothing is dashboard-only).
 */
import { Hono } from "hono";
import type { Hub } from "../server/hub.ts";
import { log } from "../log.ts";
import { RANGES, type HistoryRange } from "../metrics/history.ts";
import type { ApiEnv, Auth } from "./auth.ts";
import { HttpError } from "./errors.ts";

/** Builds the routes of /api/groups/:name/… over a hub. */
export function operationRoutes(hub: Hub, auth: Auth): Hono<ApiEnv> {
  const ops = new Hono<ApiEnv>();
  const by = (role: string | null) => (role === "owner" ? "the group's owner" : "the administrator");

  function existing(name: string) {
    const g = hub.registry.get(name);
    if (!g) throw new HttpError(404, { error: `group "${name}" does not exist` });
    return g;
  }

  ops.post("/:name/kick", auth.requireGroup, function kick(c) {
    const name = existing(c.req.param("name")).name;
    const addr = hub.session(name)?.clientAddr;
    if (addr === undefined) throw new HttpError(409, { error: `group "${name}" is offline: there is no session to end` });
    // Recorded before the session ends, so the list reads "kicked" and then "offline".
    hub.events.add(name, { kind: "kicked", message: `session of ${addr} ended by ${by(c.get("role"))}` });
    hub.kick(name);
    log.info("session kicked", { group: name, client: addr, by: c.get("role") });
    return c.body(null, 204);
  });

  for (const enable of [true, false]) {
    ops.post(`/:name/${enable ? "enable" : "disable"}`, auth.requireAdmin, async function setEnabled(c) {
      const name = existing(c.req.param("name")).name;
      const g = await hub.store.setDisabled(name, !enable);
      if (!g) throw new HttpError(404, { error: `group "${name}" does not exist` });
      log.info(enable ? "group enabled" : "group disabled", { group: name });
      hub.events.add(name, { kind: enable ? "enabled" : "disabled", message: enable ? "enabled by the administrator" : "disabled by the administrator: its client may not log in" });
      return c.json(hub.view(g));
    });
  }

  ops.get("/:name/connections", auth.requireGroup, function connections(c) {
    return c.json({ connections: hub.connections(existing(c.req.param("name")).name) });
  });

  ops.delete("/:name/connections/:id", auth.requireGroup, function cutConnection(c) {
    const name = existing(c.req.param("name")).name;
    const id = c.req.param("id");
    if (!hub.users.cutOne(name, id)) throw new HttpError(404, { error: `group "${name}" has no live connection ${id.slice(0, 40)}` });
    log.info("user connection cut", { group: name, id, by: c.get("role") });
    return c.body(null, 204);
  });

  ops.get("/:name/events", auth.requireGroup, function events(c) {
    return c.json({ events: hub.events.of(existing(c.req.param("name")).name) });
  });

  ops.get("/:name/history", auth.requireGroup, function history(c) {
    const name = existing(c.req.param("name")).name;
    const range = c.req.query("range") ?? "1h";
    if (!(range in RANGES)) throw new HttpError(400, { error: `range must be one of ${Object.keys(RANGES).join(", ")}, not "${range.slice(0, 20)}"`, issues: [{ path: "range", message: "unknown range" }] });
    return c.json(hub.history.series(name, range as HistoryRange));
  });

  const notAllowed = (allow: string) =>
    function methodNotAllowed(c: { req: { method: string } }): never {
      throw new HttpError(405, { error: `${c.req.method} is not allowed here; use ${allow}` }, { Allow: allow });
    };
  for (const path of ["kick", "enable", "disable"]) ops.all(`/:name/${path}`, notAllowed("POST"));
  for (const path of ["connections", "events", "history"]) ops.all(`/:name/${path}`, notAllowed("GET"));
  ops.all("/:name/connections/:id", notAllowed("DELETE"));
  return ops;
}
