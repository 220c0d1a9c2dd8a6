/**
 * One online group: the one owner and writer of its control connection, the
 * public apps it serves (apps/), and its work connections (work-pool.ts).
 */
import { encode, ErrorCode, FrameReader, FrameType, MAX_FRAME_BYTES, type AppStatus, type DeclaredApp } from "../../protocol.ts";
import { SeqWindow } from "../guard.ts";
import { log } from "../log.ts";
import type { AppCounters } from "../metrics/counters.ts";
import type { Endpoint } from "../net/endpoint.ts";
import type { AppRecord, GroupRecord } from "../registry/types.ts";
import type { AppHost, OpenApp, PublicApp } from "./apps/app.ts";
import { openTcp } from "./apps/tcp.ts";
import { openUdp } from "./apps/udp.ts";
import { openHttp } from "./apps/http.ts";
import type { ServerSettings } from "./settings.ts";
import { WorkPool, type PoolHost } from "./work-pool.ts";
import { appSockets } from "./pool-demand.ts";
import { declaredAppsProblem } from "./auth.ts";
import { parseBandwidth } from "../config/schema.ts";
import { Throttle } from "../net/throttle.ts";

export { EXTRA_IDLE_WORK, IDLE_WORK_TIMEOUT_MS, MAX_WORK_REQUEST, WORK_REQUEST_TIMEOUT_MS } from "./work-pool.ts";

/** How each type of app is opened: a new kind of app is a new file in apps/ and one line here. */
const OPENERS: Record<AppRecord["type"], OpenApp> = { tcp: openTcp, udp: openUdp, http: openHttp, https: openHttp };

/** What a session needs from the server around it: its settings, counters, and an end notice. */
export interface SessionHost extends ServerSettings {
  statsFor(group: string, app: string): AppCounters;
  /** Called once when the session has ended. */
  ended(session: Session, reason: string): void;
  /** The apps it serves are known (after the login, and after each change): the cluster records them. */
  serving?(session: Session, apps: readonly string[]): void;
  /** A login for `group` is about to become its session here. */
  beforeLogin?(group: string): void;
}

/** An online group. */
export class Session implements AppHost, PoolHost {
  readonly idHex: string;
  readonly onlineSince = new Date();
  /** Work-connection sequence numbers already used (replay protection). */
  readonly workSeqs = new SeqWindow();
  /** When the client last sent a frame (performance.now(): monotonic, so a wall-clock step drops no session). */
  lastSeen = performance.now();
  #apps = new Map<string, PublicApp>();
  #statuses: AppStatus[] = [];
  #reconciling: Promise<void> = Promise.resolve();
  /** The group as last applied (its apps change with the registry). */
  #current: GroupRecord;
  #ended = false;
  readonly #pool: WorkPool;
  /** The group's bandwidthLimit, as budgets each way (replaced when the limit changes). */
  groupLimit: { readonly up: Throttle | null; readonly down: Throttle | null } = { up: null, down: null };
  #groupLimitSpec: string | null = null;

  constructor(
    readonly host: SessionHost,
    readonly id: Uint8Array,
    readonly group: GroupRecord,
    readonly control: Endpoint,
    /** The apps the client serves: from its login, then from its Declare frames. */
    private declared: readonly DeclaredApp[],
    readonly clientAddr: string,
    /** What the client said it is ("warren-client 0.1.0"), or null. */
    readonly clientVersion: string | null = null,
  ) {
    this.idHex = Buffer.from(id).toString("hex");
    this.#current = group;
    this.#pool = new WorkPool(this);
  }

  // What the apps and the pool read of this session (AppHost, PoolHost).
  get groupName(): string {
    return this.group.name;
  }
  get settings(): ServerSettings {
    return this.host;
  }
  stats(app: string): AppCounters {
    return this.host.statsFor(this.group.name, app);
  }
  /** Names of the apps served now (their public side is open). */
  get served(): string[] {
    return this.#statuses.filter((a) => !a.error).map((a) => a.name);
  }

  app(name: string): PublicApp | undefined {
    return this.#apps.get(name);
  }
  acceptUser(user: Endpoint, app: string): void {
    this.#pool.acceptUser(user, app);
  }
  wantWork(app: PublicApp): void {
    this.#pool.wantWork(app);
  }

  /** Work connections taken in and streams started on a reused one (see WorkPool). */
  get counts(): WorkPool["counts"] {
    return this.#pool.counts;
  }

  /** Whether the session has ended. */
  get ended(): boolean {
    return this.#ended;
  }

  /** The current answer for each declared app. */
  get statuses(): readonly AppStatus[] {
    return this.#statuses;
  }

  /** Idle work connections in the pool. */
  get pooled(): number {
    return this.#pool.pooled;
  }

  /** Idle work connections the pool keeps now: QUIET_POOL when quiet, up to poolSize when busy (pool-demand.ts). */
  get poolTarget(): number {
    return this.#pool.target;
  }

  /**
   * Serves the control connection of a login just accepted: binds the apps, answers LoginOk,
   * then reads the client's frames. Frames that arrive while the apps are being bound wait
   * in `reader`, in order (and bounded). This session is the one writer of the connection.
   */
  open(reader: FrameReader): void {
    const ep = this.control;
    let ready = false;
    ep.onData = (_e, chunk) => {
      reader.push(chunk);
      if (ready) this.#serve(reader);
      else if (reader.buffered > MAX_FRAME_BYTES) this.end(ErrorCode.UnexpectedMessage, "too much data before the login was answered");
    };
    ep.onClose = () => this.end(null, "control connection closed");
    this.reconcile(this.group)
      .then(() => {
        if (this.#ended) return;
        ep.send(encode({ type: FrameType.LoginOk, sessionId: this.id, apps: this.#statuses }));
        log.info("group online", { group: this.group.name, client: this.clientAddr, apps: this.#statuses.filter((s) => !s.error).length });
        ready = true;
        this.host.serving?.(this, this.served);
        this.start();
        this.#serve(reader);
      })
      .catch((err: Error) => {
        log.error("login could not be completed", { group: this.group.name, error: err.message });
        this.end(ErrorCode.Overloaded, "the server could not complete the login");
      });
  }

  /** Handles the client's control frames. */
  #serve(reader: FrameReader): void {
    for (let res = reader.next(); res; res = reader.next()) {
      if (!res.ok) {
        log.warn("protocol error on control connection", { group: this.group.name, error: res.error.message });
        return this.end(res.error.code, res.error.message);
      }
      this.touch();
      const msg = res.msg;
      if (msg.type === FrameType.StreamEnd) this.#pool.streamEnd(msg.seq, msg.bytes);
      else if (msg.type === FrameType.WorkFree) this.#pool.workFree(msg.seq);
      else if (msg.type === FrameType.Ping) this.control.send(encode({ type: FrameType.Pong, seq: msg.seq }));
      else if (msg.type === FrameType.Declare) {
        const bad = declaredAppsProblem(msg.apps);
        if (bad) return this.end(ErrorCode.MalformedFrame, bad);
        // The client's apps changed (a reloaded client.toml): serve the new list, without a new login.
        this.declared = msg.apps;
        log.info("client declared its apps again", { group: this.group.name, apps: msg.apps.length });
        void this.update(this.#current);
      }
      else if (msg.type !== FrameType.Pong) return this.end(ErrorCode.UnexpectedMessage, `unexpected frame type ${msg.type} on a control connection`);
    }
  }

  /** Applies a changed group to this session and tells the client the new statuses. */
  async update(group: GroupRecord): Promise<void> {
    await this.reconcile(group);
    if (this.#ended) return;
    this.control.send(encode({ type: FrameType.Apps, apps: this.#statuses }));
    this.host.serving?.(this, this.served);
  }

  /** Opens listeners for the declared apps that the group has, and records why the others are not served. Calls run one after another. */
  reconcile(group: GroupRecord): Promise<void> {
    const run = this.#reconciling.then(() => this.#reconcile(group));
    // One failure must not stop every later reconcile of this session.
    this.#reconciling = run.catch((err: Error) => log.error("applying apps failed", { group: this.group.name, error: err.message }));
    return run;
  }

  async #reconcile(group: GroupRecord): Promise<void> {
    if (this.#ended) return;
    this.#current = group;
    if (group.bandwidthLimit !== this.#groupLimitSpec) {
      this.#groupLimitSpec = group.bandwidthLimit;
      const rate = group.bandwidthLimit ? parseBandwidth(group.bandwidthLimit)! : 0;
      this.groupLimit = rate ? { up: new Throttle(rate), down: new Throttle(rate) } : { up: null, down: null };
    }
    const statuses: AppStatus[] = [];
    const keep = new Set<string>();
    for (const d of this.declared) {
      const rec = group.apps.find((a) => a.name === d.name);
      if (!rec) {
        statuses.push({ name: d.name, type: d.type, remotePort: 0, error: `unknown app "${d.name}": group "${group.name}" has no such app` });
        continue;
      }
      if (rec.type !== d.type) {
        statuses.push({ name: d.name, type: d.type, remotePort: rec.remotePort, error: `app "${d.name}" is registered as ${rec.type}, not ${d.type}` });
        continue;
      }
      const current = this.#apps.get(d.name);
      // Same port and type: a changed access list or limit applies to the open port, which stays bound.
      if (current?.update(rec)) {
        keep.add(d.name);
        statuses.push({ name: d.name, type: d.type, remotePort: rec.remotePort, error: "", urls: this.host.vhosts?.urls(rec) ?? [] });
        continue;
      }
      if (current) this.#closeApp(d.name);
      const bound = await OPENERS[rec.type](rec, this);
      if (this.#ended) {
        // Ended while binding: give the port back at once.
        if (typeof bound !== "string") bound.close();
        return;
      }
      if (typeof bound === "string") {
        log.warn("app cannot be served", { group: group.name, app: d.name, port: rec.remotePort, reason: bound });
        statuses.push({ name: d.name, type: d.type, remotePort: rec.remotePort, error: bound });
        continue;
      }
      this.#apps.set(d.name, bound);
      if (ownsSocket(rec)) appSockets.open++;
      if (bound.bindWork) this.#pool.wantWork(bound);
      keep.add(d.name);
      const urls = this.host.vhosts?.urls(rec) ?? [];
      statuses.push({ name: d.name, type: d.type, remotePort: rec.remotePort, error: "", urls });
      log.info("app online", { group: group.name, app: d.name, type: rec.type, ...(urls.length ? { urls: urls.join(" ") } : { port: rec.remotePort }) });
    }
    for (const name of [...this.#apps.keys()]) if (!keep.has(name)) this.#closeApp(name);
    this.#statuses = statuses;
  }

  #closeApp(name: string): void {
    const rt = this.#apps.get(name);
    if (!rt) return;
    this.#apps.delete(name);
    if (ownsSocket(rt.record)) appSockets.open--;
    // Stop accepting; established streams go on until they end.
    rt.close();
    this.#pool.dropApp(name, rt);
    log.info("app offline", { group: this.group.name, app: name, port: rt.record.remotePort });
  }

  /** Takes an authenticated work connection into the pool, or straight to a waiting user. */
  addWork(ep: Endpoint, reader: FrameReader, seq: number): void {
    this.#pool.addWork(ep, reader, seq);
  }

  /** Closes idle work connections beyond the pool's target unused for IDLE_WORK_TIMEOUT_MS, and any over the shared budget. */
  trimIdle(now = performance.now()): void {
    this.#pool.trimIdle(now);
  }

  /** Starts serving after login: fills the pool (listeners were opened by `reconcile`). */
  start(): void {
    this.#pool.start();
  }

  /** A frame from the client arrived: it is alive. */
  touch(): void {
    this.lastSeen = performance.now();
    this.#pool.touch();
  }

  /** Ends the session: tells the client why, closes listeners and idle work connections; established streams go on. */
  end(code: ErrorCode | null, reason: string): void {
    if (this.#ended) return;
    this.#ended = true;
    for (const name of [...this.#apps.keys()]) this.#closeApp(name);
    this.#pool.end();
    if (code !== null && !this.control.closed) {
      this.control.send(encode({ type: FrameType.Error, code, message: reason }));
      this.control.endWhenFlushed();
    } else this.control.destroy();
    log.info("session ended", { group: this.group.name, client: this.clientAddr, reason });
    this.host.ended(this, reason);
  }
}

/** A TCP or UDP app holds a descriptor of its own (its listener or socket); HTTP apps share the server's vhost ports. */
function ownsSocket(rec: AppRecord): boolean {
  return rec.type === "tcp" || rec.type === "udp";
}
