/**
 * A fault-injecting TCP proxy for tests: it sits between a Warren client and
 * its server and is commanded from the test.
 *
 * - `pass()`: forward everything (and heal any earlier fault).
 * - `delay(ms)`: deliver every chunk, FIN and RST `ms` later, in order.
 * - `blackhole()`: stop delivering anything in both directions without
 *   closing: sources are paused (bytes stay in the kernel, as with lost
 *   packets that TCP would retransmit), and new connections are accepted and
 *   held without dialing upstream. `pass()` releases all of it in order.
 * - `resetAll()`: RST both sides of every current connection.
 * - `closeAll()`: close both sides of every current connection (FIN).
 *
 * Each direction of a connection is an ordered queue of chunks, FINs and
 * RSTs, so a fault never reorders or drops bytes of a connection that
 * survives it. Queues are bounded: a source is paused above HIGH_WATER bytes.
 */
import net from "node:net";

/** Bytes queued in one direction before the proxy stops reading its source. */
const HIGH_WATER = 1024 * 1024;

/** What the proxy does with traffic right now. */
export type FaultMode = "pass" | "delay" | "blackhole";

type Item = { kind: "data"; at: number; chunk: Buffer } | { kind: "end"; at: number } | { kind: "reset"; at: number };

/** One direction of a proxied connection. */
class Lane {
  items: Item[] = [];
  bytes = 0;
  waitingDrain = false;
  timer: Timer | null = null;
  constructor(
    readonly src: () => net.Socket | null,
    readonly dst: () => net.Socket | null,
  ) {}
}

interface Pair {
  readonly id: number;
  readonly down: net.Socket;
  up: net.Socket | null;
  readonly toUp: Lane;
  readonly toDown: Lane;
  closed: number;
}

/** Counters the tests read. */
export interface ProxyStats {
  accepted: number;
  held: number;
  upstreamFailed: number;
  resets: number;
  closes: number;
}

/** The proxy. Create with `FaultProxy.start`. */
export class FaultProxy {
  #server: net.Server;
  #mode: FaultMode = "pass";
  #delayMs = 0;
  #pairs = new Set<Pair>();
  #nextId = 1;
  readonly stats: ProxyStats = { accepted: 0, held: 0, upstreamFailed: 0, resets: 0, closes: 0 };

  private constructor(
    readonly target: { host: string; port: number },
    server: net.Server,
  ) {
    this.#server = server;
  }

  /** Listens on an ephemeral loopback port and forwards to `target`. */
  static async start(target: { host?: string; port: number }, listenPort = 0): Promise<FaultProxy> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
    const proxy = new FaultProxy({ host: target.host ?? "127.0.0.1", port: target.port }, server);
    server.on("connection", (s) => proxy.#accept(s));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(listenPort, "127.0.0.1", () => resolve());
    });
    return proxy;
  }

  /** The port clients connect to. */
  get port(): number {
    return (this.#server.address() as net.AddressInfo).port;
  }

  /** Current mode. */
  get mode(): FaultMode {
    return this.#mode;
  }

  /** Connections currently proxied (including held ones). */
  get connections(): number {
    return this.#pairs.size;
  }

  /** Local ports of the upstream sockets (what the server sees as the client's port). */
  upstreamPorts(): number[] {
    return [...this.#pairs].flatMap((p) => (p.up?.localPort ? [p.up.localPort] : []));
  }

  /** Forwards everything; releases held connections and queued bytes. */
  pass(): void {
    this.#mode = "pass";
    this.#delayMs = 0;
    this.#wakeAll();
  }

  /** Delays every later chunk, FIN and RST by `ms`. */
  delay(ms: number): void {
    this.#mode = "delay";
    this.#delayMs = ms;
    this.#wakeAll();
  }

  /** Delivers nothing, closes nothing. */
  blackhole(): void {
    this.#mode = "blackhole";
    for (const p of this.#pairs) {
      p.down.pause();
      p.up?.pause();
    }
  }

  /** Sends RST to both sides of every current connection. */
  resetAll(): void {
    for (const p of [...this.#pairs]) {
      this.stats.resets++;
      this.#drop(p, true);
    }
  }

  /** Closes both sides of every current connection. */
  closeAll(): void {
    for (const p of [...this.#pairs]) {
      this.stats.closes++;
      this.#drop(p, false);
    }
  }

  /** Stops listening and resets every connection. */
  async close(): Promise<void> {
    this.resetAll();
    await new Promise<void>((r) => this.#server.close(() => r()));
  }

  #accept(down: net.Socket): void {
    this.stats.accepted++;
    const pair: Pair = {
      id: this.#nextId++,
      down,
      up: null,
      toUp: new Lane(
        () => pair.down,
        () => pair.up,
      ),
      toDown: new Lane(
        () => pair.up,
        () => pair.down,
      ),
      closed: 0,
    };
    this.#pairs.add(pair);
    this.#wire(pair, down, pair.toUp);
    if (this.#mode === "blackhole") this.stats.held++;
    else this.#dial(pair);
    this.#pump(pair.toUp);
  }

  #dial(pair: Pair): void {
    if (pair.up || pair.down.destroyed) return;
    const up = net.connect({ host: this.target.host, port: this.target.port, allowHalfOpen: true });
    pair.up = up;
    up.on("connect", () => {
      this.#pump(pair.toUp);
      this.#pump(pair.toDown);
    });
    this.#wire(pair, up, pair.toDown);
  }

  /** Reads from `s` into `lane` (the direction away from `s`), and handles its end. */
  #wire(pair: Pair, s: net.Socket, lane: Lane): void {
    let errored = false;
    s.on("data", (chunk: Buffer) => this.#enqueue(pair, lane, { kind: "data", at: 0, chunk }));
    s.on("end", () => this.#enqueue(pair, lane, { kind: "end", at: 0 }));
    s.on("error", (err: NodeJS.ErrnoException) => {
      errored = true;
      if (err.code === "ECONNREFUSED" || err.code === "ECONNRESET" || err.code === "EPIPE") {
        if (s === pair.up && err.code === "ECONNREFUSED") this.stats.upstreamFailed++;
        this.#enqueue(pair, lane, { kind: "reset", at: 0 });
      } else this.#enqueue(pair, lane, { kind: "end", at: 0 });
    });
    s.on("drain", () => {
      const into = s === pair.up ? pair.toUp : pair.toDown;
      into.waitingDrain = false;
      this.#pump(into);
    });
    s.on("close", () => {
      if (!errored) this.#enqueue(pair, lane, { kind: "end", at: 0 });
      if (++pair.closed >= 2 || (s === pair.down && !pair.up)) this.#forget(pair);
    });
  }

  #enqueue(pair: Pair, lane: Lane, item: Item): void {
    if (!this.#pairs.has(pair)) return;
    const last = lane.items[lane.items.length - 1];
    // One FIN or RST per direction is enough; later ones change nothing.
    if (item.kind !== "data" && last && last.kind !== "data") return;
    item.at = performance.now() + (this.#mode === "delay" ? this.#delayMs : 0);
    lane.items.push(item);
    if (item.kind === "data") lane.bytes += item.chunk.length;
    this.#pump(lane);
  }

  #pump(lane: Lane): void {
    const dst = lane.dst();
    while (lane.items.length && this.#mode !== "blackhole" && dst && !lane.waitingDrain) {
      if (dst.connecting) break;
      const item = lane.items[0]!;
      const wait = item.at - performance.now();
      if (wait > 0) {
        if (!lane.timer)
          lane.timer = setTimeout(() => {
            lane.timer = null;
            this.#pump(lane);
          }, wait);
        break;
      }
      lane.items.shift();
      if (item.kind === "data") {
        lane.bytes -= item.chunk.length;
        if (!dst.destroyed && !dst.write(item.chunk)) lane.waitingDrain = true;
      } else if (item.kind === "end") {
        if (!dst.destroyed) dst.end();
      } else if (!dst.destroyed) dst.resetAndDestroy();
    }
    const src = lane.src();
    if (!src || src.destroyed) return;
    if (this.#mode === "blackhole" || lane.bytes > HIGH_WATER || lane.waitingDrain) src.pause();
    else src.resume();
  }

  #wakeAll(): void {
    for (const p of [...this.#pairs]) {
      if (!p.up) this.#dial(p);
      this.#pump(p.toUp);
      this.#pump(p.toDown);
    }
  }

  #drop(p: Pair, reset: boolean): void {
    this.#forget(p);
    for (const s of [p.down, p.up]) {
      if (!s || s.destroyed) continue;
      if (reset) s.resetAndDestroy();
      else {
        s.end();
        s.destroySoon();
      }
    }
  }

  #forget(p: Pair): void {
    if (!this.#pairs.delete(p)) return;
    for (const lane of [p.toUp, p.toDown]) {
      if (lane.timer) clearTimeout(lane.timer);
      lane.items = [];
      lane.bytes = 0;
    }
  }
}
