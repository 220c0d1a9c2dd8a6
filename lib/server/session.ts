/**
 * One online group: its control connection, one public listener per app,
 * the pool of idle work connections, and the users waiting for one.
 * A work connection carries one stream at a time and goes back to the pool
 * when the stream has ended both ways (StreamEnd each way, then WorkFree).
 */
import type { TCPSocketListener } from "bun";
import { encode, ErrorCode, FrameReader, FrameType, hostPort, MAX_FRAME_BYTES, withMagic, type AppStatus, type DeclaredApp } from "../../protocol.ts";
import { log } from "../log.ts";
import type { AppCounters } from "../metrics/counters.ts";
import type { AppRecord, GroupRecord } from "../registry.ts";
import { chain, Endpoint } from "../net/endpoint.ts";
import { holdUntilNextPoll } from "../net/hold.ts";
import { relayHandler, sockets } from "../net/sockets.ts";
import { UdpPublic } from "../udp.ts";
import { AccessList, SeqWindow } from "../guard.ts";
import { Deadlines } from "../net/deadlines.ts";
import type { LiveUsers } from "./users.ts";

/** A work-connection request the client has not answered within this time is assumed lost and asked again. */
export const WORK_REQUEST_TIMEOUT_MS = 5_000;
/** Most work connections asked for in one OpenWork frame. */
export const MAX_WORK_REQUEST = 64;
/**
 * Work connections back from finished streams that the idle pool keeps beyond poolSize:
 * under steady load they serve the next users (closing them would mean dialing again).
 * A stream holds its connection until the client's WorkFree, so 50 users at a time kept
 * about 160 connections busy or idle: with 64 here, bursts of returns overflowed the pool
 * while other users waited for new dials (about 700 closed and 700 dialed a second).
 * Each idle connection costs about 4 KiB on either side; the sweep trims them after 30 s.
 * None are kept beyond poolSize while the server's sockets are over half its file limit.
 */
export const EXTRA_IDLE_WORK = 256;
/** An idle work connection beyond poolSize unused this long is closed: the load that needed it has gone. */
export const IDLE_WORK_TIMEOUT_MS = 30_000;

/** What a session needs from the server around it. */
export interface SessionHost {
  readonly bindAddr: string;
  readonly poolSize: number;
  readonly userConnTimeoutMs: number;
  readonly maxPendingUsers: number;
  readonly udpIdleTimeoutMs: number;
  /** How long an unanswered OpenWork counts as in flight: WORK_REQUEST_TIMEOUT_MS, lowered only by tests. */
  readonly workRequestTimeoutMs: number;
  statsFor(group: string, app: string): AppCounters;
  /** The live user connections of every TCP app. */
  readonly users: LiveUsers;
  /** Called once when the session has ended. */
  ended(session: Session): void;
}

interface AppRuntime {
  readonly record: AppRecord;
  readonly listener?: TCPSocketListener<Endpoint>;
  readonly udp?: UdpPublic;
  /** The address users reach the app at, when bindAddr names one (not a wildcard): then no per-user getsockname. */
  readonly publicAddr?: string;
}

interface WaitingUser {
  readonly user: Endpoint;
  readonly app: string;
}

/** A work connection of this session: in the pool, or carrying a stream. */
interface Work {
  readonly ep: Endpoint;
  /** Its WorkHello sequence number: how StreamEnd and WorkFree name it. */
  readonly seq: number;
  readonly reader: FrameReader;
  /** MAGIC has gone out (with the first StartWork). */
  greeted: boolean;
  stream: Stream | null;
  /** When it last went into the pool (performance.now()). */
  idleSince: number;
}

/** A user's stream on a work connection. */
interface Stream {
  readonly work: Work;
  readonly user: Endpoint;
  readonly app: string;
  /** The client's WorkAck arrived: the two are piped. */
  acked: boolean;
  /** The user's FIN has been told to the client. */
  upEnded: boolean;
  /** Every byte the client sent has arrived and the user was sent a FIN. */
  downEnded: boolean;
  /** The byte count of a StreamEnd that came before the ack; -1 if none. */
  downBytes: number;
  /** The client said WorkFree. */
  freed: boolean;
  /** The control connection is gone: an end not told by then cannot be told (the stream is reset), and the connection closes after it. */
  noReuse: boolean;
}

/** An online group. */
export class Session {
  readonly idHex: string;
  readonly onlineSince = new Date();
  /** Work-connection sequence numbers already used (replay protection). */
  readonly workSeqs = new SeqWindow();
  /** When the client last sent a frame (performance.now(): monotonic, so a wall-clock step drops no session). */
  lastSeen = performance.now();
  /** Work connections taken in (authenticated hellos) and streams started on one that came back from an earlier stream. */
  readonly counts = { workOpened: 0, workReused: 0, workFreed: 0 };
  #apps = new Map<string, AppRuntime>();
  #statuses: AppStatus[] = [];
  #pool: Work[] = [];
  /** Every open work connection by sequence number. */
  #works = new Map<number, Work>();
  #waiting: WaitingUser[] = [];
  /** UDP apps without a work connection, in the order they asked. */
  #udpWaiting: UdpPublic[] = [];
  #reconciling: Promise<void> = Promise.resolve();
  #requested = 0;
  #requestedAt = 0;
  #ended = false;
  #started = false;
  #retryTimer: Timer | null = null;
  /** Users waiting for a work connection are closed after userConnTimeout. */
  readonly #waitDeadlines: Deadlines<WaitingUser>;
  /** A pooled connection whose path died silently would never answer StartWork: its user is cut after userConnTimeout. */
  readonly #ackDeadlines: Deadlines<Stream>;
  readonly #idleData: (ep: Endpoint) => void;
  readonly #userEnded: (user: Endpoint) => void;
  readonly #workEnded: (work: Endpoint) => void;

  constructor(
    readonly host: SessionHost,
    readonly id: Uint8Array,
    readonly group: GroupRecord,
    readonly control: Endpoint,
    readonly declared: readonly DeclaredApp[],
    readonly clientAddr: string,
  ) {
    this.idHex = Buffer.from(id).toString("hex");
    this.#waitDeadlines = new Deadlines(host.userConnTimeoutMs, (w) => this.#dropWaiting(w, "no work connection within userConnTimeout"));
    this.#ackDeadlines = new Deadlines(host.userConnTimeoutMs, (p) => {
      log.warn("no answer on a work connection in time; closing the user", { group: this.group.name, app: p.app });
      p.user.reset();
      p.work.ep.reset();
    });
    // One set of functions per session, not per stream.
    this.#idleData = (ep) => {
      log.warn("data on an idle work connection; closing it", { group: this.group.name });
      ep.destroy();
    };
    this.#userEnded = (user) => this.#upEnded(((user.peer as Endpoint).tag as Work).stream!);
    this.#workEnded = (work) => this.#downEnded((work.tag as Work).stream!);
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
    return this.#pool.length;
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
      if (msg.type === FrameType.StreamEnd) this.streamEnd(msg.seq, msg.bytes);
      else if (msg.type === FrameType.WorkFree) this.workFree(msg.seq);
      else if (msg.type === FrameType.Ping) this.control.send(encode({ type: FrameType.Pong, seq: msg.seq }));
      else if (msg.type !== FrameType.Pong) return this.end(ErrorCode.UnexpectedMessage, `unexpected frame type ${msg.type} on a control connection`);
    }
  }

  /** Applies a changed group to this session and tells the client the new statuses. */
  async update(group: GroupRecord): Promise<void> {
    await this.reconcile(group);
    if (!this.#ended) this.control.send(encode({ type: FrameType.Apps, apps: this.#statuses }));
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
      if (current && sameServing(current.record, rec)) {
        keep.add(d.name);
        statuses.push({ name: d.name, type: d.type, remotePort: rec.remotePort, error: "" });
        continue;
      }
      if (current) this.#closeApp(d.name);
      const bound = rec.type === "udp" ? await this.#listenUdp(rec) : this.#listen(rec);
      if (this.#ended) {
        // Ended while binding: give the port back at once.
        if (typeof bound !== "string") ("stop" in bound ? bound.stop(true) : bound.close());
        return;
      }
      if (typeof bound === "string") {
        log.warn("app cannot be served", { group: group.name, app: d.name, port: rec.remotePort, reason: bound });
        statuses.push({ name: d.name, type: d.type, remotePort: rec.remotePort, error: bound });
        continue;
      }
      if (bound instanceof UdpPublic) {
        this.#apps.set(d.name, { record: rec, udp: bound });
        this.#wantUdpWork(bound);
      } else this.#apps.set(d.name, { record: rec, listener: bound, publicAddr: specificIp(this.host.bindAddr) ? hostPort(this.host.bindAddr, bound.port) : undefined });
      keep.add(d.name);
      statuses.push({ name: d.name, type: d.type, remotePort: rec.remotePort, error: "" });
      log.info("app online", { group: group.name, app: d.name, type: rec.type, port: rec.remotePort });
    }
    for (const name of [...this.#apps.keys()]) if (!keep.has(name)) this.#closeApp(name);
    this.#statuses = statuses;
  }

  #listenUdp(rec: AppRecord): Promise<UdpPublic | string> {
    const stats = this.host.statsFor(this.group.name, rec.name);
    return UdpPublic.open(this.host.bindAddr, rec, stats, this.host.udpIdleTimeoutMs, { group: this.group.name, app: rec.name });
  }

  /** Queues a UDP app for the next work connection. */
  #wantUdpWork(app: UdpPublic): void {
    if (this.#ended || this.#udpWaiting.includes(app)) return;
    const work = this.#pool.pop();
    if (work) {
      this.#startUdp(work, app);
      return this.#refill();
    }
    this.#udpWaiting.push(app);
    this.#refill();
  }

  /** Binds a work connection to a UDP app: StartWork, then datagram frames both ways. */
  #startUdp(w: Work, app: UdpPublic): void {
    const { ep: work, reader } = w;
    // A UDP app keeps its work connection for good.
    const start = encode({ type: FrameType.StartWork, app: app.name, userAddr: "", publicAddr: "" });
    work.send(w.greeted ? start : withMagic(start));
    w.greeted = true;
    app.attach(work);
    let acked = false;
    work.onData = (ep, chunk) => {
      if (!acked) {
        reader.push(chunk);
        const res = reader.next();
        if (!res) return;
        if (!res.ok || res.msg.type !== FrameType.WorkAck || !res.msg.ok) {
          log.warn("udp work connection refused", { group: this.group.name, app: app.name, reason: res.ok && res.msg.type === FrameType.WorkAck ? res.msg.message : "bad answer" });
          return ep.destroy();
        }
        acked = true;
        chunk = reader.rest();
      }
      const err = app.fromClient(chunk);
      if (err) {
        log.warn("bad datagram frame from client", { group: this.group.name, app: app.name, error: err.message });
        ep.destroy();
      }
    };
    work.onClose = chain(work.onClose, () => {
      if (app.work === work) app.work = null;
      // Still served: get another work connection.
      const rt = this.#apps.get(app.name);
      if (rt?.udp === app) this.#wantUdpWork(app);
    });
  }

  #listen(rec: AppRecord): TCPSocketListener<Endpoint> | string {
    const stats = this.host.statsFor(this.group.name, rec.name);
    const access = new AccessList(rec.allowIPs, rec.denyIPs);
    // One set of functions per listener, not per user: memory per held connection stays low.
    const users = this.host.users;
    const group = this.group.name;
    const onUserClose = (user: Endpoint) => {
      stats.connections--;
      users.delete(group, rec.name, user);
    };
    const onUserOpen = (user: Endpoint) => {
      // Checked before any work connection is spent on the user.
      if (!access.empty && !access.allows(user.socket!.remoteAddress)) {
        stats.denied++;
        log.debug("user refused by the access list", { group: this.group.name, app: rec.name, from: user.socket!.remoteAddress });
        return user.reset();
      }
      if (rec.maxConnections > 0 && stats.connections > rec.maxConnections) {
        stats.overLimit++;
        log.debug("user refused: app at maxConnections", { group: this.group.name, app: rec.name, limit: rec.maxConnections });
        return user.reset();
      }
      this.#acceptUser(user, rec.name);
    };
    const handler = relayHandler(() => {
      const user = new Endpoint();
      user.stats = stats;
      stats.connections++;
      users.add(group, rec.name, user);
      user.onClose = onUserClose;
      user.onOpen = onUserOpen;
      return user;
    });
    try {
      return Bun.listen<Endpoint>({ hostname: this.host.bindAddr, port: rec.remotePort, exclusive: true, allowHalfOpen: true, socket: handler });
    } catch (err) {
      return `port ${rec.remotePort} cannot be bound (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
    }
  }

  #closeApp(name: string): void {
    const rt = this.#apps.get(name);
    if (!rt) return;
    this.#apps.delete(name);
    // Stop accepting; established streams go on until they end.
    rt.listener?.stop(false);
    if (rt.udp) {
      this.#udpWaiting = this.#udpWaiting.filter((u) => u !== rt.udp);
      rt.udp.close();
    }
    for (const w of this.#waiting.filter((w) => w.app === name)) this.#dropWaiting(w, "app removed");
    log.info("app offline", { group: this.group.name, app: name, port: rt.record.remotePort });
  }

  #acceptUser(user: Endpoint, app: string): void {
    if (this.#ended || !this.#apps.has(app)) return user.reset();
    const work = this.#pool.pop();
    if (work) {
      this.#startStream(work, user, app);
      this.#refill();
      return;
    }
    // Hold the user's bytes in the kernel until a work connection is bound.
    user.pause();
    if (this.#waiting.length >= this.host.maxPendingUsers) {
      this.host.statsFor(this.group.name, app).queueFull++;
      log.warn("too many users waiting for a work connection; refusing", { group: this.group.name, app, limit: this.host.maxPendingUsers });
      return user.reset();
    }
    const entry: WaitingUser = { user, app };
    this.#waiting.push(entry);
    this.#waitDeadlines.add(entry);
    user.onClose = chain(user.onClose, () => {
      const i = this.#waiting.indexOf(entry);
      if (i >= 0) {
        this.#waitDeadlines.delete(entry);
        this.#waiting.splice(i, 1);
      }
    });
    this.#refill();
  }

  #dropWaiting(w: WaitingUser, why: string): void {
    const i = this.#waiting.indexOf(w);
    if (i >= 0) this.#waiting.splice(i, 1);
    this.#waitDeadlines.delete(w);
    log.warn("user closed", { group: this.group.name, app: w.app, reason: why });
    w.user.reset();
  }

  /** Sends StartWork, relays the user's bytes at once, and joins both ways when the client acknowledges. */
  #startStream(w: Work, user: Endpoint, app: string): void {
    const work = w.ep;
    const sock = user.socket;
    // Both ends of the user's connection: the client logs the first and, for an app with proxyProtocol, tells the app both.
    const userAddr = sock ? hostPort(sock.remoteAddress, sock.remotePort) : "";
    const publicAddr = this.#apps.get(app)?.publicAddr ?? (sock ? hostPort(sock.localAddress, sock.localPort) : "");
    // StartWork (with MAGIC on a new connection) leaves with the user's first bytes when
    // those come within a loop turn, as they do for a user who speaks first.
    const start = encode({ type: FrameType.StartWork, app, userAddr, publicAddr });
    holdUntilNextPoll(work, w.greeted ? start : withMagic(start));
    if (w.greeted) this.counts.workReused++;
    w.greeted = true;
    const s: Stream = { work: w, user, app, acked: false, upEnded: false, downEnded: false, downBytes: -1, freed: false, noReuse: false };
    w.stream = s;
    this.#ackDeadlines.add(s);
    user.onEnd = this.#userEnded;
    user.peer = work;
    user.resume();
    work.onData = (ep, chunk) => {
      const reader = w.reader;
      reader.push(chunk);
      const res = reader.next();
      if (!res) return;
      this.#ackDeadlines.delete(s);
      if (!res.ok || res.msg.type !== FrameType.WorkAck) {
        log.warn("bad answer on a work connection", { group: this.group.name, app, error: res.ok ? "unexpected frame" : res.error.message });
        user.reset();
        return ep.destroy();
      }
      if (!res.msg.ok) {
        log.warn("local app refused the connection", { group: this.group.name, app, reason: res.msg.message });
        user.reset();
        return ep.destroy();
      }
      s.acked = true;
      ep.onEnd = this.#workEnded;
      ep.pipe(user, reader.rest());
      if (s.downBytes >= 0 && ep.peer === user && !ep.endAfter(s.downBytes)) this.#broken(s, "more bytes than its stream-end announced");
    };
  }

  /** The user sent FIN: tell the client how many bytes to expect. */
  #upEnded(s: Stream): void {
    if (s.upEnded) return;
    s.upEnded = true;
    // Without the control connection the client cannot learn the count, and a FIN would prove nothing to it.
    if (s.noReuse) return this.#cut(s, "the user's end came after the control connection was lost");
    s.work.ep.release(); // a StartWork held for the user's first bytes: none will come
    holdUntilNextPoll(this.control, encode({ type: FrameType.StreamEnd, seq: s.work.seq, bytes: s.user.relayed }));
    if (s.downEnded) this.#finish(s);
  }

  /** Every byte the client sent has arrived (or its FIN): the user gets a FIN. */
  #downEnded(s: Stream): void {
    if (s.downEnded) return;
    s.downEnded = true;
    if (s.upEnded) this.#finish(s);
    else s.user.shutdownWhenFlushed();
  }

  /** Both directions ended: the work connection leaves the user and waits for WorkFree, or closes. */
  #finish(s: Stream): void {
    const w = s.work;
    // Parted first: the user may close at once, and must not take the work connection with it.
    w.ep.unpipe();
    // The user closes once its last bytes are taken; one that stops reading is cut after LINGER_MS.
    s.user.endWhenFlushed();
    if (s.noReuse || w.ep.readEnded || this.#ended) {
      w.stream = null;
      return w.ep.endWhenFlushed();
    }
    w.ep.onData = this.#idleData;
    if (s.freed) this.#reuse(w);
  }

  #reuse(w: Work): void {
    if (this.#ended || w.ep.closed) return w.ep.endWhenFlushed();
    w.stream = null;
    w.reader.reopen();
    this.#offer(w);
  }

  #broken(s: Stream, why: string): void {
    log.warn("protocol error on a work connection; resetting the stream", { group: this.group.name, app: s.app, error: why });
    s.user.reset();
    s.work.ep.reset();
  }

  /** Resets a stream whose end cannot be proven: the user sees a reset, never a clean end after fewer bytes. */
  #cut(s: Stream, why: string): void {
    log.warn("stream reset: its end cannot be confirmed", { group: this.group.name, app: s.app, reason: why });
    s.user.reset();
    s.work.ep.reset();
  }

  /** The client's StreamEnd: its direction of the stream on work connection `seq` ended after `bytes` bytes. */
  streamEnd(seq: number, bytes: number): void {
    const s = this.#works.get(seq)?.stream;
    if (!s || s.downEnded) return; // closed meanwhile
    if (!s.acked) s.downBytes = bytes;
    else if (!s.work.ep.endAfter(bytes)) this.#broken(s, "more bytes than its stream-end announced");
  }

  /** The client's WorkFree: it has every byte of the stream on `seq` and has sent all of its own. */
  workFree(seq: number): void {
    const w = this.#works.get(seq);
    if (!w) return; // closed meanwhile
    const s = w.stream;
    if (!s || !s.upEnded) {
      if (s) return this.#broken(s, "work-free before the stream ended");
      log.warn("work-free for an idle work connection; closing it", { group: this.group.name });
      return w.ep.destroy();
    }
    s.freed = true;
    this.counts.workFreed++;
    if (s.downEnded) this.#reuse(w);
  }

  /** Takes an authenticated work connection into the pool, or straight to a waiting user. */
  addWork(ep: Endpoint, reader: FrameReader, seq: number): void {
    if (this.#requested > 0) this.#requested--;
    if (this.#ended) return ep.destroy();
    this.counts.workOpened++;
    const w: Work = { ep, seq, reader, greeted: false, stream: null, idleSince: 0 };
    this.#works.set(seq, w);
    ep.tag = w;
    // A stream's end is its StreamEnd count: a FIN alone (a killed client) resets the user.
    ep.countedEnd = true;
    ep.onClose = (_ep, aborted) => this.#workClosed(w, aborted);
    this.#offer(w);
  }

  /** An idle work connection goes to a waiting UDP app or user, or to the pool. */
  #offer(w: Work): void {
    const udp = this.#udpWaiting.shift();
    if (udp) return this.#startUdp(w, udp);
    const waiting = this.#waiting.shift();
    if (waiting) {
      this.#waitDeadlines.delete(waiting);
      return this.#startStream(w, waiting.user, waiting.app);
    }
    // Beyond poolSize, a connection is kept only while the server has descriptors to spare: one group's
    // spike must not hold the sockets that other groups' users need.
    const extra = sockets.open > sockets.max / 2 ? 0 : EXTRA_IDLE_WORK;
    if (this.#pool.length >= this.host.poolSize + extra) return w.ep.destroy();
    // Taken from the end: the oldest stay at the start, where trimIdle finds them.
    w.idleSince = performance.now();
    this.#pool.push(w);
    w.ep.onData = this.#idleData;
  }

  #workClosed(w: Work, aborted: boolean): void {
    this.#works.delete(w.seq);
    const i = this.#pool.indexOf(w);
    if (i >= 0) {
      this.#pool.splice(i, 1);
      return this.#refill();
    }
    const s = w.stream;
    if (!s || (s.upEnded && s.downEnded)) return;
    // Until the ack joins them, the relay does not know they are a pair: a work connection lost now resets the
    // user (who may have sent bytes already). Once joined, the relay resets the user with it.
    if (!s.acked) {
      this.#ackDeadlines.delete(s);
      s.user.reset();
    }
    log.warn("stream reset: its work connection closed before the stream ended", { group: this.group.name, app: s.app, how: aborted ? "reset" : "closed" });
  }

  /** Asks the client for enough work connections to fill the pool and serve every waiting user. */
  #refill(): void {
    // Not before LoginOk: the client can open work connections only once it knows the session id.
    if (this.#ended || !this.#started) return;
    const now = performance.now(); // monotonic: a wall-clock step back must not stall lost requests
    if (this.#requested > 0 && now - this.#requestedAt > this.host.workRequestTimeoutMs) this.#requested = 0;
    // Refill in batches once the pool is half spent (sooner when someone waits): the client's dials
    // and our hellos then stay off the path of most new streams.
    const waiting = this.#waiting.length + this.#udpWaiting.length;
    if (waiting === 0 && this.#pool.length + this.#requested > this.host.poolSize / 2) return;
    // While someone waits, look again after the request timeout even if no frame arrives meanwhile.
    if (waiting > 0 && !this.#retryTimer) {
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = null;
        this.#refill();
      }, this.host.workRequestTimeoutMs + 1);
    }
    const want = this.host.poolSize + waiting - this.#pool.length - this.#requested;
    const count = Math.min(want, MAX_WORK_REQUEST);
    if (count <= 0) return;
    this.#requested += count;
    this.#requestedAt = now;
    this.control.send(encode({ type: FrameType.OpenWork, count }));
  }

  /** Closes idle work connections beyond poolSize that have not been used for IDLE_WORK_TIMEOUT_MS. */
  trimIdle(now = performance.now()): void {
    let n = 0;
    while (this.#pool.length - n > this.host.poolSize && now - this.#pool[n]!.idleSince > IDLE_WORK_TIMEOUT_MS) n++;
    for (const w of this.#pool.splice(0, n)) w.ep.destroy();
  }

  /** Starts serving after login: fills the pool (listeners were opened by `reconcile`). */
  start(): void {
    this.#started = true;
    this.#refill();
  }

  /** A frame from the client arrived: it is alive. */
  touch(): void {
    this.lastSeen = performance.now();
    this.#refill();
  }

  /** Ends the session: tells the client why, closes listeners and idle work connections; established streams go on. */
  end(code: ErrorCode | null, reason: string): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    for (const name of [...this.#apps.keys()]) this.#closeApp(name);
    for (const w of [...this.#waiting]) this.#dropWaiting(w, "session ended");
    for (const w of this.#pool.splice(0)) w.ep.destroy();
    // Streams go on carrying bytes (an interactive session outlives a lost control connection), but an end not
    // told by now can never be: such a direction ends with a reset (README: "How a stream ends").
    for (const w of [...this.#works.values()]) {
      const s = w.stream;
      if (!s) continue;
      if (s.upEnded && s.downEnded) {
        w.ep.endWhenFlushed(); // finished, waiting for a WorkFree that cannot come
        continue;
      }
      s.noReuse = true;
    }
    if (code !== null && !this.control.closed) {
      this.control.send(encode({ type: FrameType.Error, code, message: reason }));
      this.control.endWhenFlushed();
    } else this.control.destroy();
    log.info("session ended", { group: this.group.name, client: this.clientAddr, reason });
    this.host.ended(this);
  }
}

/** Whether a listener opened for `a` serves `b` unchanged (same port and type, same access rules and limit). */
function sameServing(a: AppRecord, b: AppRecord): boolean {
  const same = (x: readonly string[], y: readonly string[]) => x.length === y.length && x.every((v, i) => v === y[i]);
  return a.remotePort === b.remotePort && a.type === b.type && a.maxConnections === b.maxConnections && same(a.allowIPs, b.allowIPs) && same(a.denyIPs, b.denyIPs);
}

/** Whether `addr` is one IP address (not a host name, not 0.0.0.0 or ::, no zone): a listener bound to it is reached at it. */
function specificIp(addr: string): boolean {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(addr)) return addr !== "0.0.0.0";
  return addr.includes(":") && !addr.includes("%") && !/^[0:]*$/.test(addr);
}
