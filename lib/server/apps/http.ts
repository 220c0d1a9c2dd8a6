/**
 * An HTTP or HTTPS app: no port of its own. While its session serves it, it is
 * bound in the server's vhost router (http/router.ts); connections on the
 * shared ports find it by domain and open streams through it, with the same
 * access lists, limits, counters and live-user bookkeeping as a TCP app.
 */
import { parseBandwidth } from "../../config/schema.ts";
import { AccessList } from "../../guard.ts";
import { chain, type Endpoint } from "../../net/endpoint.ts";
import { Throttle } from "../../net/throttle.ts";
import type { AppRecord } from "../../registry/types.ts";
import type { HttpTarget } from "../http/router.ts";
import type { AppHost, PublicApp } from "./app.ts";

/** Binds the app in the vhost router; a string says why it cannot be served. */
export function openHttp(rec: AppRecord, host: AppHost): PublicApp | string {
  const vhosts = host.settings.vhosts;
  if (!vhosts) return "the server has no vhost ports (vhostHTTPPort, vhostHTTPSPort), so it serves no http or https apps";
  if (rec.type === "http" && !vhosts.httpPort && !vhosts.httpsPort) return "the server has no vhostHTTPPort";
  if (rec.type === "https" && !vhosts.httpsPort) return "the server has no vhostHTTPSPort";
  const group = host.groupName;
  const stats = host.stats(rec.name);
  const users = host.settings.users;
  let current = rec;
  let access = new AccessList(rec.allowIPs, rec.denyIPs);
  const limits = (r: AppRecord) => {
    const rate = r.bandwidthLimit ? parseBandwidth(r.bandwidthLimit)! : 0;
    const g = host.groupLimit;
    return { group: g, up: rate ? new Throttle(rate, g.up) : g.up, down: rate ? new Throttle(rate, g.down) : g.down };
  };
  let limit = limits(rec);
  const onClose = (user: Endpoint) => {
    stats.connections--;
    users.delete(group, current.name, user);
  };
  const target: HttpTarget = {
    group,
    get record() {
      return current;
    },
    stats,
    admit(addr) {
      if (!access.empty && !access.allows(addr)) return { status: 403, reason: "allowIPs/denyIPs" };
      if (current.maxConnections > 0 && stats.connections >= current.maxConnections) return { status: 503, reason: `maxConnections (${current.maxConnections})` };
      return null;
    },
    open(user) {
      stats.connections++;
      stats.accepted++;
      user.stats = stats;
      user.limitBy(limit.up);
      users.add(group, current.name, user);
      user.onClose = chain(user.onClose, onClose);
      host.acceptUser(user, current.name);
    },
  };
  vhosts.router.bind(target);
  return {
    get record() {
      return current;
    },
    get downLimit() {
      return limit.down;
    },
    update(next: AppRecord): boolean {
      if (next.type !== current.type) return false;
      if (next.bandwidthLimit !== current.bandwidthLimit || limit.group !== host.groupLimit) limit = limits(next);
      current = next;
      access = new AccessList(next.allowIPs, next.denyIPs);
      return true;
    },
    close: () => vhosts.router.unbind(target),
  };
}
