/** Who is calling: the login lockout, the role the bearer token grants, and guards that routes put in front of themselves. */
import type { Context, MiddlewareHandler } from "hono";
import type { Server } from "bun";
import { sameSecret } from "../secrets.ts";
import type { Hub } from "../server/hub.ts";
import { HttpError } from "./errors.ts";

/** What the bearer token lets its holder do; null: no token, or one that is neither secret. */
export type Role = "admin" | "register" | "metrics" | null;

/** The Hono environment of the API: the caller's role, set by `authenticate` before any route runs. */
export interface ApiEnv {
  Variables: { role: Role };
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
}

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

/** Builds the API's authentication over a hub's login lockout and the server's tokens. */
export function createAuth(hub: Hub, secrets: ApiSecrets): Auth {
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
      c.set("role", roleOf(c));
      await next();
    },
    requireAdmin: async function requireAdmin(c, next) {
      // A valid token without the rights is a 403: the caller is known, the action is not theirs.
      if (c.get("role") === "register") throw new HttpError(403, { error: "the registration token may only create groups (POST /api/groups)" });
      if (c.get("role") === "metrics") throw new HttpError(403, { error: "the metrics token may only read GET /metrics" });
      if (c.get("role") !== "admin") throw unauthorized(c);
      await next();
    },
    requireMetrics: async function requireMetrics(c, next) {
      const role = c.get("role");
      if (role === "register") throw new HttpError(403, { error: "the registration token may only create groups (POST /api/groups)" });
      if (role !== "admin" && role !== "metrics") throw unauthorized(c);
      await next();
    },
    requireToken: async function requireToken(c, next) {
      if (c.get("role") === "metrics") throw new HttpError(403, { error: "the metrics token may only read GET /metrics" });
      if (!c.get("role")) throw unauthorized(c);
      await next();
    },
  };
}
