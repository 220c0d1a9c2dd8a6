/** The group routes under /api/groups: registration by either token, management by the admin. */
import { Hono } from "hono";
import * as v from "valibot";
import { BandwidthSchema, GroupLimits, MaxAppsSchema, NameSchema, PortSpecSchema, ServerAppSchema, TokenSchema } from "../config/schema.ts";
import { PortSet } from "../ports.ts";
import { generateToken } from "../secrets.ts";
import type { Hub } from "../server/hub.ts";
import { log } from "../log.ts";
import type { GroupRecord, GroupSource, RegistryError } from "../registry/types.ts";
import type { ApiEnv, Auth } from "./auth.ts";
import { parseBody } from "./body.ts";
import { HttpError } from "./errors.ts";
import type { SignIns } from "./signin.ts";

const appsSchema = v.pipe(
  v.array(ServerAppSchema, "must be an array of apps"),
  v.check((apps) => new Set(apps.map((a) => a.name)).size === apps.length, "app names must be unique"),
);
/** Body of POST /api/groups. */
export const CreateGroupBody = v.strictObject({ name: NameSchema, token: v.optional(TokenSchema), ...GroupLimits, apps: appsSchema });
/** Body of PUT /api/groups/:name: the new app list; limits stay as they were unless given. */
export const UpdateGroupBody = v.strictObject({
  apps: appsSchema,
  maxApps: v.optional(MaxAppsSchema),
  bandwidthLimit: v.optional(v.nullable(BandwidthSchema)),
  allowPorts: v.optional(v.nullable(PortSpecSchema)),
});
/** Body of POST /api/groups/:name/token (may be empty): the new token, or none to have one generated. */
export const NewTokenBody = v.strictObject({ token: v.optional(TokenSchema) });

/** What a group created with the registration token may have (server.toml's registration* keys). */
export interface RegistrationLimits {
  /** Most groups the token may create; 0: no limit. */
  readonly maxGroups: number;
  /** Most apps in each; 0: no limit. */
  readonly maxApps: number;
  /** Their ports, within the server's allowPorts; absent: allowPorts. */
  readonly allowPorts?: string;
}

/** The one answer for a group name that is not (or no longer) registered. */
function noSuchGroup(name: string): HttpError {
  return new HttpError(404, { error: `group "${name}" does not exist` });
}

/** A registry refusal as the client sees it: a limit is the caller's mistake (400), a missing group 404, anything else a conflict. */
function registryRefusal(e: RegistryError): HttpError {
  const status = e.code === "port_not_allowed" || e.code === "too_many_apps" ? 400 : e.code === "not_found" ? 404 : 409;
  return new HttpError(status, { error: e.message, issues: e.path ? [{ path: e.path, message: e.message }] : undefined });
}

/** Builds the routes of /api/groups over a hub; `auth` guards them, `registration` bounds what the registration token may create. */
export function groupRoutes(hub: Hub, auth: Auth, registration: RegistrationLimits, signins: SignIns): Hono<ApiEnv> {
  const groups = new Hono<ApiEnv>();
  // Reads come from the server's view; writes go to the store, whose announcements the sessions act on.
  const registry = hub.registry;
  const store = hub.store;
  const registrationPorts = registration.allowPorts ? (PortSet.parse(registration.allowPorts) as PortSet) : null;

  /** The group called `name`, or a 404. */
  function existing(name: string): GroupRecord {
    const g = registry.get(name);
    if (!g) throw noSuchGroup(name);
    return g;
  }

  /** Why the registration token may not create this group (a limit of server.toml, named), or null. */
  function registrationRefusal(g: v.InferOutput<typeof CreateGroupBody>): { path: string; message: string } | null {
    if (g.maxApps !== 0 || g.allowPorts !== undefined) return { path: g.maxApps !== 0 ? "maxApps" : "allowPorts", message: "only the admin token may set maxApps or allowPorts; groups made with the registration token get registrationMaxApps and registrationAllowPorts" };
    if (g.bandwidthLimit !== undefined) return { path: "bandwidthLimit", message: "only the admin token may set a group's bandwidthLimit" };
    if (registration.maxGroups > 0 && registry.countBy("client") >= registration.maxGroups) {
      return { path: "name", message: `the registration token has created ${registration.maxGroups} groups, the most registrationMaxGroups allows; ask the administrator` };
    }
    if (registration.maxApps > 0 && g.apps.length > registration.maxApps) {
      return { path: "apps", message: `a group made with the registration token may have at most ${registration.maxApps} app${registration.maxApps === 1 ? "" : "s"} (registrationMaxApps), not ${g.apps.length}` };
    }
    for (const [i, a] of g.apps.entries()) {
      if (registrationPorts && a.remotePort !== 0 && !registrationPorts.has(a.remotePort)) {
        return { path: `apps[${i}].remotePort`, message: `port ${a.remotePort} is outside registrationAllowPorts (${registration.allowPorts})` };
      }
    }
    return null;
  }

  groups.post("/", auth.requireToken, async function createGroup(c) {
    const body = await parseBody(c, CreateGroupBody);
    const token = body.token ?? generateToken();
    const who = c.get("role");
    const source: GroupSource = who === "admin" ? "api" : "client";
    let limits: { maxApps: number; allowPorts?: string; bandwidthLimit?: string } = { maxApps: body.maxApps, allowPorts: body.allowPorts, bandwidthLimit: body.bandwidthLimit };
    if (who === "register") {
      const refused = registrationRefusal(body);
      if (refused) throw new HttpError(403, { error: refused.message, issues: [refused] });
      limits = { maxApps: registration.maxApps, allowPorts: registration.allowPorts };
    }
    const res = await store.create(body.name, token, source, body.apps, limits);
    if (!res.ok) throw registryRefusal(res.error);
    log.info("group registered", { group: res.group.name, by: source, apps: res.group.apps.length });
    // The one response that carries the token: the caller needs it to log in.
    return c.json({ ...hub.view(res.group), token, apps: hub.view(res.group).apps }, 201);
  });

  groups.get("/", async function listGroups(c) {
    // An owner sees a list of one: their own group.
    if (c.get("role") === "owner") {
      const own = registry.get(c.get("group")!);
      return c.json({ groups: own ? [hub.view(own)] : [] });
    }
    await auth.requireAdmin(c, async () => {});
    return c.json({ groups: registry.list().map((g) => hub.view(g)) });
  });

  groups.get("/:name", auth.requireGroup, function getGroup(c) {
    return c.json(hub.view(existing(c.req.param("name"))));
  });

  groups.put("/:name", auth.requireGroup, async function updateGroup(c) {
    const name = c.req.param("name");
    const before = existing(name); // before the body is read: a missing group is a 404 whatever the body
    // The API never shows a Basic-auth password, so a client that edits an app sends it back without
    // one: an app that keeps its httpUser keeps its stored password.
    const body = await parseBody(c, UpdateGroupBody, undefined, (data) => {
      const apps = (data as { apps?: unknown } | null)?.apps;
      if (!Array.isArray(apps)) return;
      for (const a of apps) {
        if (!a || typeof a !== "object" || (a as Record<string, unknown>).httpPassword !== undefined) continue;
        const was = before.apps.find((o) => o.name === (a as { name?: unknown }).name);
        if (was?.httpPassword !== undefined && was.httpUser === (a as { httpUser?: unknown }).httpUser) (a as Record<string, unknown>).httpPassword = was.httpPassword;
      }
    });
    // The limits are the administrator's to set: an owner changes apps only.
    const limitKey = (["maxApps", "allowPorts", "bandwidthLimit"] as const).find((k) => body[k] !== undefined);
    if (c.get("role") === "owner" && limitKey) throw new HttpError(403, { error: `only the administrator may change ${limitKey}`, issues: [{ path: limitKey, message: "only the administrator may change it" }] });
    // Looked up again once the body has been read: the group may have been deleted meanwhile.
    const old = existing(name);
    // server.toml would put its own apps back at the next start: change it there, as for its token.
    if (old.source === "config") throw new HttpError(409, { error: `group "${name}" comes from server.toml: change its apps there and restart the server` });
    const limits =
      body.maxApps === undefined && body.allowPorts === undefined && body.bandwidthLimit === undefined
        ? undefined
        : {
            maxApps: body.maxApps ?? old.maxApps,
            allowPorts: body.allowPorts === undefined ? (old.allowPorts ?? undefined) : (body.allowPorts ?? undefined),
            bandwidthLimit: body.bandwidthLimit === undefined ? (old.bandwidthLimit ?? undefined) : (body.bandwidthLimit ?? undefined),
          };
    // Resolves once the online session has applied it: the answer shows the apps as they now are.
    const res = await store.update(name, body.apps, limits);
    if (!res.ok) throw registryRefusal(res.error);
    log.info("group updated", { group: name, apps: res.group.apps.length, by: c.get("role") });
    hub.events.add(name, { kind: "apps_changed", message: `apps changed by the ${c.get("role") === "owner" ? "group's owner" : "administrator"} (${res.group.apps.length} now)` });
    return c.json(hub.view(res.group));
  });

  groups.post("/:name/token", auth.requireGroup, async function newToken(c) {
    const name = c.req.param("name");
    existing(name); // before the body is read: a missing group is a 404 whatever the body
    const body = await parseBody(c, NewTokenBody, {});
    // Looked up again once the body has been read: the group may have been deleted meanwhile.
    const g = existing(name);
    // server.toml would put its own token back at the next start.
    if (g.source === "config") throw new HttpError(409, { error: `group "${name}" comes from server.toml: change its token there and restart the server` });
    const token = body.token ?? generateToken();
    // A new token revokes the old one: whoever holds it, online now, is cut off with its streams (the hub acts on the change).
    if (!(await store.setToken(name, token))) throw noSuchGroup(name);
    log.info("group token changed", { group: name, by: c.get("role") });
    // Dashboard sessions signed in with the old token end too (but the one that asked for the change).
    signins.endGroup(name, c.get("signin") ?? undefined);
    hub.events.add(name, { kind: "token_changed", message: `token changed by the ${c.get("role") === "owner" ? "group's owner" : "administrator"}` });
    // The one response that carries the new token.
    return c.json({ name, token });
  });

  groups.delete("/:name", auth.requireAdmin, async function deleteGroup(c) {
    const name = c.req.param("name");
    if (!(await store.delete(name))) throw noSuchGroup(name);
    signins.endGroup(name);
    log.info("group deleted", { group: name });
    return c.body(null, 204);
  });

  // A known path with a method it does not take: 405 with the methods it does (RFC 9110, 15.5.6).
  const notAllowed = (allow: string) =>
    function methodNotAllowed(c: { req: { method: string } }): never {
      throw new HttpError(405, { error: `${c.req.method} is not allowed here; use ${allow}` }, { Allow: allow });
    };
  groups.all("/", notAllowed("GET, POST"));
  groups.all("/:name", notAllowed("GET, PUT, DELETE"));
  groups.all("/:name/token", notAllowed("POST"));

  return groups;
}
