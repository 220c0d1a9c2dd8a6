/**
 * The dashboard's data: GET /api/overview (every group in short) and
 * GET /api/live, a server-sent-event feed of the same (or of one group's
 * page) about once a second. Each feed is one loop that writes and then
 * waits: a reader that stops reading holds back its own loop, nothing queues,
 * so a dashboard left open for a day costs the same as one just opened.
 */
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import type { Hub } from "../server/hub.ts";
import type { ApiEnv, Auth } from "./auth.ts";
import { HttpError } from "./errors.ts";
import type { SignIns } from "./signin.ts";

/** Time between two updates of a live feed. */
export const LIVE_INTERVAL_MS = 1000;
/** Most live feeds open at once (dashboards and tabs); one more gets a 503. */
export const MAX_LIVE_FEEDS = 64;
/** Events of a group a group feed carries (the newest). */
export const LIVE_EVENTS = 50;

/** Builds /api/overview and /api/live over a hub. */
export function liveRoutes(hub: Hub, auth: Auth, signins: SignIns, intervalMs = LIVE_INTERVAL_MS): Hono<ApiEnv> {
  const live = new Hono<ApiEnv>();
  let open = 0;

  live.get("/overview", auth.requireAdmin, (c) => c.json(hub.overview()));

  /** What a group feed sends: the page's data in one event. */
  const groupPage = (name: string) => {
    const g = hub.registry.get(name);
    return g ? { group: hub.view(g), connections: hub.connections(name), events: hub.events.of(name, LIVE_EVENTS) } : null;
  };

  live.get("/live", async function feed(c) {
    const name = c.req.query("group");
    // An owner's feed is their own group's page; every other feed is the administrator's.
    if (name === undefined || c.get("role") !== "owner") await auth.requireAdmin(c, async () => {});
    else if (name !== c.get("group")) throw new HttpError(404, { error: `group "${name}" does not exist` });
    if (name !== undefined && !hub.registry.get(name)) throw new HttpError(404, { error: `group "${name}" does not exist` });
    if (open >= MAX_LIVE_FEEDS) throw new HttpError(503, { error: `${MAX_LIVE_FEEDS} live feeds are open already (MAX_LIVE_FEEDS); close a dashboard tab` });
    const signin = c.get("signin");
    open++;
    return streamSSE(c, async (stream) => {
      let aborted = false;
      stream.onAbort(() => void (aborted = true));
      try {
        while (!aborted) {
          // A feed whose session was signed out (or expired, or whose group's token changed) ends.
          if (signin !== null && !signins.get(signin)) break;
          if (name === undefined) await stream.writeSSE({ event: "overview", data: JSON.stringify(hub.overview()) });
          else {
            const page = groupPage(name);
            if (!page) break; // deleted meanwhile
            await stream.writeSSE({ event: "group", data: JSON.stringify(page) });
          }
          await stream.sleep(intervalMs);
        }
      } finally {
        open--;
      }
    });
  });

  live.all("/live", (c) => {
    throw new HttpError(405, { error: `${c.req.method} is not allowed here; use GET` }, { Allow: "GET" });
  });
  return live;
}
