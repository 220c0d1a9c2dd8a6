/**
 * The client's work connections: dialed when the server asks (OpenWork), each
 * carrying one stream after another to a local app it dials for the user, with
 * the stream's ends told on the control connection (StreamEnd, WorkFree).
 */
import {
  encode,
  FrameReader,
  FrameType,
  proxyHeader,
  withMagic,
  workProof,
  type ProxyEnd,
} from "../../protocol.ts";
import { parseHostPort } from "../addr.ts";
import type { ClientApp, ClientConfig } from "../config/schema.ts";
import { log } from "../log.ts";
import { Deadlines } from "../net/deadlines.ts";
import { chain, Endpoint, type Counters } from "../net/endpoint.ts";
import { holdUntilNextPoll } from "../net/hold.ts";
import { Stream, type StreamOwner } from "../net/stream.ts";
import { KEEPALIVE_MS, relayHandler } from "../net/sockets.ts";
import { UdpLocal, type UdpCounters } from "./udp.ts";

/** How long dialing a local app may take before the user is told it is unreachable. */
export const LOCAL_CONNECT_TIMEOUT_MS = 5_000;
/**
 * Connects to one local app in flight at once, abandoned ones included: Bun cannot cancel a connect,
 * so one given up after LOCAL_CONNECT_TIMEOUT_MS keeps its descriptor until the kernel gives up
 * (about 2 minutes for a local app that drops SYNs). Beyond this, that app's users are refused at
 * once; counted per app, so one app that swallows connects does not starve the others.
 */
export const MAX_LOCAL_DIALS = 1024;
/** Work connections being dialed at once; the server asks in batches, this caps a runaway. */
export const MAX_WORK_DIALS = 256;
/** Work connections dialed per event-loop turn: a refill batch is spread over turns, so no single stream in flight absorbs all of its dials. */
export const DIALS_PER_TURN = 2;
/**
 * Most work connections idle, being dialed or wanted at once. A server needs at most
 * poolSize + 256 idle ones plus one per waiting user (1,288 with the defaults), so this
 * only stops a server that keeps asking from making the client hold sockets without end;
 * the server re-asks for lost ones after its request timeout.
 */
export const MAX_WANTED_WORK = 4096;
/**
 * Longest a successful WorkAck waits for the app's first bytes, so that both
 * leave in one write; then it is sent alone. Far below the server's wait for
 * it (userConnTimeout, 10 s by default).
 */
export const ACK_HOLD_MS = 20;
/** The answer to StartWork when the local app accepted the connection. */
const ACK_OK = encode({ type: FrameType.WorkAck, ok: true, message: "" });

/** A work connection of the current session, idle or carrying a stream. */
interface Work {
  readonly ep: Endpoint;
  /** Its WorkHello sequence number: how StreamEnd and WorkFree name it. */
  readonly seq: number;
  readonly reader: FrameReader;
  /** Parses the next StartWork while idle. */
  readonly idle: (ep: Endpoint, chunk: Uint8Array) => void;
  stream: AppStream | null;
  /** A StreamEnd that came before its StartWork; -1 if none. */
  upBytes: number;
}

/** A stream between a work connection and the local app. */
class AppStream extends Stream {
  constructor(
    owner: StreamOwner,
    readonly w: Work,
    local: Endpoint,
    app: string,
  ) {
    super(owner, w.ep, local, w.seq, app);
  }
}

/** A local app as configured, with its address parsed. */
export type LocalApp = ClientApp & { host: string; port: number };

/** What the work connections need from the connector around them. */
export interface WorkHost {
  readonly config: ClientConfig;
  readonly apps: ReadonlyMap<string, LocalApp>;
  readonly token: string;
  /** The control connection while logged in (StreamEnd and WorkFree go there); null otherwise. */
  control(): Endpoint | null;
  /** Dials the server's control port for `ep`. */
  dial(ep: Endpoint): void;
}

/** Limits that tests lower; production uses the defaults. */
export interface WorkLimits {
  readonly localConnectTimeoutMs?: number;
  readonly maxWorkDials?: number;
  readonly maxWantedWork?: number;
  readonly maxLocalDials?: number;
}

/** The work connections of one connector, across its sessions. */
export class WorkConnections implements StreamOwner {
  readonly nearName = "app";
  #sessionId: Uint8Array | null = null;
  #stopped = false;
  #dials = 0;
  /** Sequence number of the next work connection of this session. */
  #workSeq = 0;
  /** Work connections holding their WorkAck; release() does nothing once the ack has gone with the app's bytes. */
  readonly #heldAcks = new Deadlines<Endpoint>(ACK_HOLD_MS, (work) => work.release());
  /** Local dials still connecting, abandoned after LOCAL_CONNECT_TIMEOUT_MS. */
  readonly #localDials: Deadlines<Endpoint>;
  /** Work connections the server asked for that are not dialed yet. */
  #wantedWork = 0;
  #pumpScheduled = false;
  #idleWork = new Set<Endpoint>();
  #streams = new Set<Endpoint>();
  /** Work connections of the current session by sequence number (sequence numbers restart with each session). */
  #works = new Map<number, Work>();
  #udp = new Map<string, UdpLocal>();
  readonly #maxWorkDials: number;
  readonly #maxWantedWork: number;
  readonly #maxLocalDials: number;
  /** Streams and bytes per TCP app (bytesIn: read from the local app; bytesOut: written to it). */
  readonly #traffic = new Map<string, Counters>();
  /** Connects to each local app the kernel has not finished (see MAX_LOCAL_DIALS). */
  readonly #localConnecting = new Map<string, number>();

  constructor(
    readonly host: WorkHost,
    limits: WorkLimits = {},
  ) {
    this.#maxWorkDials = limits.maxWorkDials ?? MAX_WORK_DIALS;
    this.#maxWantedWork = limits.maxWantedWork ?? MAX_WANTED_WORK;
    this.#maxLocalDials = limits.maxLocalDials ?? MAX_LOCAL_DIALS;
    this.#localDials = new Deadlines<Endpoint>(limits.localConnectTimeoutMs ?? LOCAL_CONNECT_TIMEOUT_MS, (local) => local.destroy());
  }

  /** Idle work connections, those being dialed included (the server decides how many: pool-demand.ts). */
  get idle(): number {
    return this.#idleWork.size;
  }

  /** A session began (LoginOk): work connections prove `sessionId`, numbered from 0. */
  start(sessionId: Uint8Array): void {
    this.#sessionId = sessionId;
    this.#workSeq = 0;
  }

  /** The server's OpenWork: dial `count` more, within MAX_WANTED_WORK. */
  want(count: number): void {
    // Dials beyond MAX_WORK_DIALS wait their turn rather than being dropped (the server counts on them).
    // Idle work connections include those being dialed.
    this.#wantedWork = Math.min(this.#wantedWork + count, Math.max(0, this.#maxWantedWork - this.#idleWork.size));
    this.#pumpWork();
  }

  /** The control connection is lost: no more dials for this session; open streams go on. */
  lost(): void {
    this.#sessionId = null;
    this.#wantedWork = 0;
    // An idle connection may still be sending the last bytes of a finished stream: they go out first.
    for (const w of this.#idleWork) w.endWhenFlushed();
    this.#idleWork.clear();
    // Streams go on carrying bytes, but an end not told by now can never be: such a direction ends with a reset.
    for (const w of this.#works.values()) if (w.stream) w.stream.noReuse = true;
    this.#works = new Map();
  }

  /** Stops for good: closes idle work connections and streams. */
  stop(): void {
    this.#stopped = true;
    this.#heldAcks.clear();
    this.#localDials.clear();
    // No dial may start after this: a pump queued for the next turn, or a dial's close, would open one.
    this.#sessionId = null;
    this.#wantedWork = 0;
    for (const w of [...this.#idleWork, ...this.#streams]) w.destroy();
  }

  #pumpWork(): void {
    if (this.#stopped) return;
    for (let i = 0; i < DIALS_PER_TURN && this.#wantedWork > 0 && this.#dials < this.#maxWorkDials && this.#sessionId; i++) {
      this.#wantedWork--;
      this.#openWork();
    }
    if (this.#wantedWork > 0 && this.#dials < this.#maxWorkDials && !this.#pumpScheduled) {
      this.#pumpScheduled = true;
      setImmediate(() => {
        this.#pumpScheduled = false;
        this.#pumpWork();
      });
    }
  }

  #openWork(): void {
    const sessionId = this.#sessionId;
    if (!sessionId) return;
    const seq = this.#workSeq++;
    this.#dials++;
    const ep = new Endpoint();
    const reader = new FrameReader();
    let counted = true;
    const uncount = () => {
      if (counted) {
        this.#dials--;
        counted = false;
        this.#pumpWork();
      }
    };
    const idle = (e: Endpoint, chunk: Uint8Array) => {
      reader.push(chunk);
      for (let res = reader.next(); res; res = reader.next()) {
        if (!res.ok) {
          log.warn("protocol error on a work connection", { error: res.error.message });
          return e.destroy();
        }
        const msg = res.msg;
        if (msg.type === FrameType.StartWork) {
          this.#idleWork.delete(e);
          this.#streams.add(e);
          return this.#startWork(w, msg.app, msg.userAddr, msg.publicAddr, reader.rest());
        } else {
          if (msg.type === FrameType.Error) log.debug("work connection refused", { reason: msg.message });
          return e.destroy();
        }
      }
    };
    const w: Work = { ep, seq, reader, idle, stream: null, upBytes: -1 };
    // A stream's end is its StreamEnd count: a FIN alone (a killed server) resets the local app's connection.
    ep.countedEnd = true;
    this.#works.set(seq, w);
    this.#idleWork.add(ep);
    ep.onOpen = (e) => {
      uncount();
      e.socket?.setKeepAlive?.(true, KEEPALIVE_MS);
      // No challenge to wait for: the proof covers this connection's sequence number, which the server takes once.
      e.send(withMagic(encode({ type: FrameType.WorkHello, sessionId, seq, proof: workProof(this.host.token, sessionId, seq) })));
    };
    ep.onClose = (e, aborted) => {
      uncount();
      const s = w.stream;
      if (s && !s.done) log.warn("stream reset: its work connection closed before the stream ended", { app: s.app, how: aborted ? "reset" : "closed" });
      this.#idleWork.delete(e);
      this.#streams.delete(e);
      if (this.#works.get(seq) === w) this.#works.delete(seq);
    };
    ep.onData = idle;
    this.host.dial(ep);
  }

  /** Dials the local app for a user; the user's first bytes (`pending`) wait in the local side's queue. */
  #startWork(w: Work, appName: string, userAddr: string, publicAddr: string, pending: Uint8Array): void {
    const work = w.ep;
    const app = this.host.apps.get(appName);
    if (!app) {
      work.send(encode({ type: FrameType.WorkAck, ok: false, message: `unknown app "${appName}"` }));
      return work.endWhenFlushed();
    }
    if (app.type === "udp") return this.#startUdp(work, app, pending);
    if ((this.#localConnecting.get(appName) ?? 0) >= this.#maxLocalDials) {
      log.warn("too many connects to the local app unfinished; refusing a user", { app: appName, localAddr: app.localAddr, user: userAddr, limit: this.#maxLocalDials });
      work.send(encode({ type: FrameType.WorkAck, ok: false, message: `too many connects to local app ${app.localAddr} unfinished (${this.#maxLocalDials})` }));
      return work.endWhenFlushed();
    }
    const local = new Endpoint();
    local.stats = this.traffic(appName);
    const s = new AppStream(this, w, local, appName);
    s.noReuse = this.#works.get(w.seq) !== w;
    w.stream = s;
    work.onData = null;
    s.watchWork();
    work.peer = local;
    // Queued before the user's bytes: the app reads it first, whenever its connection opens.
    if (app.proxyProtocol) local.write(proxyHeader(app.proxyProtocol, endOf(userAddr), endOf(publicAddr)), null);
    work.forward(pending);
    if (w.upBytes >= 0) {
      const bytes = w.upBytes;
      w.upBytes = -1;
      if (!s.endAfter(bytes)) return;
    }
    let opened = false;
    this.#localDials.add(local);
    local.onOpen = (l) => {
      opened = true;
      this.#localDials.delete(l);
      this.#holdAck(work);
      l.onOpen = null;
      l.onClose = localClosed; // joined: from here the relay closes each side with the other
      l.stats!.connections++;
      l.pipe(work);
      log.debug("stream open", { app: appName, user: userAddr });
    };
    local.onClose = (l) => {
      this.#localDials.delete(l);
      if (opened || work.closed) return; // joined, or the work connection went first (logged there)
      log.warn("local app unreachable", { app: appName, localAddr: app.localAddr, user: userAddr });
      work.peer = null;
      work.onEnd = null;
      w.stream = work.stream = null; // no stream began
      work.send(encode({ type: FrameType.WorkAck, ok: false, message: `local app ${app.localAddr} is unreachable` }));
      work.endWhenFlushed();
    };
    const counts = this.#localConnecting;
    counts.set(appName, (counts.get(appName) ?? 0) + 1);
    const settled = () => {
      const n = counts.get(appName)! - 1;
      if (n > 0) counts.set(appName, n);
      else counts.delete(appName);
    };
    try {
      // Settles when the kernel is done with the connect (open or error), however long after our own timeout.
      Bun.connect<Endpoint>({ hostname: app.host, port: app.port, data: local, allowHalfOpen: true, socket: dialHandler }).then(settled, settled);
    } catch (err) {
      settled(); // a throw before any connect (not seen with checked addresses): nothing is in flight
      log.warn("cannot connect to the local app", { app: appName, localAddr: app.localAddr, error: (err as Error).message });
      local.destroy();
    }
  }

  /** The traffic counters of app `name`, created at zero on first use. */
  traffic(name: string): Counters {
    let c = this.#traffic.get(name);
    if (!c) this.#traffic.set(name, (c = { connections: 0, bytesIn: 0, bytesOut: 0 }));
    return c;
  }

  /** The server's StreamEnd: the user's bytes on work connection `seq` end after `bytes`. */
  streamEnd(seq: number, bytes: number): void {
    const w = this.#works.get(seq);
    if (!w) return; // closed meanwhile
    const s = w.stream;
    if (!s) w.upBytes = bytes; // before its StartWork: applied when that comes
    else if (!s.inEnded) s.endAfter(bytes);
  }

  // StreamOwner: how the client's streams tell their ends, and what becomes of a finished one's work connection.
  fields(s: Stream): Record<string, unknown> {
    return { app: s.app };
  }

  tellEnd(s: Stream, bytes: number): boolean {
    const control = this.host.control();
    if (!control) return false;
    holdUntilNextPoll(control, encode({ type: FrameType.StreamEnd, seq: s.seq, bytes }));
    return true;
  }

  /** Both directions ended: the work connection says WorkFree and waits for the next StartWork, or closes. */
  finished(stream: Stream): void {
    const w = (stream as AppStream).w; // every stream of this object is one
    const work = w.ep;
    w.stream = null;
    const control = this.host.control();
    if (stream.noReuse || work.readEnded || !control || this.#works.get(w.seq) !== w) return work.endWhenFlushed();
    holdUntilNextPoll(control, encode({ type: FrameType.WorkFree, seq: w.seq }));
    w.reader.reopen();
    work.onData = w.idle;
    this.#streams.delete(work);
    this.#idleWork.add(work);
  }

  /** Holds a successful WorkAck until the app's first bytes, a FIN, or ACK_HOLD_MS. */
  #holdAck(work: Endpoint): void {
    work.hold(ACK_OK);
    this.#heldAcks.add(work);
  }

  /** Serves a UDP app on this work connection: datagram frames in, one local socket per public peer. */
  #startUdp(work: Endpoint, app: ClientApp & { host: string; port: number }, pending: Uint8Array): void {
    const udp = new UdpLocal(work, app, this.host.config.udpIdleTimeoutMs, this.host.config.udpMaxPeers, this.host.config.udpReceiveBuffer);
    this.#udp.set(app.name, udp);
    work.send(encode({ type: FrameType.WorkAck, ok: true, message: "" }));
    const feed = (ep: Endpoint, chunk: Uint8Array) => {
      const err = udp.push(chunk);
      if (err) {
        log.warn("bad datagram frame from server", { app: app.name, error: err.message });
        ep.destroy();
      }
    };
    work.onData = feed;
    work.onClose = chain(work.onClose, () => {
      udp.close();
      if (this.#udp.get(app.name) === udp) this.#udp.delete(app.name);
    });
    if (pending.length) feed(work, pending);
  }

  /** Counters of a UDP app's current work connection (peers, expiries, evictions, drops). */
  udpCounters(app: string): UdpCounters | undefined {
    return this.#udp.get(app)?.counters;
  }
}

/** A joined local connection closed: one stream fewer (one function for every stream). */
const localClosed = (local: Endpoint) => void local.stats!.connections--;

/** One handler for every socket the client dials. */
export const dialHandler = relayHandler();

/** An "ip:port" of StartWork as a PROXY header end; one that does not parse makes the header say "unknown". */
function endOf(addr: string): ProxyEnd {
  const hp = parseHostPort(addr);
  return hp ? { ip: hp.host, port: hp.port } : { ip: "", port: 0 };
}
