/**
 * The shared vhost ports. vhostHTTPPort: each connection is an HttpConn
 * (proxy.ts). vhostHTTPSPort: the ClientHello is read first (sni.ts); a name
 * an "https" app claims is passed through untouched, a name an "http" app
 * answers at and a configured certificate covers has its TLS ended here
 * (node:tls over the bytes already read: BUN-NOTES.md, "TLS at the edge"),
 * and any other name, or none, is refused with a TLS alert before any
 * certificate is shown.
 */
import type { Socket, TCPSocketListener } from "bun";
import { Duplex } from "node:stream";
import type { SecureContext, TLSSocket } from "node:tls";
import { MAX_CLIENT_HELLO_WIRE_BYTES, readClientHello, tlsAlert } from "../../http/sni.ts";
import { log } from "../../log.ts";
import { Endpoint, type Transport } from "../../net/endpoint.ts";
import { sockets } from "../../net/sockets.ts";
import { appDomains } from "../../registry/domains.ts";
import type { AppRecord } from "../../registry/types.ts";
import { HttpConn, type VhostSettings } from "./proxy.ts";
import type { VhostRouter } from "./router.ts";

/** TLS alert descriptions (RFC 8446 §6). */
const UNRECOGNIZED_NAME = 112;

/** A certificate the server ends TLS with, for the names it covers. */
export interface EdgeCertificate {
  readonly domains: readonly string[];
  readonly context: SecureContext;
}

/** What a vhost socket carries: the connection, or the bytes of a ClientHello being read. */
interface EdgeSock {
  ep: Endpoint;
  conn: HttpConn | null;
  hello: Uint8Array | null;
  timer: Timer | null;
  /** Set once TLS is ended here: the raw socket's events go to it. */
  tls: TlsBridge | null;
}

/** The vhost ports of one server, and what apps need of them (apps/http.ts, the API's URLs). */
export class Vhosts {
  httpPort = 0;
  httpsPort = 0;
  #listeners: TCPSocketListener<EdgeSock>[] = [];

  constructor(
    readonly router: VhostRouter,
    readonly settings: VhostSettings,
    readonly certificates: readonly EdgeCertificate[],
  ) {}

  /** Binds the ports asked for (0: off); throws naming the port that cannot be bound. */
  listen(bindAddr: string, httpPort: number, httpsPort: number, wantHttp: boolean, wantHttps: boolean): void {
    if (wantHttp) {
      const l = Bun.listen<EdgeSock>({ hostname: bindAddr, port: httpPort, exclusive: true, allowHalfOpen: true, socket: this.#handler(false) });
      this.#listeners.push(l);
      this.httpPort = l.port;
    }
    if (wantHttps) {
      const l = Bun.listen<EdgeSock>({ hostname: bindAddr, port: httpsPort, exclusive: true, allowHalfOpen: true, socket: this.#handler(true) });
      this.#listeners.push(l);
      this.httpsPort = l.port;
    }
  }

  stop(): void {
    for (const l of this.#listeners) l.stop(true);
    this.#listeners = [];
  }

  /** The URLs users reach an app at. */
  urls(rec: AppRecord): string[] {
    const out: string[] = [];
    const port = (p: number, def: number) => (p === def ? "" : `:${p}`);
    for (const d of appDomains(rec, this.router.subdomainHost)) {
      // A wildcard domain is shown as it is ("http://*.example.com/"); a certificate covers it if it covers any name under it.
      if (rec.type === "http" && this.httpPort) out.push(`http://${d}${port(this.httpPort, 80)}/`);
      if (this.httpsPort && (rec.type === "https" || this.certificateFor(d.replace(/^\*\./, "x.")))) out.push(`https://${d}${port(this.httpsPort, 443)}/`);
    }
    return out;
  }

  /** The certificate covering `name`: an exact domain first, then a one-label wildcard (as TLS clients match them). */
  certificateFor(name: string): SecureContext | null {
    const dot = name.indexOf(".");
    const wild = dot > 0 ? `*${name.slice(dot)}` : null;
    for (const c of this.certificates) if (c.domains.includes(name)) return c.context;
    for (const c of this.certificates) if (wild && c.domains.includes(wild)) return c.context;
    return null;
  }

  #handler(secure: boolean) {
    return {
      open: (s: Socket<EdgeSock>) => {
        if (sockets.open >= sockets.max) {
          sockets.refused++;
          return s.terminate();
        }
        sockets.open++;
        const ep = new Endpoint();
        ep.counted = true;
        ep.attach(s);
        s.data = { ep, conn: null, hello: null, timer: null, tls: null };
        if (!secure) s.data.conn = new HttpConn(ep, this.settings, false);
        else {
          // The ClientHello must come within the header timeout, like a request head.
          s.data.timer = setTimeout(() => s.terminate(), this.settings.headerTimeoutMs);
        }
      },
      data: (s: Socket<EdgeSock>, chunk: Uint8Array) => {
        const d = s.data;
        if (d.tls) return d.tls.fromNet(chunk);
        if (d.conn) return Endpoint.events.data(d.ep, chunk);
        this.#hello(s, chunk);
      },
      drain: (s: Socket<EdgeSock>) => {
        if (s.data.tls) return s.data.tls.drained();
        Endpoint.events.drain(s.data.ep);
      },
      end: (s: Socket<EdgeSock>) => {
        const d = s.data;
        if (d.tls) return d.tls.netEnded();
        d.ep.readEnded = true;
        if (d.conn) d.conn.userEnded();
        else s.end();
      },
      close: (s: Socket<EdgeSock>, err?: Error) => {
        const d = s.data;
        if (!d) return;
        if (d.timer) clearTimeout(d.timer);
        if (d.ep.counted) {
          d.ep.counted = false;
          sockets.open--;
        }
        if (d.tls) return d.tls.netClosed(!!err);
        Endpoint.events.closed(d.ep, !!err);
      },
      error: (s: Socket<EdgeSock>, err: Error) => {
        log.error("vhost: handler error", { error: err?.message ?? String(err) });
        s.terminate();
      },
    };
  }

  /** Gathers a ClientHello, then routes the connection by its server name. */
  #hello(s: Socket<EdgeSock>, chunk: Uint8Array): void {
    const d = s.data;
    const prior = d.hello;
    const buf = prior ? Buffer.concat([prior, chunk]) : chunk;
    const hello = readClientHello(buf.length > MAX_CLIENT_HELLO_WIRE_BYTES ? buf.subarray(0, MAX_CLIENT_HELLO_WIRE_BYTES) : buf);
    if (hello === null) {
      d.hello = buf;
      return;
    }
    if (d.timer) clearTimeout(d.timer);
    d.timer = null;
    d.hello = null;
    const from = `${s.remoteAddress}:${s.remotePort}`;
    if (typeof hello === "string") {
      log.debug("vhost: not a TLS ClientHello on the HTTPS port; closing", { from, error: hello });
      return void s.end();
    }
    const name = hello.serverName;
    const refuse = (why: string) => {
      log.debug("vhost: TLS connection refused", { from, serverName: name ?? "(none)", reason: why });
      d.ep.write(tlsAlert(UNRECOGNIZED_NAME), null);
      d.ep.endWhenFlushed();
    };
    if (!name) return refuse("no server name (SNI): the app cannot be told");
    const pass = this.router.https(name);
    if (pass.kind === "app") {
      const refusal = pass.target.admit(s.remoteAddress);
      if (refusal) return refuse(refusal.reason);
      d.conn = new HttpConn(d.ep, this.settings, true);
      return d.conn.passthrough(pass.target, buf);
    }
    if (pass.kind === "offline") return refuse("the app's tunnel is offline");
    const context = this.router.hasHttp(name) ? this.certificateFor(name) : null;
    if (!context) return refuse("no app with a certificate answers at this name");
    d.tls = new TlsBridge(s, d, buf, context, this.settings);
  }
}

/**
 * TLS ended here: the raw socket's bytes feed a node:tls server socket through a
 * small Duplex (the bytes already read first), and the clear text feeds an
 * HttpConn whose user endpoint writes into the TLS socket.
 */
class TlsBridge implements Transport {
  readonly #duplex: Duplex;
  readonly #tls: TLSSocket;
  readonly #user = new Endpoint();
  #pendingWrite: { rest: Uint8Array; cb: (err?: Error | null) => void } | null = null;
  #closed = false;

  constructor(
    private readonly raw: Socket<EdgeSock>,
    d: EdgeSock,
    first: Uint8Array,
    context: SecureContext,
    settings: VhostSettings,
  ) {
    const { TLSSocket } = require("node:tls") as typeof import("node:tls");
    this.#duplex = new Duplex({
      read: () => raw.resume(),
      write: (chunk: Uint8Array, _enc, cb) => {
        const n = raw.write(chunk);
        if (n === chunk.length) return cb();
        if (n < 0) return cb(new Error("connection closed"));
        this.#pendingWrite = { rest: chunk.subarray(n), cb };
      },
      final: (cb) => {
        raw.shutdown();
        cb();
      },
      destroy: (err, cb) => {
        if (!this.#closed) raw.terminate();
        cb(err);
      },
    });
    this.#duplex.push(first);
    this.#tls = new TLSSocket(this.#duplex as never, { isServer: true, secureContext: context, ALPNProtocols: ["http/1.1"] });
    const ep = this.#user;
    ep.attach(this);
    const conn = new HttpConn(ep, settings, true);
    d.conn = conn;
    this.#tls.on("data", (chunk: Uint8Array) => Endpoint.events.data(ep, chunk));
    this.#tls.on("drain", () => Endpoint.events.drain(ep));
    this.#tls.on("end", () => {
      ep.readEnded = true;
      conn.userEnded();
    });
    this.#tls.on("error", (err: Error) => log.debug("vhost: TLS error", { from: `${raw.remoteAddress}:${raw.remotePort}`, error: err.message }));
    this.#tls.on("close", (hadError: boolean) => Endpoint.events.closed(ep, hadError));
  }

  // The raw socket's events.
  fromNet(chunk: Uint8Array): void {
    if (!this.#duplex.push(chunk)) this.raw.pause();
  }
  drained(): void {
    const p = this.#pendingWrite;
    if (!p) return;
    const n = this.raw.write(p.rest);
    if (n < 0) return;
    if (n === p.rest.length) {
      this.#pendingWrite = null;
      p.cb();
    } else p.rest = p.rest.subarray(n);
  }
  netEnded(): void {
    this.#duplex.push(null);
  }
  netClosed(aborted: boolean): void {
    this.#closed = true;
    if (aborted) this.#tls.destroy(new Error("connection reset"));
    else this.#duplex.destroy();
  }

  // Transport of the clear-text side (the HttpConn's user endpoint).
  write(data: Uint8Array): number {
    if (this.#tls.destroyed) return -1;
    if (this.#tls.writableNeedDrain) return 0;
    this.#tls.write(data);
    return data.length;
  }
  pause(): void {
    this.#tls.pause();
  }
  resume(): void {
    this.#tls.resume();
  }
  shutdown(): void {
    this.#tls.end();
  }
  end(): void {
    this.#tls.end();
  }
  terminate(): void {
    this.#tls.destroy();
    this.raw.terminate();
  }
  get remoteAddress(): string {
    return this.raw.remoteAddress;
  }
  get remotePort(): number {
    return this.raw.remotePort;
  }
  get localAddress(): string {
    return this.raw.localAddress;
  }
  get localPort(): number {
    return this.raw.localPort;
  }
}
