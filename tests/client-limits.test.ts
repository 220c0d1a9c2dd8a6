/** The client's limits: wanted work, work dials in flight, the local connect and registration timeouts, TCP keepalive. */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { dlopen, FFIType, ptr } from "bun:ffi";
import net from "node:net";
import tls from "node:tls";
import { Connector, type ConnectorOptions } from "../lib/client/connector.ts";
import { DIALS_PER_TURN } from "../lib/client/work.ts";
import { KEEPALIVE_MS } from "../lib/net/sockets.ts";
import { setLogSink } from "../lib/log.ts";
import { fingerprintOf, selfSigned } from "../lib/tls.ts";
import { encode, FrameReader, FrameType, withMagic, type Message } from "../protocol.ts";
import { clientConfig, echoApp } from "./helpers.ts";

const logs: string[] = [];
setLogSink((l) => logs.push(l));
const echo = await echoApp();
/** Undone after each test, newest first, so that a failing test leaves nothing open for the next. */
let cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup.reverse()) f();
  cleanup = [];
});
afterAll(() => {
  echo.close();
  setLogSink((l) => process.stderr.write(l + "\n"));
});

/** Wakes waiters when something a test watches has changed: promises instead of polling. */
class Watch {
  readonly #checks = new Set<() => void>();

  notify(): void {
    for (const check of [...this.#checks]) check();
  }

  /** Resolves once `cond` holds (checked now and on every notify); fails after `ms`. */
  until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.#checks.delete(check);
      };
      const check = () => {
        if (cond()) {
          done();
          resolve();
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out waiting for ${what}`));
      }, ms);
      this.#checks.add(check);
      check();
    });
  }
}

/** A short wait, used only to show that something does NOT happen (nothing else can prove an absence). */
const quiet = (ms = 300) => Bun.sleep(ms);

/** A work connection as the fake server sees it. */
interface WorkConn {
  readonly seq: number;
  readonly sock: net.Socket;
  /** Frames received after the WorkHello. */
  readonly frames: Message[];
  closed: boolean;
}

/**
 * A fake server speaking the protocol: logs any client in (no proof check), hands the
 * control socket to `onLogin`, and records every work connection's WorkHello.
 */
function fakeHub(onLogin: (control: net.Socket) => void) {
  const watch = new Watch();
  const works: WorkConn[] = [];
  const sockets = new Set<net.Socket>();
  const hub = { watch, works, control: null as net.Socket | null, conns: 0, serve };
  function serve(s: net.Socket): void {
    hub.conns++;
    sockets.add(s);
    const reader = new FrameReader();
    let work: WorkConn | null = null;
    s.on("error", () => {});
    s.on("close", () => {
      sockets.delete(s);
      if (work) work.closed = true;
      watch.notify();
    });
    s.on("data", (d: Buffer) => {
      reader.push(d);
      for (let r = reader.next(); r; r = reader.next()) {
        if (!r.ok) return void s.destroy();
        const m = r.msg;
        if (work) work.frames.push(m);
        else if (m.type === FrameType.Hello) {
          hub.control = s;
          s.write(withMagic(encode({ type: FrameType.Challenge, nonce: new Uint8Array(32) })));
        } else if (m.type === FrameType.Login) {
          s.write(encode({ type: FrameType.LoginOk, sessionId: new Uint8Array(16), apps: [{ name: "a", type: "tcp", remotePort: 1, error: "" }] }));
          onLogin(s);
        } else if (m.type === FrameType.WorkHello) {
          work = { seq: m.seq, sock: s, frames: [], closed: false };
          works.push(work);
        }
        watch.notify();
      }
    });
  }
  cleanup.push(() => {
    for (const s of sockets) s.destroy();
  });
  return hub;
}

/** `fakeHub` on a plain TCP port. */
async function plainHub(onLogin: (control: net.Socket) => void) {
  const hub = fakeHub(onLogin);
  const srv = net.createServer(hub.serve);
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  cleanup.push(() => srv.close());
  // Not a spread: `control` is set later, on the same object.
  return Object.assign(hub, { port: (srv.address() as net.AddressInfo).port });
}

function listening(srv: net.Server): Promise<number> {
  return new Promise((r) => srv.listen(0, "127.0.0.1", () => r((srv.address() as net.AddressInfo).port)));
}

function connector(port: number, options: ConnectorOptions, localAddr = `127.0.0.1:${echo.port}`, extra: Record<string, unknown> = {}): Connector {
  const c = new Connector(clientConfig({ controlPort: port }, "g", [{ name: "a", localAddr }], extra), options);
  cleanup.push(() => c.stop());
  return c;
}

const openWork = (count: number) => encode({ type: FrameType.OpenWork, count });
const seqs = (works: WorkConn[]) => works.map((w) => w.seq).sort((a, b) => a - b);
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/**
 * A loopback listener that never accepts, with its accept queue full, so that a
 * further connect to it hangs in SYN-SENT: Linux drops a SYN while the accept queue
 * is full. Bun and node:net both accept as fast as connections come, so the
 * listener is made with libc directly; backlog 0 lets exactly one connection queue.
 */
async function blackHole(): Promise<{ port: number; close(): void }> {
  const libc = dlopen("libc.so.6", {
    socket: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    bind: { args: [FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
    listen: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    getsockname: { args: [FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
    close: { args: [FFIType.i32], returns: FFIType.i32 },
  });
  const AF_INET = 2;
  const SOCK_STREAM = 1;
  const fd = libc.symbols.socket(AF_INET, SOCK_STREAM, 0);
  // struct sockaddr_in: family (host order), port 0 (network order), 127.0.0.1.
  const addr = new Uint8Array(16);
  new DataView(addr.buffer).setUint16(0, AF_INET, true);
  addr.set([127, 0, 0, 1], 4);
  const len = new Uint32Array([16]);
  if (fd < 0 || libc.symbols.bind(fd, ptr(addr), 16) !== 0 || libc.symbols.listen(fd, 0) !== 0 || libc.symbols.getsockname(fd, ptr(addr), ptr(len)) !== 0) {
    throw new Error("could not make a loopback listener with libc");
  }
  const port = new DataView(addr.buffer).getUint16(2, false);
  // The one connection the queue holds.
  const filler = net.connect({ host: "127.0.0.1", port });
  filler.on("error", () => {});
  await new Promise<void>((r) => filler.once("connect", () => r()));
  return {
    port,
    close() {
      filler.destroy();
      libc.symbols.close(fd);
      libc.close();
    },
  };
}

describe("wanted work (MAX_WANTED_WORK)", () => {
  test("OpenWork requests of 65535 bring work connections up to the cap of idle, dialing and wanted ones, never beyond; one closed makes room for one", async () => {
    const cap = 20;
    const hub = await plainHub((control) => {
      // Both requests in one write, so they are handled in the same turn.
      control.write(Buffer.concat([openWork(65_535), openWork(65_535)]));
    });
    const c = connector(hub.port, { maxWantedWork: cap });
    c.start();
    // The cap counts connections being dialed too: the first request's DIALS_PER_TURN dials leave
    // room for the second to want only the rest.
    await hub.watch.until(() => hub.works.length >= cap, `${cap} work hellos`);
    await quiet(); // proving no more come takes a wait
    expect(hub.works.length).toBe(cap);
    expect(seqs(hub.works)).toEqual(range(cap));
    // All idle now: another request brings none.
    hub.control!.write(openWork(65_535));
    await quiet();
    expect(hub.works.length).toBe(cap);
    // One closed by the server makes room for exactly one.
    hub.works[0]!.sock.destroy();
    await hub.watch.until(() => hub.works[0]!.closed, "the closed work connection");
    await quiet(); // the client sees the close
    hub.control!.write(openWork(65_535));
    await hub.watch.until(() => hub.works.length >= cap + 1, `${cap + 1} work hellos`);
    await quiet();
    expect(hub.works.length).toBe(cap + 1);
    expect(seqs(hub.works)).toEqual(range(cap + 1));
    expect(hub.conns).toBe(1 + cap + 1);
  });
});

describe("work dials in flight (MAX_WORK_DIALS)", () => {
  test("no more than maxWorkDials work connections are being dialed at once; each that opens lets the next start", async () => {
    const maxDials = 3;
    const wanted = 10;
    // A work dial is in flight until its TLS handshake is verified (relayHandler's onOpen), so a
    // front that accepts TCP but holds back the handshake keeps dials in flight as long as the test
    // wants. The front passes the control connection, and each released one, to the TLS fake server.
    const { cert, key } = await selfSigned();
    const hub = fakeHub((control) => control.write(openWork(wanted)));
    const inner = tls.createServer({ cert, key }, hub.serve);
    const innerPort = await listening(inner);
    cleanup.push(() => inner.close());
    const held: net.Socket[] = [];
    let accepted = 0;
    let passAll = false;
    const pass = (a: net.Socket) => {
      const b = net.connect({ host: "127.0.0.1", port: innerPort });
      b.on("error", () => {});
      a.pipe(b);
      b.pipe(a);
      a.on("close", () => b.destroy());
      b.on("close", () => a.destroy());
    };
    const frontSockets = new Set<net.Socket>();
    const front = net.createServer((a) => {
      frontSockets.add(a);
      a.on("error", () => {});
      a.on("close", () => frontSockets.delete(a));
      if (accepted++ === 0 || passAll) pass(a);
      else held.push(a);
      hub.watch.notify();
    });
    const port = await listening(front);
    cleanup.push(() => {
      front.close();
      for (const s of frontSockets) s.destroy();
    });
    const c = connector(port, { maxWorkDials: maxDials }, undefined, { tls: { enabled: true, serverFingerprint: await fingerprintOf(cert) } });
    c.start();
    await hub.watch.until(() => held.length >= maxDials, `${maxDials} work dials`);
    await quiet();
    expect(held.length).toBe(maxDials);
    expect(accepted).toBe(1 + maxDials);
    expect(hub.works.length).toBe(0);
    // One handshake completes: its WorkHello arrives, and exactly one more dial starts.
    pass(held.shift()!);
    await hub.watch.until(() => hub.works.length === 1 && held.length === maxDials, "one work hello and the next dial");
    await quiet(200);
    expect(accepted).toBe(1 + maxDials + 1);
    expect(held.length).toBe(maxDials);
    // Let every handshake through: all wanted connections come, and no more.
    passAll = true;
    for (const a of held.splice(0)) pass(a);
    await hub.watch.until(() => hub.works.length === wanted, `${wanted} work hellos`);
    expect(accepted).toBe(1 + wanted);
    expect(seqs(hub.works)).toEqual(range(wanted));
  });
});

describe("local connect timeout (LOCAL_CONNECT_TIMEOUT_MS)", () => {
  test("a local app whose connect never completes is given up at the timeout, and the server is told in a failed WorkAck", async () => {
    const hole = await blackHole();
    cleanup.push(() => hole.close());
    const timeoutMs = 300;
    let startedAt = 0;
    const hub = await plainHub((control) => control.write(openWork(1)));
    const c = connector(hub.port, { localConnectTimeoutMs: timeoutMs }, `127.0.0.1:${hole.port}`);
    c.start();
    await hub.watch.until(() => hub.works.length === 1, "a work hello");
    const work = hub.works[0]!;
    startedAt = performance.now();
    work.sock.write(withMagic(encode({ type: FrameType.StartWork, app: "a", userAddr: "192.0.2.7:40000", publicAddr: "127.0.0.1:6000" })));
    await hub.watch.until(() => work.frames.length > 0, "a WorkAck", 3000);
    const ms = performance.now() - startedAt;
    expect(work.frames).toEqual([{ type: FrameType.WorkAck, ok: false, message: `local app 127.0.0.1:${hole.port} is unreachable` }]);
    // Not refused at once (the connect really hung), and far below the server's userConnTimeout (10 s).
    expect(ms).toBeGreaterThanOrEqual(timeoutMs - 50);
    expect(ms).toBeLessThan(2000);
    // The failed work connection is not reused: the client closes it.
    await hub.watch.until(() => work.closed, "the work connection closed");
    expect(logs.some((l) => l.includes("local app unreachable") && l.includes(`localAddr=127.0.0.1:${hole.port}`))).toBe(true);
  });

  test("MAX_LOCAL_DIALS: a connect given up on still counts until the kernel ends it; that app's users beyond the cap are refused at once, other apps' are served", async () => {
    const hole = await blackHole();
    cleanup.push(() => hole.close());
    const hub = await plainHub((control) => control.write(openWork(3)));
    const c = new Connector(
      clientConfig({ controlPort: hub.port }, "g", [
        { name: "a", localAddr: `127.0.0.1:${hole.port}` },
        { name: "b", localAddr: `127.0.0.1:${echo.port}` },
      ]),
      { localConnectTimeoutMs: 200, maxLocalDials: 1 },
    );
    cleanup.push(() => c.stop());
    c.start();
    await hub.watch.until(() => hub.works.length === 3, "three work hellos");
    const [first, second, third] = hub.works as [WorkConn, WorkConn, WorkConn];
    const start = (w: WorkConn, app = "a") => w.sock.write(withMagic(encode({ type: FrameType.StartWork, app, userAddr: "192.0.2.7:40000", publicAddr: "127.0.0.1:6000" })));
    start(first);
    await hub.watch.until(() => first.frames.length > 0, "the first WorkAck", 3000);
    expect(first.frames).toEqual([{ type: FrameType.WorkAck, ok: false, message: `local app 127.0.0.1:${hole.port} is unreachable` }]);
    // The kernel is still trying the first connect (SYN retries for about 2 minutes): the cap of one is taken.
    const t0 = performance.now();
    start(second);
    await hub.watch.until(() => second.frames.length > 0, "the second WorkAck", 3000);
    expect(second.frames).toEqual([{ type: FrameType.WorkAck, ok: false, message: `too many connects to local app 127.0.0.1:${hole.port} unfinished (1)` }]);
    expect(performance.now() - t0).toBeLessThan(200); // at once, not after another connect timeout
    expect(logs.some((l) => l.includes("too many connects to the local app unfinished") && l.includes("app=a") && l.includes("limit=1"))).toBe(true);
    // The cap is per app: app b's users are served meanwhile.
    start(third, "b");
    await hub.watch.until(() => third.frames.length > 0, "app b's WorkAck", 3000);
    expect(third.frames[0]).toEqual({ type: FrameType.WorkAck, ok: true, message: "" });
  });

  test("MAX_LOCAL_DIALS: a connect that completes gives its place back", async () => {
    const hub = await plainHub((control) => control.write(openWork(3)));
    const c = connector(hub.port, { maxLocalDials: 1 }); // the echo app
    c.start();
    await hub.watch.until(() => hub.works.length === 3, "three work hellos");
    for (const w of hub.works) {
      w.sock.write(withMagic(encode({ type: FrameType.StartWork, app: "a", userAddr: "192.0.2.7:40000", publicAddr: "127.0.0.1:6000" })));
      // The ack leaves when the echo app has opened (held up to ACK_HOLD_MS for its first bytes; it has none).
      await hub.watch.until(() => w.frames.length > 0, "a WorkAck", 3000);
      expect(w.frames[0]).toEqual({ type: FrameType.WorkAck, ok: true, message: "" });
    }
  });
});

describe("registration timeout (REGISTER_TIMEOUT_MS)", () => {
  test("a registration API that never answers is given up at the timeout and retried after a backoff, without logging in meanwhile", async () => {
    const timeoutMs = 300;
    const watch = new Watch();
    const calls: { at: number; closedAt?: number }[] = [];
    const apiSockets = new Set<net.Socket>();
    const api = net.createServer((s) => {
      const call: { at: number; closedAt?: number } = { at: performance.now() };
      calls.push(call);
      apiSockets.add(s);
      s.on("error", () => {});
      s.on("close", () => {
        call.closedAt = performance.now();
        apiSockets.delete(s);
        watch.notify();
      });
      s.resume(); // reads the request, never answers
      watch.notify();
    });
    const apiPort = await listening(api);
    cleanup.push(() => {
      api.close();
      for (const s of apiSockets) s.destroy();
    });
    const hub = await plainHub(() => {});
    const c = connector(hub.port, { registerTimeoutMs: timeoutMs }, undefined, { apiUrl: `http://127.0.0.1:${apiPort}`, registrationToken: "registration-token-abcdefgh" });
    c.start();
    await watch.until(() => calls.length >= 2, "a second registration attempt");
    const [first, second] = calls as [(typeof calls)[0], (typeof calls)[0]];
    expect(first.closedAt).toBeDefined();
    expect(first.closedAt! - first.at).toBeGreaterThanOrEqual(timeoutMs - 50);
    expect(first.closedAt! - first.at).toBeLessThan(1500);
    // The retry waits backoffDelay(0), 125-250 ms.
    expect(second.at - first.closedAt!).toBeGreaterThanOrEqual(100);
    expect(second.at - first.closedAt!).toBeLessThan(1000);
    // Registration comes before login: no control connection while it fails.
    expect(hub.conns).toBe(0);
    expect(c.online).toBe(false);
    const failures = logs.filter((l) => l.includes("self-registration failed; will retry") && l.includes(`url=http://127.0.0.1:${apiPort}`));
    expect(failures.length).toBeGreaterThanOrEqual(1);
    expect(failures[0]).toContain("timed out");
  });
});

/** The keepalive timer ss shows for the socket whose local port is `port`, in seconds; null when it has none. */
function keepaliveTimer(filter: string): number | null {
  const out = Bun.spawnSync(["ss", "-tnoH", "state", "established", `( ${filter} )`]).stdout.toString();
  expect(out.trim().split("\n").length).toBe(1); // exactly one socket matched
  const m = /timer:\(keepalive,(\d+)sec,/.exec(out);
  return m ? Number(m[1]) : null;
}

describe("TCP keepalive (KEEPALIVE_MS)", () => {
  // `ss` (Debian's iproute2, which .ci/run installs) is the only way to see a socket's keepalive timer from outside.
  const SS = Bun.which("ss") !== null;
  const name = "the client's control and work sockets have keepalive on with KEEPALIVE_MS idle time";
  test.skipIf(!SS)(SS ? name : `${name} (skipped: ss from iproute2 is not installed)`, async () => {
    const hub = await plainHub((control) => control.write(openWork(1)));
    const c = connector(hub.port, {});
    c.start();
    await hub.watch.until(() => hub.works.length === 1, "a work hello");
    const hubPort = `${hub.port}`;
    for (const clientPort of [hub.control!.remotePort!, hub.works[0]!.sock.remotePort!]) {
      const s = keepaliveTimer(`sport = :${clientPort} and dport = :${hubPort}`);
      // ss counts down from the idle time, in whole seconds.
      expect(s).not.toBeNull();
      expect(s!).toBeLessThanOrEqual(KEEPALIVE_MS / 1000);
      expect(s!).toBeGreaterThanOrEqual(KEEPALIVE_MS / 1000 - 5);
      // The fake server's end of the same connection sets no keepalive: the check can tell them apart.
      expect(keepaliveTimer(`sport = :${hubPort} and dport = :${clientPort}`)).toBeNull();
    }
  });
});
