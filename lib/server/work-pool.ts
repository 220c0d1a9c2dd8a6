/**
 * One session's work connections: the pool of idle ones, the users (and UDP
 * apps) waiting for one, OpenWork requests to refill it, and the stream each
 * carries, one after another. A stream ends both ways (StreamEnd each way, then
 * WorkFree) before its connection goes back to the pool.
 */
import { encode, FrameReader, FrameType, hostPort, withMagic } from "../../protocol.ts";
import { log } from "../log.ts";
import type { AppCounters } from "../metrics/counters.ts";
import { Deadlines } from "../net/deadlines.ts";
import { chain, type Endpoint } from "../net/endpoint.ts";
import { holdUntilNextPoll } from "../net/hold.ts";
import { Stream, type StreamOwner } from "../net/stream.ts";
import { sockets } from "../net/sockets.ts";
import type { PublicApp } from "./apps/app.ts";
import { idleWork, idleWorkRoom, PoolDemand } from "./pool-demand.ts";
import type { ServerSettings } from "./settings.ts";

/** A work-connection request the client has not answered within this time is assumed lost and asked again. */
export const WORK_REQUEST_TIMEOUT_MS = 5_000;
/** Most work connections asked for in one OpenWork frame. */
export const MAX_WORK_REQUEST = 64;
/**
 * Work connections back from finished streams that the idle pool keeps beyond its target (pool-demand.ts), up to poolSize + this:
 * under steady load they serve the next users (closing them would mean dialing again).
 * A stream holds its connection until the client's WorkFree, so 50 users at a time kept
 * about 160 connections busy or idle: with 64 here, bursts of returns overflowed the pool
 * while other users waited for new dials (about 700 closed and 700 dialed a second).
 * Each idle connection costs about 4 KiB on either side; the sweep trims them after 30 s.
 * None are kept beyond the target while the server's sockets are over half its file limit,
 * nor any beyond the idle-work budget shared by all groups (IDLE_WORK_SHARE).
 */
export const EXTRA_IDLE_WORK = 256;
/** An idle work connection beyond the pool's target unused this long is closed: the load that needed it has gone. */
export const IDLE_WORK_TIMEOUT_MS = 30_000;

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
  stream: UserStream | null;
  /** When it last went into the pool (performance.now()). */
  idleSince: number;
}

/** A user's stream on a work connection: the shared stream, and what only the server tracks of it. */
class UserStream extends Stream {
  /** The client's WorkAck arrived: the two are piped. */
  acked = false;
  /** The byte count of a StreamEnd that came before the ack; -1 if none. */
  downBytes = -1;
  /** The client said WorkFree. */
  freed = false;

  constructor(
    owner: StreamOwner,
    readonly w: Work,
    user: Endpoint,
    app: string,
  ) {
    super(owner, w.ep, user, w.seq, app);
  }
}

/** What the pool needs from its session. */
export interface PoolHost {
  /** The group's name, for logs. */
  readonly groupName: string;
  /** The session's control connection (OpenWork and StreamEnd go there). */
  readonly control: Endpoint;
  /** The server's settings (pool size, timeouts, limits). */
  readonly settings: ServerSettings;
  /** The counters of one of the group's apps. */
  stats(app: string): AppCounters;
  /** The app named `name`, while it is served. */
  app(name: string): PublicApp | undefined;
}

/** The work connections of one session. */
export class WorkPool implements StreamOwner {
  readonly nearName = "user";
  /** Work connections taken in (authenticated hellos) and streams started on one that came back from an earlier stream. */
  readonly counts = { workOpened: 0, workReused: 0, workFreed: 0 };
  #pool: Work[] = [];
  /** Every open work connection by sequence number. */
  #works = new Map<number, Work>();
  #waiting: WaitingUser[] = [];
  /** Apps that keep a work connection (UDP) and have none, in the order they asked. */
  #udpWaiting: PublicApp[] = [];
  /** Work connections asked for and not yet arrived (counted in the shared idleWork too: use #setRequested). */
  #requested = 0;
  #requestedAt = 0;
  readonly #demand = new PoolDemand();
  #ended = false;
  #started = false;
  #retryTimer: Timer | null = null;
  /** Users waiting for a work connection are closed after userConnTimeout. */
  readonly #waitDeadlines: Deadlines<WaitingUser>;
  /** A pooled connection whose path died silently would never answer StartWork: its user is cut after userConnTimeout. */
  readonly #ackDeadlines: Deadlines<UserStream>;
  readonly #idleData: (ep: Endpoint) => void;

  constructor(readonly host: PoolHost) {
    this.#waitDeadlines = new Deadlines(host.settings.userConnTimeoutMs, (w) => this.#dropWaiting(w, "no work connection within userConnTimeout"));
    this.#ackDeadlines = new Deadlines(host.settings.userConnTimeoutMs, (s) => {
      log.warn("no answer on a work connection in time; closing the user", { group: this.host.groupName, app: s.app });
      s.reset();
    });
    // One set of functions per session, not per stream.
    this.#idleData = (ep) => {
      log.warn("data on an idle work connection; closing it", { group: this.host.groupName });
      ep.destroy();
    };
  }

  /** Idle work connections in the pool. */
  get pooled(): number {
    return this.#pool.length;
  }

  /** Idle work connections this session keeps now (QUIET_POOL when quiet, up to poolSize when busy). */
  get target(): number {
    return this.#demand.target(this.host.settings.poolSize, performance.now());
  }

  /** Takes the most recently pooled idle connection (the oldest stay at the start, where trimIdle finds them). */
  #take(): Work | undefined {
    const w = this.#pool.pop();
    if (w) idleWork.pooled--;
    return w;
  }

  /** Removes `count` idle connections from the start of the pool (the longest idle). */
  #takeOldest(count: number): Work[] {
    const taken = this.#pool.splice(0, count);
    idleWork.pooled -= taken.length;
    return taken;
  }

  #setRequested(n: number): void {
    idleWork.requested += n - this.#requested;
    this.#requested = n;
  }

  /** Starts serving after login: fills the pool. */
  start(): void {
    this.#started = true;
    this.#refill();
  }

  /** A frame from the client arrived: refill if the pool ran low meanwhile. */
  touch(): void {
    this.#refill();
  }

  /** An app that keeps a work connection for good (UDP) needs one: the next one goes to it. */
  wantWork(app: PublicApp): void {
    if (this.#ended || this.#udpWaiting.includes(app)) return;
    const work = this.#take();
    if (work) {
      this.#bindApp(work, app);
      return this.#refill();
    }
    this.#udpWaiting.push(app);
    this.#refill();
  }

  /** Binds a work connection to an app for good: StartWork, then the app's own frames both ways. */
  #bindApp(w: Work, app: PublicApp): void {
    const start = encode({ type: FrameType.StartWork, app: app.record.name, userAddr: "", publicAddr: "" });
    w.ep.send(w.greeted ? start : withMagic(start));
    w.greeted = true;
    app.bindWork!(w.ep, w.reader);
  }

  /** An app is no longer served: its waiting users are closed, and it waits for no work connection. */
  dropApp(name: string, app: PublicApp): void {
    this.#udpWaiting = this.#udpWaiting.filter((u) => u !== app);
    for (const w of this.#waiting.filter((w) => w.app === name)) this.#dropWaiting(w, "app removed");
  }

  /** A user of a TCP app, past its checks: a pooled work connection at once, or a place in the queue. */
  acceptUser(user: Endpoint, app: string): void {
    if (this.#ended || !this.host.app(app)) return user.reset();
    this.#demand.started(performance.now());
    const work = this.#take();
    if (work) {
      this.#startStream(work, user, app);
      this.#refill();
      return;
    }
    // Hold the user's bytes in the kernel until a work connection is bound.
    user.pause();
    if (this.#waiting.length >= this.host.settings.maxPendingUsers) {
      this.host.stats(app).queueFull++;
      log.warn("too many users waiting for a work connection; refusing", { group: this.host.groupName, app, limit: this.host.settings.maxPendingUsers });
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
    log.warn("user closed", { group: this.host.groupName, app: w.app, reason: why });
    w.user.reset();
  }

  /** Sends StartWork, relays the user's bytes at once, and joins both ways when the client acknowledges. */
  #startStream(w: Work, user: Endpoint, app: string): void {
    const work = w.ep;
    const sock = user.socket;
    // Both ends of the user's connection: the client logs the first and, for an app with proxyProtocol, tells the app both.
    const userAddr = sock ? hostPort(sock.remoteAddress, sock.remotePort) : "";
    const publicAddr = this.host.app(app)?.publicAddr ?? (sock ? hostPort(sock.localAddress, sock.localPort) : "");
    // StartWork (with MAGIC on a new connection) leaves with the user's first bytes when
    // those come within a loop turn, as they do for a user who speaks first.
    const start = encode({ type: FrameType.StartWork, app, userAddr, publicAddr });
    holdUntilNextPoll(work, w.greeted ? start : withMagic(start));
    if (w.greeted) this.counts.workReused++;
    w.greeted = true;
    const s = new UserStream(this, w, user, app);
    w.stream = s;
    this.#ackDeadlines.add(s);
    user.peer = work;
    user.resume();
    work.onData = (ep, chunk) => {
      const reader = w.reader;
      reader.push(chunk);
      const res = reader.next();
      if (!res) return;
      this.#ackDeadlines.delete(s);
      if (!res.ok || res.msg.type !== FrameType.WorkAck) {
        log.warn("bad answer on a work connection", { group: this.host.groupName, app, error: res.ok ? "unexpected frame" : res.error.message });
        user.reset();
        return ep.destroy();
      }
      if (!res.msg.ok) {
        log.warn("local app refused the connection", { group: this.host.groupName, app, reason: res.msg.message });
        user.reset();
        return ep.destroy();
      }
      s.acked = true;
      s.watchWork();
      ep.limitBy(this.host.app(app)?.downLimit ?? null);
      ep.pipe(user, reader.rest());
      if (s.downBytes >= 0 && ep.peer === user) s.endAfter(s.downBytes);
    };
  }

  // StreamOwner: how the server's streams tell their ends, and what becomes of a finished one's work connection.
  fields(s: Stream): Record<string, unknown> {
    return { group: this.host.groupName, app: s.app };
  }

  tellEnd(s: Stream, bytes: number): boolean {
    holdUntilNextPoll(this.host.control, encode({ type: FrameType.StreamEnd, seq: s.seq, bytes }));
    return true;
  }

  /** Both directions ended: the work connection waits for WorkFree, or closes. */
  finished(stream: Stream): void {
    const s = stream as UserStream; // every stream of this pool is one
    const w = s.w;
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

  /** The client's StreamEnd: its direction of the stream on work connection `seq` ended after `bytes` bytes. */
  streamEnd(seq: number, bytes: number): void {
    const s = this.#works.get(seq)?.stream;
    if (!s || s.inEnded) return; // closed meanwhile
    if (!s.acked) s.downBytes = bytes;
    else s.endAfter(bytes);
  }

  /** The client's WorkFree: it has every byte of the stream on `seq` and has sent all of its own. */
  workFree(seq: number): void {
    const w = this.#works.get(seq);
    if (!w) return; // closed meanwhile
    const s = w.stream;
    if (!s || !s.outEnded) {
      if (s) return s.broken("work-free before the stream ended");
      log.warn("work-free for an idle work connection; closing it", { group: this.host.groupName });
      return w.ep.destroy();
    }
    s.freed = true;
    this.counts.workFreed++;
    if (s.inEnded) this.#reuse(w);
  }

  /** Takes an authenticated work connection into the pool, or straight to a waiting user. */
  addWork(ep: Endpoint, reader: FrameReader, seq: number): void {
    if (this.#requested > 0) this.#setRequested(this.#requested - 1);
    if (this.#ended) return ep.destroy();
    this.counts.workOpened++;
    const w: Work = { ep, seq, reader, greeted: false, stream: null, idleSince: 0 };
    this.#works.set(seq, w);
    // A stream's end is its StreamEnd count: a FIN alone (a killed client) resets the user.
    ep.countedEnd = true;
    ep.onClose = (_ep, aborted) => this.#workClosed(w, aborted);
    this.#offer(w);
  }

  /** An idle work connection goes to a waiting UDP app or user, or to the pool. */
  #offer(w: Work): void {
    const app = this.#udpWaiting.shift();
    if (app) return this.#bindApp(w, app);
    const waiting = this.#waiting.shift();
    if (waiting) {
      this.#waitDeadlines.delete(waiting);
      return this.#startStream(w, waiting.user, waiting.app);
    }
    // Beyond the target, a connection is kept only while the server has descriptors to spare: one group's
    // spike must not hold the sockets that other groups' users need. None at all beyond the shared budget.
    const now = performance.now();
    const limit = sockets.open > sockets.max / 2 ? this.#demand.target(this.host.settings.poolSize, now) : this.host.settings.poolSize + EXTRA_IDLE_WORK;
    if (this.#pool.length >= limit || idleWorkRoom() < 1) return w.ep.destroy();
    // Taken from the end: the oldest stay at the start, where trimIdle finds them.
    w.idleSince = now;
    this.#pool.push(w);
    idleWork.pooled++;
    w.ep.onData = this.#idleData;
  }

  #workClosed(w: Work, aborted: boolean): void {
    this.#works.delete(w.seq);
    const i = this.#pool.indexOf(w);
    if (i >= 0) {
      this.#pool.splice(i, 1);
      idleWork.pooled--;
      return this.#refill();
    }
    const s = w.stream;
    if (!s || s.done) return;
    // Until the ack joins them, the relay does not know they are a pair: a work connection lost now resets the
    // user (who may have sent bytes already). Once joined, the relay resets the user with it.
    if (!s.acked) {
      this.#ackDeadlines.delete(s);
      s.near.reset();
    }
    log.warn("stream reset: its work connection closed before the stream ended", { group: this.host.groupName, app: s.app, how: aborted ? "reset" : "closed" });
  }

  /** Asks the client for enough work connections to fill the pool to its target and serve every waiting user. */
  #refill(): void {
    // Not before LoginOk: the client can open work connections only once it knows the session id.
    if (this.#ended || !this.#started) return;
    const now = performance.now(); // monotonic: a wall-clock step back must not stall lost requests
    if (this.#requested > 0 && now - this.#requestedAt > this.host.settings.workRequestTimeoutMs) this.#setRequested(0);
    const target = this.#demand.target(this.host.settings.poolSize, now);
    // Refill in batches once the pool is half spent (sooner when someone waits): the client's dials
    // and our hellos then stay off the path of most new streams.
    const waiting = this.#waiting.length + this.#udpWaiting.length;
    if (waiting === 0 && this.#pool.length + this.#requested > target / 2) return;
    // While someone waits, look again after the request timeout even if no frame arrives meanwhile.
    if (waiting > 0 && !this.#retryTimer) {
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = null;
        this.#refill();
      }, this.host.settings.workRequestTimeoutMs + 1);
    }
    const want = target + waiting - this.#pool.length - this.#requested;
    // Waiting users are served whatever the budget; idle connections beyond them only within it.
    const forUsers = Math.max(0, waiting - this.#requested);
    const count = Math.min(want, MAX_WORK_REQUEST, forUsers + Math.max(0, idleWorkRoom()));
    if (count <= 0) return;
    this.#setRequested(this.#requested + count);
    this.#requestedAt = now;
    this.host.control.send(encode({ type: FrameType.OpenWork, count }));
  }

  /**
   * Closes idle work connections beyond the target that have not been used for IDLE_WORK_TIMEOUT_MS,
   * and, while the process is over its idle-work budget (users took the descriptors), the longest idle.
   */
  trimIdle(now = performance.now()): void {
    const target = this.#demand.target(this.host.settings.poolSize, now);
    let n = 0;
    while (this.#pool.length - n > target && now - this.#pool[n]!.idleSince > IDLE_WORK_TIMEOUT_MS) n++;
    n = Math.max(n, Math.min(this.#pool.length, -idleWorkRoom()));
    for (const w of this.#takeOldest(n)) w.ep.destroy();
  }

  /** The session ended: no more work connections; idle ones close; streams go on, but ends not yet told can no longer be. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#setRequested(0);
    for (const w of [...this.#waiting]) this.#dropWaiting(w, "session ended");
    for (const w of this.#takeOldest(this.#pool.length)) w.ep.destroy();
    // Streams go on carrying bytes (an interactive session outlives a lost control connection), but an end not
    // told by now can never be: such a direction ends with a reset (README: "How a stream ends").
    for (const w of [...this.#works.values()]) {
      const s = w.stream;
      if (!s) continue;
      if (s.done) {
        w.ep.endWhenFlushed(); // finished, waiting for a WorkFree that cannot come
        continue;
      }
      s.noReuse = true;
    }
  }
}
