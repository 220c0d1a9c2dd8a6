/**
 * The HTTP API (Hono): health, and group registration and management.
 * Bodies are valibot schemas; every client mistake gets a 4xx that names it, written in one place (`onError`).
 */
import { Hono } from "hono";
import type { Hub } from "../server/hub.ts";
import { log } from "../log.ts";
import { createAuth, type ApiEnv, type ApiSecrets } from "./auth.ts";
import { HttpError } from "./errors.ts";
import { WarrenError } from "../errors.ts";
import { RegistryError } from "../registry/types.ts";
import { groupRoutes, type RegistrationLimits } from "./groups.ts";
import { clientIp } from "./auth.ts";
import { SignIns, signinRoutes } from "./signin.ts";
import { liveRoutes } from "./live.ts";
import { operationRoutes } from "./operations.ts";
import { inspectRoutes } from "./inspect.ts";
import { dashboardRoutes } from "../dashboard/page.ts";

/** How the API is served. */
export interface ApiOptions {
  /** Cookies get the Secure flag (the API is served over TLS: apiTls). */
  readonly secureCookies?: boolean;
  /** Time between two live-feed updates (LIVE_INTERVAL_MS). */
  readonly liveIntervalMs?: number;
  /** Serve the dashboard at / (default true). */
  readonly dashboard?: boolean;
}

export { MAX_BODY_BYTES } from "./body.ts";
export type { RegistrationLimits } from "./groups.ts";

/** Builds the API app over a hub. */
export function createApi(
  hub: Hub,
  secrets: ApiSecrets,
  registration: RegistrationLimits = { maxGroups: 0, maxApps: 0 },
  reload?: () => Promise<{ needsRestart: string[] }>,
  options: ApiOptions = {},
): Hono<ApiEnv> {
  const app = new Hono<ApiEnv>();
  const signins = new SignIns();
  const auth = createAuth(hub, secrets, signins);

  // Anything that changes something must come from this origin's own pages (or from no page at all: curl).
  app.use("/api/*", auth.sameOrigin, auth.authenticate);
  app.use("/ui/*", auth.sameOrigin);
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.route("/ui", signinRoutes(hub, secrets, signins, options.secureCookies ?? false, clientIp));
  app.route("/api", liveRoutes(hub, auth, signins, options.liveIntervalMs));
  app.route("/api/groups", groupRoutes(hub, auth, registration, signins));
  app.route("/api/groups", operationRoutes(hub, auth));
  app.route("/api/groups", inspectRoutes(hub, auth));
  if (options.dashboard !== false) app.route("/", dashboardRoutes());
  // Prometheus: the admin or the metrics token as a bearer token (a scraper's `authorization`).
  app.get("/metrics", auth.authenticate, auth.requireMetrics, async function metrics(c) {
    const { exposition } = await import("../metrics/prometheus.ts");
    return c.text(await exposition(hub.metricsSource()), 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
  });
  app.post("/api/reload", auth.requireAdmin, async function reloadConfig(c) {
    if (!reload) throw new HttpError(409, { error: "this server cannot reload its configuration" });
    try {
      const res = await reload();
      log.info("configuration reloaded", { by: "api", needsRestart: res.needsRestart.join(", ") || "none" });
      return c.json({ reloaded: true, needsRestart: res.needsRestart });
    } catch (err) {
      if (!(err instanceof WarrenError)) throw err;
      log.error("reload failed", { by: "api", error: err.message });
      // A file with a mistake is the caller's to fix (400); no file at all is a conflict with how the server was started.
      throw new HttpError(err.code === "no_config_file" ? 409 : 400, { error: err.message });
    }
  });

  app.notFound((c) => c.json({ error: `no route for ${c.req.method} ${new URL(c.req.url).pathname}` }, 404));
  app.onError(function errorResponse(err, c) {
    if (err instanceof HttpError) return c.json(err.body, err.status, err.headers);
    // The registry's database (PostgreSQL) is away: a change cannot be made now, and says so.
    if (err instanceof RegistryError && err.code === "unavailable") return c.json({ error: err.message }, 503, { "retry-after": "5" });
    log.error("API handler failed", { path: new URL(c.req.url).pathname, error: err.message });
    return c.json({ error: "internal error" }, 500);
  });
  return app;
}
