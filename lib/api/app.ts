/**
 * The HTTP API (Hono): health, and group registration and management.
 * Bodies are valibot schemas; every client mistake gets a 4xx that names it, written in one place (`onError`).
 */
import { Hono } from "hono";
import type { Hub } from "../server/hub.ts";
import { log } from "../log.ts";
import { createAuth, type ApiEnv, type ApiSecrets } from "./auth.ts";
import { HttpError } from "./errors.ts";
import { groupRoutes, type RegistrationLimits } from "./groups.ts";

export { MAX_BODY_BYTES } from "./body.ts";
export type { RegistrationLimits } from "./groups.ts";

/** Builds the API app over a hub. */
export function createApi(hub: Hub, secrets: ApiSecrets, registration: RegistrationLimits = { maxGroups: 0, maxApps: 0 }): Hono<ApiEnv> {
  const app = new Hono<ApiEnv>();
  const auth = createAuth(hub, secrets);

  app.use("/api/*", auth.authenticate);
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.route("/api/groups", groupRoutes(hub, auth, registration));

  app.notFound((c) => c.json({ error: `no route for ${c.req.method} ${new URL(c.req.url).pathname}` }, 404));
  app.onError(function errorResponse(err, c) {
    if (err instanceof HttpError) return c.json(err.body, err.status, err.headers);
    log.error("API handler failed", { path: new URL(c.req.url).pathname, error: err.message });
    return c.json({ error: "internal error" }, 500);
  });
  return app;
}
