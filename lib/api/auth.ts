/** Who is calling: the login lockout, the role the bearer token grants, and guards that routes put in front of themselves. */
import type { Context, MiddlewareHandler } from "hono";
import type { Server } from "bun";
import { sameSecret } from "../secrets.ts";
import type { Hub } from "../server/hub.ts";
import { HttpError } from "./errors.ts";
import { sessionId, type SignIns } from "./signin.ts";

/**
 * What the caller may do: a bearer token's rights, or a dashboard session's (admin, or the
 * owner of one group, who sees and acts on that group only); null: no token, or a wrong one.
 */
export type Role = "admin" | "register" | "metrics" | "owner" | null;

/** The Hono environment of the API: the caller's role (and an owner's group), set by `authenticate` before any route runs. */
export interface ApiEnv {
  Variables: { role: Role; group: string | null; signin: string | null };
}

/** The two tokens the API accepts; without a registration token only the admin may create groups. */
export interface ApiSecrets {
  readonly adminToken: string;
  readonly registrationToken?: string;
  /** May only read GET /metrics. */
  readonly metricsToken?: string;
}

/** The middleware of `createAuth`: one that identifies the caller, and guards that refuse it. */
export interface Auth {
  /** Refuses a locked-out address with 429, then stores the caller's role. */
  readonly authenticate: MiddlewareHandler<ApiEnv>;
  /** Lets through the admin token only. */
  readonly requireAdmin: MiddlewareHandler<ApiEnv>;
  /** Lets through the admin or the metrics token. */
  readonly requireMetrics: MiddlewareHandler<ApiEnv>;
  /** Lets through the admin or the registration token. */
  readonly requireToken: MiddlewareHandler<ApiEnv>;
  /** Lets through the admin, and the owner of the group named in the path (others get the 404 of a group that does not exist). */
  readonly requireGroup: MiddlewareHandler<ApiEnv>;
  /** Refuses a request that changes something from a page of another origin (a cross-site form or script). */
  readonly sameOrigin: MiddlewareHandler<ApiEnv>;
}

/** Methods that change nothing: they need no CSRF token. */
const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

/** The caller's address; "" when there is no socket (app.request in tests). */
export function clientIp(c: Context): string {
  // Bun passes its server to Hono's fetch as the environment. Asked directly rather than
  // through hono/bun, whose import adds about 279 KiB to the heap (bench/optimisations.md).
  const server = c.env as Server<unknown> | undefined;
  try {
    return server?.requestIP?.(c.req.raw)?.address ?? "";
  } catch {
    return "";
  }
}

/** Builds the API's authentication over a hub's login lockout and the server's tokens. */
export function createAuth(hub: Hub, secrets: ApiSecrets, signins: SignIns): Auth {
  function roleOf(c: Context): Role {
    const m = /^Bearer\s+(\S+)$/i.exec(c.req.header("authorization") ?? "");
    if (!m) return null;
    if (sameSecret(m[1]!, secrets.adminToken)) return "admin";
    if (sameSecret(m[1]!, secrets.registrationToken)) return "register";
    if (sameSecret(m[1]!, secrets.metricsToken)) return "metrics";
    return null;
  }

  function unauthorized(c: Context<ApiEnv>): HttpError {
    // A wrong token counts toward the lockout; a missing one, or a valid one without the rights, is not a failed login.
    // Counted here rather than in `authenticate`, so a wrong token on a route that needs none (or none that exists) is not counted.
    if (c.req.header("authorization") && c.get("role") === null) hub.guard.fail(clientIp(c), "api");
    return new HttpError(401, { error: "missing or invalid bearer token" }, { "WWW-Authenticate": "Bearer" });
  }

  return {
    authenticate: async function authenticate(c, next) {
      if (hub.guard.blocked(clientIp(c))) throw new HttpError(429, { error: "too many failed logins from this address; try again later" });
      c.set("group", null);
      c.set("signin", null);
      if (c.req.header("authorization") !== undefined) c.set("role", roleOf(c));
      else {
        // No bearer token: a dashboard session, if the cookie names a live one.
        const id = sessionId(c);
        const s = signins.get(id);
        c.set("role", s?.role ?? null);
        if (s) {
          c.set("group", s.group);
          c.set("signin", id!);
          // A cookie rides along with any request the browser makes, even one a page of another site
          // triggers: a change must also show the token only the dashboard's own pages can read.
          if (!SAFE.has(c.req.method) && !sameSecret(c.req.header("x-csrf-token") ?? "", s.csrf)) {
            throw new HttpError(403, { error: "missing or wrong X-CSRF-Token header (the dashboard sends it; other pages cannot)" });
          }
        }
      }
      await next();
    },
    sameOrigin: async function sameOrigin(c, next) {
      const origin = c.req.header("origin");
      if (!SAFE.has(c.req.method) && origin !== undefined && origin !== "null") {
        let host: string | null = null;
        try {
          host = new URL(origin).host;
        } catch {}
        if (host !== c.req.header("host")) throw new HttpError(403, { error: `cross-origin request from ${origin.slice(0, 100)} refused` });
      } else if (!SAFE.has(c.req.method) && origin === "null") throw new HttpError(403, { error: "cross-origin request from an opaque origin refused" });
      await next();
    },
    requireGroup: async function requireGroup(c, next) {
      const role = c.get("role");
      if (role === "owner") {
        // Another group's name gets the same answer as a name that does not exist: an owner learns nothing of other groups.
        const name = c.req.param("name");
        if (name !== c.get("group")) throw new HttpError(404, { error: `group "${name}" does not exist` });
        return next();
      }
      if (role === "register") throw new HttpError(403, { error: "the registration token may only create groups (POST /api/groups)" });
      if (role === "metrics") throw new HttpError(403, { error: "the metrics token may only read GET /metrics" });
      if (role !== "admin") throw unauthorized(c);
      await next();
    },
    requireAdmin: async function requireAdmin(c, next) {
      // A valid token without the rights is a 403: the caller is known, the action is not theirs.
      if (c.get("role") === "owner") throw new HttpError(403, { error: "only the administrator may do this; a group's owner acts on its own group only" });
      if (c.get("role") === "register") throw new HttpError(403, { error: "the registration token may only create groups (POST /api/groups)" });
      if (c.get("role") === "metrics") throw new HttpError(403, { error: "the metrics token may only read GET /metrics" });
      if (c.get("role") !== "admin") throw unauthorized(c);
      await next();
    },
    requireMetrics: async function requireMetrics(c, next) {
      const role = c.get("role");
      if (role === "owner") throw new HttpError(403, { error: "only the administrator may read the metrics of every group" });
      if (role === "register") throw new HttpError(403, { error: "the registration token may only create groups (POST /api/groups)" });
      if (role !== "admin" && role !== "metrics") throw unauthorized(c);
      await next();
    },
    requireToken: async function requireToken(c, next) {
      if (c.get("role") === "owner") throw new HttpError(403, { error: "only the administrator may create groups" });
      if (c.get("role") === "metrics") throw new HttpError(403, { error: "the metrics token may only read GET /metrics" });
      if (!c.get("role")) throw unauthorized(c);
      await next();
    },
  };
}
