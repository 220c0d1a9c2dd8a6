/**
 * Test peers that speak Warren's wire protocol themselves: a fake client for a real
 * server and a fake server for a real client. They produce on cue what a real peer
 * does only when it crashes (a FIN without StreamEnd, a lie in a count).
 */
import net from "node:net";
import { encode, FrameReader, FrameType, loginProof, withMagic, workProof, type DecodeResult } from "../protocol.ts";
import { TOKEN } from "./helpers.ts";

/** A raw connection to a control port that opens with `first` (after MAGIC): `next()` yields the server's frames in order. */
export function rawConn(port: number, first: Uint8Array, from = "127.0.0.1") {
  const reader = new FrameReader();
  const frames: DecodeResult[] = [];
  let wake = () => {};
  let closed = false;
  const sock = net.connect({ host: "127.0.0.1", port, localAddress: from, allowHalfOpen: true });
  sock.on("data", (d: Buffer) => {
    reader.push(d);
    for (let r = reader.next(); r; r = reader.next()) frames.push(r);
    wake();
  });
  sock.on("close", () => {
    closed = true;
    wake();
  });
  sock.on("error", () => {});
  sock.write(withMagic(first));
  const next = async (): Promise<DecodeResult | null> => {
    while (!frames.length && !closed) await new Promise<void>((r) => (wake = r));
    return frames.shift() ?? null;
  };
  return { sock, next };
}

/** A raw control connection that has been challenged: log in with `nonce`. */
export async function rawChallenged(port: number, from = "127.0.0.1") {
  const { sock, next } = rawConn(port, encode({ type: FrameType.Hello }), from);
  const ch = await next();
  if (!ch?.ok || ch.msg.type !== FrameType.Challenge) throw new Error("no challenge");
  return { sock, nonce: ch.msg.nonce, next };
}

/** Logs in as `group` (token TOKEN) declaring one TCP app over a raw control connection: its session id and the app's public port. */
export async function rawLogin(controlPort: number, group: string, app: string, from = "127.0.0.1") {
  const control = await rawChallenged(controlPort, from);
  control.sock.write(encode({ type: FrameType.Login, group, proof: loginProof(TOKEN, control.nonce, group), apps: [{ name: app, type: "tcp" }] }));
  const ok = await control.next();
  if (!ok?.ok || ok.msg.type !== FrameType.LoginOk) throw new Error("login failed");
  return { control, sessionId: ok.msg.sessionId, port: ok.msg.apps[0]!.remotePort };
}

/** Registers `group` with one TCP app on `server` and logs in over a raw control connection from `from`. */
export async function rawSession(server: { apiPort: number; adminToken: string; controlPort: number }, group: string, app: string, from = "127.0.0.1") {
  await fetch(`http://127.0.0.1:${server.apiPort}/api/groups`, {
    method: "POST",
    headers: { authorization: `Bearer ${server.adminToken}` },
    body: JSON.stringify({ name: group, token: TOKEN, apps: [{ name: app }] }),
  });
  return rawLogin(server.controlPort, group, app, from);
}

/** A work connection as a fake server sees it: frames until the WorkAck, then raw stream bytes. */
export interface FakeWork {
  readonly seq: number;
  readonly sock: net.Socket;
  /** The client's WorkAck once it came. */
  ack: DecodeResult | null;
  /** Stream bytes received after the WorkAck. */
  readonly raw: Buffer[];
  rawBytes: number;
  /** "FIN" when the client half-closed, an error code when it reset, null while open. */
  ended: string | null;
  closed: boolean;
}

/**
 * A fake server that logs any client in (no proof check), serving `app` at a made-up
 * port, and asks for `work` work connections. Wait on it with `until` (tests/helpers.ts).
 */
export async function fakeServer(app: string, work = 1) {
  const hub = { port: 0, control: null as net.Socket | null, controlEnded: false, works: [] as FakeWork[], frames: [] as DecodeResult[], close: () => {} };
  const sockets = new Set<net.Socket>();
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    const reader = new FrameReader();
    let w: FakeWork | null = null;
    s.on("error", (e: NodeJS.ErrnoException) => {
      if (w && !w.ended) w.ended = e.code ?? e.message;
    });
    s.on("end", () => {
      if (w && !w.ended) w.ended = "FIN";
      if (s === hub.control) hub.controlEnded = true;
    });
    s.on("close", () => {
      sockets.delete(s);
      if (w) w.closed = true;
    });
    s.on("data", (d: Buffer) => {
      if (w?.ack) {
        w.raw.push(d);
        w.rawBytes += d.length;
        return;
      }
      reader.push(d);
      for (let r = reader.next(); r; r = reader.next()) {
        if (!r.ok) return void s.destroy();
        const m = r.msg;
        if (w) {
          w.ack = r;
          const rest = Buffer.from(reader.rest());
          if (rest.length) {
            w.raw.push(rest);
            w.rawBytes += rest.length;
          }
          return;
        }
        if (m.type === FrameType.Hello) {
          hub.control = s;
          s.write(withMagic(encode({ type: FrameType.Challenge, nonce: new Uint8Array(32) })));
        } else if (m.type === FrameType.Login) {
          s.write(encode({ type: FrameType.LoginOk, sessionId: new Uint8Array(16), apps: [{ name: app, type: "tcp", remotePort: 1, error: "" }] }));
          s.write(encode({ type: FrameType.OpenWork, count: work }));
        } else if (m.type === FrameType.WorkHello) {
          w = { seq: m.seq, sock: s, ack: null, raw: [], rawBytes: 0, ended: null, closed: false };
          hub.works.push(w);
        } else hub.frames.push(r);
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  hub.port = (srv.address() as net.AddressInfo).port;
  hub.close = () => {
    for (const s of sockets) s.destroy();
    srv.close();
  };
  return hub;
}

/** A raw work connection to a real server: reads StartWork, then counts the raw stream bytes. */
export function rawWork(controlPort: number, sessionId: Uint8Array, seq: number) {
  const w = {
    sock: null as unknown as net.Socket,
    start: null as DecodeResult | null,
    raw: [] as Buffer[],
    rawBytes: 0,
    /** "FIN" when the server half-closed, an error code when it reset, null while open. */
    ended: null as string | null,
    closed: false,
  };
  const reader = new FrameReader();
  w.sock = net.connect({ host: "127.0.0.1", port: controlPort, allowHalfOpen: true });
  w.sock.on("error", (e: NodeJS.ErrnoException) => (w.ended ??= e.code ?? e.message));
  w.sock.on("end", () => (w.ended ??= "FIN"));
  w.sock.on("close", () => (w.closed = true));
  w.sock.on("data", (d: Buffer) => {
    if (w.start) {
      w.raw.push(d);
      w.rawBytes += d.length;
      return;
    }
    reader.push(d);
    const r = reader.next();
    if (!r) return;
    w.start = r;
    const rest = Buffer.from(reader.rest());
    if (rest.length) {
      w.raw.push(rest);
      w.rawBytes += rest.length;
    }
  });
  w.sock.write(withMagic(encode({ type: FrameType.WorkHello, sessionId, seq, proof: workProof(TOKEN, sessionId, seq) })));
  return w;
}

/** One side of a test stream (a user, or a local app's connection): what it got, and how its connection ended. */
export class Peer {
  got = 0;
  readonly chunks: Buffer[] = [];
  /** "FIN" for a clean end, an error code (ECONNRESET) for a reset, null while open. */
  ended: string | null = null;
  closed = false;
  constructor(readonly sock: net.Socket) {
    sock.on("data", (d: Buffer) => {
      this.got += d.length;
      this.chunks.push(d);
    });
    sock.on("end", () => (this.ended ??= "FIN"));
    sock.on("error", (e: NodeJS.ErrnoException) => (this.ended ??= e.code ?? e.message));
    sock.on("close", () => (this.closed = true));
  }

  /** Everything received so far, in one buffer. */
  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/** A local app that takes connections and, on each, sends `send` (if given); its peers in order of arrival. */
export async function peerApp(send?: Uint8Array) {
  const peers: Peer[] = [];
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    peers.push(new Peer(s));
    if (send) s.write(send);
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  return { port: (srv.address() as net.AddressInfo).port, peers, close: () => srv.close() };
}

/** A user connected to `port` (half-close allowed). */
export function userPeer(port: number): Peer {
  return new Peer(net.connect({ host: "127.0.0.1", port, allowHalfOpen: true }));
}
