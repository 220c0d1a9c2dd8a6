/** A TCP app: a listener on its public port; each user who passes allowIPs, denyIPs and maxConnections gets a stream. */
import { hostPort } from "../../../protocol.ts";
import { AccessList } from "../../guard.ts";
import { log } from "../../log.ts";
import { Endpoint } from "../../net/endpoint.ts";
import { relayHandler } from "../../net/sockets.ts";
import type { AppRecord } from "../../registry/types.ts";
import type { AppHost, PublicApp } from "./app.ts";
import { parseBandwidth } from "../../config/schema.ts";
import { Throttle } from "../../net/throttle.ts";

/** Binds the app's port; a string says why it cannot be. */
export function openTcp(rec: AppRecord, host: AppHost): PublicApp | string {
  const stats = host.stats(rec.name);
  // Replaced in place by `update`: an edited access list or limit applies to the open listener.
  let current = rec;
  let access = new AccessList(rec.allowIPs, rec.denyIPs);
  // One bucket per direction for all the app's streams: users' bytes spend `up`, the app's `down`.
  // The group's budgets are the parents: an app's stream spends both.
  const limits = (r: AppRecord) => {
    const rate = r.bandwidthLimit ? parseBandwidth(r.bandwidthLimit)! : 0;
    const group = host.groupLimit;
    return { group, up: rate ? new Throttle(rate, group.up) : group.up, down: rate ? new Throttle(rate, group.down) : group.down };
  };
  let limit = limits(rec);
  const { groupName: group } = host;
  const users = host.settings.users;
  // One set of functions per listener, not per user: memory per held connection stays low.
  const onUserClose = (user: Endpoint) => {
    stats.connections--;
    users.delete(group, rec.name, user);
  };
  const onUserOpen = (user: Endpoint) => {
    // Checked before any work connection is spent on the user.
    if (!access.empty && !access.allows(user.socket!.remoteAddress)) {
      stats.denied++;
      log.debug("user refused by the access list", { group, app: current.name, from: user.socket!.remoteAddress });
      return user.reset();
    }
    if (current.maxConnections > 0 && stats.connections > current.maxConnections) {
      stats.overLimit++;
      log.debug("user refused: app at maxConnections", { group, app: current.name, limit: current.maxConnections });
      return user.reset();
    }
    // Counted once admitted: a refused user is a refusal, not a connection (warren_app_connections_total, history).
    stats.accepted++;
    host.acceptUser(user, rec.name);
  };
  const handler = relayHandler(() => {
    const user = new Endpoint();
    user.stats = stats;
    stats.connections++;
    user.limitBy(limit.up);
    users.add(group, rec.name, user);
    user.onClose = onUserClose;
    user.onOpen = onUserOpen;
    return user;
  });
  let listener;
  try {
    listener = Bun.listen<Endpoint>({ hostname: host.settings.bindAddr, port: rec.remotePort, exclusive: true, allowHalfOpen: true, socket: handler });
  } catch (err) {
    return `port ${rec.remotePort} cannot be bound (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
  }
  return {
    get record() {
      return current;
    },
    get downLimit() {
      return limit.down;
    },
    publicAddr: specificIp(host.settings.bindAddr) ? hostPort(host.settings.bindAddr, listener.port) : undefined,
    update(next: AppRecord): boolean {
      if (next.remotePort !== current.remotePort || next.type !== current.type) return false;
      // For users from now on (open streams keep the budget they began with).
      if (next.bandwidthLimit !== current.bandwidthLimit || limit.group !== host.groupLimit) limit = limits(next);
      current = next;
      access = new AccessList(next.allowIPs, next.denyIPs);
      return true;
    },
    close: () => listener.stop(false),
  };
}

/** Whether `addr` is one IP address (not a host name, not 0.0.0.0 or ::, no zone): a listener bound to it is reached at it. */
function specificIp(addr: string): boolean {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(addr)) return addr !== "0.0.0.0";
  return addr.includes(":") && !addr.includes("%") && !/^[0:]*$/.test(addr);
}
