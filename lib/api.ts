/**
 * The HTTP API (Hono): health, and group registration and management.
 * Bodies are valibot schemas; every client mistake gets a 4xx that names it.
 */
import { Hono, type Context } from "hono";
import * as v from "valibot";
import type { Server } from "bun";
import { GroupLimits, MaxAppsSchema, NameSchema, PortSpecSchema, ServerAppSchema, TokenSchema } from "./config/schema.ts";
import { issueKey } from "./config/load.ts";
import { PortSet } from "./ports.ts";
import { generateToken, proofEquals } from "../protocol.ts";
import type { Hub } from "./hub.ts";
import { log } from "./log.ts";
import type { GroupRecord, GroupSource, RegistryError } from "./registry.ts";

/** Largest request body accepted; a group with hundreds of apps fits easily. */
export const MAX_BODY_BYTES = 256 * 1024;

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
  allowPorts: v.optional(v.nullable(PortSpecSchema)),
});
/** Body of POST /api/groups/:name/token (may be empty): the new token, or none to have one generated. */
export const NewTokenBody = v.strictObject({ token: v.optional(TokenSchema) });

function sameSecret(given: string, expected: string | undefined): boolean {
  if (!expected) return false;
  return proofEquals(Buffer.from(given), Buffer.from(expected));
}

/** What a group created with the registration token may have (server.toml's registration* keys). */
export interface RegistrationLimits {
  /** Most groups the token may create; 0: no limit. */
  readonly maxGroups: number;
  /** Most apps in each; 0: no limit. */
  readonly maxApps: number;
  /** Their ports, within the server's allowPorts; absent: allowPorts. */
  readonly allowPorts?: string;
}

/** Builds the API app over a hub. */
export function createApi(hub: Hub, secrets: { adminToken: string; registrationToken?: string }, registration: RegistrationLimits = { maxGroups: 0, maxApps: 0 }): Hono {
  const app = new Hono();
  const registry = hub.registry;

  /** Which role the bearer token grants, if any. */
  function role(c: Context): "admin" | "register" | null {
    const h = c.req.header("authorization") ?? "";
    const m = /^Bearer\s+(\S+)$/i.exec(h);
    if (!m) return null;
    if (sameSecret(m[1]!, secrets.adminToken)) return "admin";
    if (sameSecret(m[1]!, secrets.registrationToken)) return "register";
    return null;
  }
  const unauthorized = (c: Context) => {
    // A wrong token counts toward the lockout; a missing one, or a valid one without the rights, is not a failed login.
    if (c.req.header("authorization") && role(c) === null) hub.guard.fail(clientIp(c), "api");
    return c.json({ error: "missing or invalid bearer token" }, 401, { "WWW-Authenticate": "Bearer" });
  };

  /** The caller's address; "" when there is no socket (app.request in tests). */
  function clientIp(c: Context): string {
    // Bun passes its server to Hono's fetch as the environment. Asked directly rather than
    // through hono/bun, whose import adds about 279 KiB to the heap (bench/optimisations.md).
    const server = c.env as Server<unknown> | undefined;
    try {
      return server?.requestIP?.(c.req.raw)?.address ?? "";
    } catch {
      return "";
    }
  }

  app.use("/api/*", async (c, next) => {
    if (hub.guard.blocked(clientIp(c))) return c.json({ error: "too many failed logins from this address; try again later" }, 429);
    await next();
  });

  /** Parses and checks a JSON body; `emptyAs` stands for an empty one where a route allows it. */
  async function body<S extends v.GenericSchema>(c: Context, schema: S, emptyAs?: unknown): Promise<{ ok: true; value: v.InferOutput<S> } | { ok: false; res: Response }> {
    const text = await readCapped(c.req.raw, MAX_BODY_BYTES);
    if (text === null) return { ok: false, res: c.json({ error: `body larger than ${MAX_BODY_BYTES} bytes` }, 413) };
    let data: unknown;
    try {
      data = emptyAs !== undefined && text.trim() === "" ? emptyAs : JSON.parse(text);
    } catch {
      return { ok: false, res: c.json({ error: "body is not valid JSON" }, 400) };
    }
    const res = v.safeParse(schema, data);
    if (res.success) return { ok: true, value: res.output };
    const issues = res.issues.map((i) => ({ path: issueKey(i) || "(body)", message: i.expected === "never" ? "unknown key" : i.received === "undefined" ? "is required" : i.message }));
    return { ok: false, res: c.json({ error: "invalid request body", issues }, 400) };
  }

  function registryError(c: Context, e: RegistryError): Response {
    const status = e.code === "port_not_allowed" || e.code === "too_many_apps" ? 400 : e.code === "not_found" ? 404 : 409;
    return c.json({ error: e.message, issues: e.path ? [{ path: e.path, message: e.message }] : undefined }, status);
  }

  const registrationPorts = registration.allowPorts ? (PortSet.parse(registration.allowPorts) as PortSet) : null;
  /** Why the registration token may not create this group (a limit of server.toml, named), or null. */
  function registrationRefusal(g: v.InferOutput<typeof CreateGroupBody>): { path: string; message: string } | null {
    if (g.maxApps !== 0 || g.allowPorts !== undefined) return { path: g.maxApps !== 0 ? "maxApps" : "allowPorts", message: "only the admin token may set maxApps or allowPorts; groups made with the registration token get registrationMaxApps and registrationAllowPorts" };
    if (registration.maxGroups > 0 && registry.countBy("client") >= registration.maxGroups) {
      return { path: "name", message: `the registration token has created ${registration.maxGroups} groups, the most registrationMaxGroups allows; ask the administrator` };
    }
    if (registration.maxApps > 0 && g.apps.length > registration.maxApps) {
      return { path: "apps", message: `a group made with the registration token may have at most ${registration.maxApps} apps (registrationMaxApps), not ${g.apps.length}` };
    }
    for (const [i, a] of g.apps.entries()) {
      if (registrationPorts && a.remotePort !== 0 && !registrationPorts.has(a.remotePort)) {
        return { path: `apps[${i}].remotePort`, message: `port ${a.remotePort} is outside registrationAllowPorts (${registration.allowPorts})` };
      }
    }
    return null;
  }

  const publicApps = (g: GroupRecord) => g.apps.map((a) => ({ name: a.name, type: a.type, remotePort: a.remotePort }));

  app.get("/healthz", (c) => c.json({ status: "ok" }));

  app.post("/api/groups", async (c) => {
    const who = role(c);
    if (!who) return unauthorized(c);
    const b = await body(c, CreateGroupBody);
    if (!b.ok) return b.res;
    const token = b.value.token ?? generateToken();
    const source: GroupSource = who === "admin" ? "api" : "client";
    let limits = { maxApps: b.value.maxApps, allowPorts: b.value.allowPorts };
    if (who === "register") {
      const refused = registrationRefusal(b.value);
      if (refused) return c.json({ error: refused.message, issues: [refused] }, 403);
      limits = { maxApps: registration.maxApps, allowPorts: registration.allowPorts };
    }
    const res = registry.create(b.value.name, token, source, b.value.apps, limits);
    if (!res.ok) return registryError(c, res.error);
    log.info("group registered", { group: res.group.name, by: source, apps: res.group.apps.length });
    // The one response that carries the token: the caller needs it to log in.
    return c.json({ ...hub.view(res.group), token, apps: hub.view(res.group).apps }, 201);
  });

  app.get("/api/groups", (c) => {
    if (role(c) !== "admin") return unauthorized(c);
    return c.json({ groups: registry.list().map((g) => hub.view(g)) });
  });

  app.get("/api/groups/:name", (c) => {
    if (role(c) !== "admin") return unauthorized(c);
    const g = registry.get(c.req.param("name"));
    if (!g) return c.json({ error: `group "${c.req.param("name")}" does not exist` }, 404);
    return c.json(hub.view(g));
  });

  app.put("/api/groups/:name", async (c) => {
    if (role(c) !== "admin") return unauthorized(c);
    const name = c.req.param("name");
    if (!registry.get(name)) return c.json({ error: `group "${name}" does not exist` }, 404);
    const b = await body(c, UpdateGroupBody);
    if (!b.ok) return b.res;
    // Looked up again once the body has been read: the group may have been deleted meanwhile.
    const old = registry.get(name);
    if (!old) return c.json({ error: `group "${name}" does not exist` }, 404);
    const limits =
      b.value.maxApps === undefined && b.value.allowPorts === undefined
        ? undefined
        : { maxApps: b.value.maxApps ?? old.maxApps, allowPorts: b.value.allowPorts === undefined ? (old.allowPorts ?? undefined) : (b.value.allowPorts ?? undefined) };
    const res = registry.update(name, b.value.apps, undefined, limits);
    if (!res.ok) return registryError(c, res.error);
    await hub.groupChanged(res.group);
    log.info("group updated", { group: name, apps: publicApps(res.group).length });
    return c.json(hub.view(res.group));
  });

  app.post("/api/groups/:name/token", async (c) => {
    if (role(c) !== "admin") return unauthorized(c);
    const name = c.req.param("name");
    if (!registry.get(name)) return c.json({ error: `group "${name}" does not exist` }, 404);
    const b = await body(c, NewTokenBody, {});
    if (!b.ok) return b.res;
    // Looked up again once the body has been read: the group may have been deleted meanwhile.
    const g = registry.get(name);
    if (!g) return c.json({ error: `group "${name}" does not exist` }, 404);
    // server.toml would put its own token back at the next start.
    if (g.source === "config") return c.json({ error: `group "${name}" comes from server.toml: change its token there and restart the server` }, 409);
    const token = b.value.token ?? generateToken();
    if (!registry.setToken(name, token)) return c.json({ error: `group "${name}" does not exist` }, 404);
    // A new token revokes the old one: whoever holds it, online now, is cut off with its streams.
    hub.tokenChanged(name);
    log.info("group token changed", { group: name });
    // The one response that carries the new token.
    return c.json({ name, token });
  });

  app.delete("/api/groups/:name", (c) => {
    if (role(c) !== "admin") return unauthorized(c);
    const name = c.req.param("name");
    if (!registry.delete(name)) return c.json({ error: `group "${name}" does not exist` }, 404);
    hub.groupDeleted(name);
    log.info("group deleted", { group: name });
    return c.body(null, 204);
  });

  app.notFound((c) => c.json({ error: `no route for ${c.req.method} ${new URL(c.req.url).pathname}` }, 404));
  app.onError((err, c) => {
    log.error("API handler failed", { path: new URL(c.req.url).pathname, error: err.message });
    return c.json({ error: "internal error" }, 500);
  });
  return app;
}

/**
 * A request body as text, or null when it is larger than `max` bytes: refused by its
 * Content-Length before anything is read, or once the stream passes `max`, so an
 * oversized body costs at most `max` bytes of memory and always gets the API's own 413.
 */
async function readCapped(req: Request, max: number): Promise<string | null> {
  const declared = Number(req.headers.get("content-length") ?? "0");
  if (declared > max) return null;
  if (!req.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = req.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > max) {
      await reader.cancel().catch(() => {});
      return null;
    }
    chunks.push(value);
  }
  return new TextDecoder().decode(Buffer.concat(chunks));
}
