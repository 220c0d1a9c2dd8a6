/**
 * A group whose session is on another node, as this node serves it (issue
 * 20): its apps' public ports (and domains) are open here too, on this node's
 * bindAddr, and each user who passes the app's checks here is carried to the
 * holding node over the link (link.ts). The app kinds are the session's own
 * (apps/), with a host that forwards instead of finding a work connection.
 * UDP apps are served on the holding node only: a datagram has no stream to
 * carry it (README, Known limits).
 */
import { log } from "../log.ts";
import type { AppCounters } from "../metrics/counters.ts";
import type { Endpoint } from "../net/endpoint.ts";
import type { AppRecord, GroupRecord } from "../registry/types.ts";
import type { AppHost, OpenApp, PublicApp } from "../server/apps/app.ts";
import { openHttp } from "../server/apps/http.ts";
import { openTcp } from "../server/apps/tcp.ts";
import { openUdp } from "../server/apps/udp.ts";
import type { ServerSettings } from "../server/settings.ts";
import type { PeerLink } from "./link.ts";
import { FrameReader } from "../../protocol.ts";

const OPENERS: Partial<Record<AppRecord["type"], OpenApp>> = { tcp: openTcp, udp: openUdp, http: openHttp, https: openHttp };
/** How soon a UDP app asks again for a channel when the link is down. */
const UDP_CHANNEL_RETRY_MS = 500;

/** One group served here for the node that holds its session. */
export class RemoteGroup implements AppHost {
  readonly #apps = new Map<string, PublicApp>();
  readonly groupLimit = { up: null, down: null };
  #closed = false;
  #lastTry = -Infinity;
  #reconciling: Promise<void> = Promise.resolve();

  constructor(
    readonly group: GroupRecord,
    /** The node holding the session, and the link to it. */
    readonly node: string,
    readonly link: PeerLink,
    readonly settings: ServerSettings,
    readonly statsFor: (group: string, app: string) => AppCounters,
  ) {}

  get groupName(): string {
    return this.group.name;
  }

  stats(app: string): AppCounters {
    return this.statsFor(this.group.name, app);
  }

  acceptUser(user: Endpoint, app: string): void {
    const a = this.#apps.get(app);
    if (!a) return user.reset();
    const sock = user.socket;
    this.link.forward(user, this.group.name, app, a.publicAddr ?? (sock ? `${sock.localAddress}:${sock.localPort}` : ""));
  }

  /** A UDP app needs its channel to the holding node (again, after a loss): datagrams are carried on it as on a work connection. */
  wantWork(app: PublicApp): void {
    if (this.#closed || this.#apps.get(app.record.name) !== app) return;
    // At most one try per UDP_CHANNEL_RETRY_MS: a channel refused at once must not turn into a busy loop.
    const now = performance.now();
    const wait = this.#lastTry + UDP_CHANNEL_RETRY_MS - now;
    if (wait > 0) return void setTimeout(() => this.wantWork(app), wait).unref();
    this.#lastTry = now;
    const ok = this.link.udpChannel(this.group.name, app.record.name, app.publicAddr ?? "", (data) => {
      if (this.#closed || this.#apps.get(app.record.name) !== app) return data.destroy();
      app.bindWork!(data, new FrameReader());
    });
    if (!ok) setTimeout(() => this.wantWork(app), UDP_CHANNEL_RETRY_MS).unref();
  }

  /** Opens the public side of `served` (the apps the holding node serves), closing the others; calls run one after another. */
  reconcile(group: GroupRecord, served: readonly string[]): Promise<void> {
    const run = this.#reconciling.then(() => this.#reconcile(group, served));
    this.#reconciling = run.catch(() => {});
    return run;
  }

  async #reconcile(group: GroupRecord, served: readonly string[]): Promise<void> {
    const want = new Map(group.apps.filter((a) => served.includes(a.name) && OPENERS[a.type]).map((a) => [a.name, a]));
    for (const [name, app] of this.#apps) {
      const rec = want.get(name);
      if (rec && app.update(rec)) continue;
      app.close();
      this.#apps.delete(name);
    }
    for (const [name, rec] of want) {
      if (this.#closed || this.#apps.has(name)) continue;
      const bound = await OPENERS[rec.type]!(rec, this);
      if (this.#closed) {
        if (typeof bound !== "string") bound.close();
        return;
      }
      if (typeof bound === "string") log.warn("cluster: app of a group on another node cannot be served here", { group: group.name, app: name, node: this.node, reason: bound });
      else {
        this.#apps.set(name, bound);
        if (bound.bindWork) this.wantWork(bound);
      }
    }
  }

  /** Apps whose public side is open here. */
  get open(): string[] {
    return [...this.#apps.keys()];
  }

  /** Closes every public port of the group here; streams already forwarded go on until they end. */
  close(): void {
    this.#closed = true;
    for (const a of this.#apps.values()) a.close();
    this.#apps.clear();
    this.link.dropWaiting(this.group.name);
  }
}
