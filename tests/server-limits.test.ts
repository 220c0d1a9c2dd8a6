/**
 * Server-side limits, each pinned at its bound: login lockout window and block time, the
 * tracked-address cap, users waiting for a work connection, unfinished handshakes, the size
 * of one work request and its timeout, and the apps one login may declare.
 */
import { afterAll, afterEach, describe, expect, setSystemTime, test } from "bun:test";
import net from "node:net";
import { LOGIN_BLOCK_S, LOGIN_FAILURE_WINDOW_S } from "../lib/config/defaults.ts";
import { LoginGuard, MAX_TRACKED_ADDRESSES, sourceKey } from "../lib/guard.ts";
import { MAX_DECLARED_APPS } from "../lib/server/auth.ts";
import { MAX_PENDING_HANDSHAKES } from "../lib/server/control-port.ts";
import { setLogSink } from "../lib/log.ts";
import { sockets } from "../lib/net/sockets.ts";
import { MAX_WORK_REQUEST, WORK_REQUEST_TIMEOUT_MS } from "../lib/server/session.ts";
import { QUIET_POOL } from "../lib/server/pool-demand.ts";
import { encode, ErrorCode, FRAME_HEADER_BYTES, FrameReader, FrameType, loginProof, MAX_FRAME_BYTES, withMagic, type DecodeResult, type Message } from "../protocol.ts";
import { createGroup, testServer, TOKEN, until } from "./helpers.ts";

const logs: string[] = [];
setLogSink((l) => logs.push(l));
afterAll(() => setLogSink((l) => console.error(l)));

/** Closed after each test, newest first, whether it passed or not. */
const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup.splice(0).reverse()) f();
  logs.length = 0;
});

type Server = Awaited<ReturnType<typeof testServer>>;

async function server(overrides: Record<string, unknown> = {}): Promise<Server> {
  const s = await testServer(overrides);
  cleanup.push(() => s.stop());
  return s;
}

/** A raw connection to the control port that sends `first` (after MAGIC), if given: `next()` yields the server's frames in order, null once closed. */
function rawConn(port: number, first?: Message) {
  const reader = new FrameReader();
  const frames: DecodeResult[] = [];
  let wake = () => {};
  let isClosed = false;
  const sock = net.connect({ host: "127.0.0.1", port });
  cleanup.push(() => sock.destroy());
  const closed = new Promise<void>((resolve) => sock.on("close", () => resolve()));
  sock.on("data", (d: Buffer) => {
    reader.push(d);
    for (let r = reader.next(); r; r = reader.next()) frames.push(r);
    wake();
  });
  closed.then(() => {
    isClosed = true;
    wake();
  });
  sock.on("error", () => {});
  if (first) sock.write(withMagic(encode(first)));
  /** The next frame, waiting at most `ms` for it (a bounded wait for an event). */
  const next = async (ms = 3000): Promise<DecodeResult | null> => {
    const end = performance.now() + ms;
    while (!frames.length && !isClosed) {
      const left = end - performance.now();
      if (left <= 0) throw new Error("no frame from the server within the wait");
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        wake = () => {
          clearTimeout(t);
          r();
        };
      });
    }
    return frames.shift() ?? null;
  };
  return { sock, next, closed, pending: () => frames.length };
}

/** The frame as plain data for exact comparisons: `{ type: "OpenWork", count: 64 }`, `"closed"`, or the decode error. */
function show(r: DecodeResult | null): unknown {
  if (!r) return "closed";
  if (!r.ok) return { decodeError: r.error.code };
  return { ...r.msg, type: FrameType[r.msg.type] };
}

/** Hello, Challenge, Login as `group` declaring `apps`: the raw control connection and the server's answer to the login. */
async function rawLogin(port: number, group: string, apps: { name: string; type: "tcp" }[]) {
  const c = rawConn(port, { type: FrameType.Hello });
  const ch = await c.next();
  if (!ch?.ok || ch.msg.type !== FrameType.Challenge) throw new Error(`no challenge: ${JSON.stringify(show(ch))}`);
  c.sock.write(encode({ type: FrameType.Login, group, proof: loginProof(TOKEN, ch.msg.nonce, group), apps }));
  return { ...c, answer: await c.next() };
}

/** A user connection to a public port that records when it opened and closed. */
function user(port: number) {
  const t0 = performance.now();
  const sock = net.connect({ host: "127.0.0.1", port }, () => sock.write("hello"));
  cleanup.push(() => sock.destroy());
  sock.on("error", () => {});
  const closedAfter = new Promise<number>((resolve) => sock.on("close", () => resolve(performance.now() - t0)));
  return { sock, closedAfter };
}

describe("login lockout (LoginGuard, explicit clock)", () => {
  test("failures spread over more than loginFailureWindow do not block; one exactly a window old no longer counts", () => {
    const guard = new LoginGuard(3, 1000, 5000);
    // Three failures, each pair at most a window apart, but never three inside one window.
    guard.fail("10.0.0.1", "test", 0);
    guard.fail("10.0.0.1", "test", 500);
    guard.fail("10.0.0.1", "test", 1000); // the failure at 0 is exactly windowMs old: dropped
    expect(guard.blocked("10.0.0.1", 1000)).toBe(false);
    for (let t = 1500; t <= 10_000; t += 500) {
      guard.fail("10.0.0.1", "test", t); // one every half window: two in any window
      expect(guard.blocked("10.0.0.1", t)).toBe(false);
    }
    // One millisecond younger than a window still counts: 9501, 10000 and 10500 are three in a window.
    const g2 = new LoginGuard(3, 1000, 5000);
    for (const t of [9501, 10_000, 10_500]) g2.fail("10.0.0.2", "test", t);
    expect(g2.blocked("10.0.0.2", 10_500)).toBe(true);
    expect(logs.filter((l) => l.includes("address blocked") && l.includes("10.0.0.2")).length).toBe(1);
    expect(logs.some((l) => l.includes("10.0.0.1"))).toBe(false);
  });

  test("a block lasts exactly loginBlockTime, and the failures that caused it are not counted again", () => {
    const guard = new LoginGuard(3, 1000, 5000);
    for (const t of [100, 200, 300]) guard.fail("10.0.0.3", "test", t);
    expect(guard.blocked("10.0.0.3", 300)).toBe(true);
    expect(guard.blocked("10.0.0.3", 300 + 5000 - 1)).toBe(true);
    expect(guard.blocked("10.0.0.3", 300 + 5000)).toBe(false);
    // After the block, a fresh failure starts a fresh count (the three were cleared when the block began).
    guard.fail("10.0.0.3", "test", 5300);
    guard.fail("10.0.0.3", "test", 5301);
    expect(guard.blocked("10.0.0.3", 5301)).toBe(false);
    guard.fail("10.0.0.3", "test", 5302);
    expect(guard.blocked("10.0.0.3", 5302)).toBe(true);
    expect(guard.blocked("10.0.0.3", 5302 + 5000)).toBe(false);
  });

  test("the config keys reach the hub's guard; the defaults are LOGIN_FAILURE_WINDOW_S and LOGIN_BLOCK_S", async () => {
    const s = await server({ loginFailureLimit: 2, loginFailureWindow: 0.4, loginBlockTime: 0.7 });
    const g = s.hub.guard;
    g.fail("10.1.0.1", "test", 1000);
    g.fail("10.1.0.1", "test", 1400); // 400 ms apart: the first is out of the window
    expect(g.blocked("10.1.0.1", 1400)).toBe(false);
    g.fail("10.1.0.1", "test", 1799); // 399 ms after the last: inside
    expect(g.blocked("10.1.0.1", 1799)).toBe(true);
    expect(g.blocked("10.1.0.1", 1799 + 699)).toBe(true);
    expect(g.blocked("10.1.0.1", 1799 + 700)).toBe(false);

    const d = (await server()).hub.guard; // default limit 10
    for (let i = 0; i < 10; i++) d.fail("10.1.0.2", "test", i * 1000);
    expect(d.blocked("10.1.0.2", 9000)).toBe(true);
    expect(d.blocked("10.1.0.2", 9000 + LOGIN_BLOCK_S * 1000 - 1)).toBe(true);
    expect(d.blocked("10.1.0.2", 9000 + LOGIN_BLOCK_S * 1000)).toBe(false);
    // Ten failures, the first exactly LOGIN_FAILURE_WINDOW_S before the tenth: only nine count.
    const W = LOGIN_FAILURE_WINDOW_S * 1000;
    for (const [ip, last] of [["10.1.0.3", W], ["10.1.0.4", W - 1]] as const) {
      d.fail(ip, "test", 100_000);
      for (let j = 8; j >= 0; j--) d.fail(ip, "test", 100_000 + last - j);
    }
    expect(d.blocked("10.1.0.3", 100_000 + W)).toBe(false);
    expect(d.blocked("10.1.0.4", 100_000 + W - 1)).toBe(true); // a millisecond sooner: all ten count
  });

  test("the tracked-address map is bounded by MAX_TRACKED_ADDRESSES: the stalest address that is not blocked is forgotten; a spray of sources lifts no block", () => {
    const guard = new LoginGuard(3, 60_000, 60_000);
    guard.fail("refreshed-b", "test", 0); // the first address tracked
    for (const t of [1, 2, 3]) guard.fail("blocked-a", "test", t);
    expect(guard.blocked("blocked-a", 10)).toBe(true);
    let most = 0;
    // Fill up to the cap exactly with one failure each.
    for (let i = 0; guard.tracked < MAX_TRACKED_ADDRESSES; i++) {
      guard.fail(`filler-${i}`, "test", 10);
      most = Math.max(most, guard.tracked);
    }
    expect(guard.tracked).toBe(MAX_TRACKED_ADDRESSES);
    expect(guard.blocked("blocked-a", 20)).toBe(true); // at the cap nothing is forgotten yet
    // A failure moves an address to the young end: b, tracked first, is no longer the oldest.
    guard.fail("refreshed-b", "test", 5);
    // One address more than the cap: the oldest (a, last failure at 3) is blocked and stays; the next oldest goes.
    guard.fail("one-more", "test", 20);
    expect(guard.tracked).toBe(MAX_TRACKED_ADDRESSES);
    expect(guard.blocked("blocked-a", 20)).toBe(true);
    // b kept its two failures and blocks at the next (a forgotten b would count from one).
    guard.fail("refreshed-b", "test", 21);
    expect(guard.blocked("refreshed-b", 21)).toBe(true);
    // A spray of new sources keeps the size at the cap; each forgets the oldest filler.
    for (let i = 0; i < 1000; i++) {
      guard.fail(`spray-${i}`, "test", 30);
      most = Math.max(most, guard.tracked);
    }
    expect(most).toBe(MAX_TRACKED_ADDRESSES);
    expect(guard.tracked).toBe(MAX_TRACKED_ADDRESSES);
    expect(guard.blocked("blocked-a", 30)).toBe(true); // still: the spray did not lift it
    expect(guard.blocked("blocked-a", 3 + 60_000)).toBe(false); // until its block time is over
    // "filler-0" (one failure) was forgotten: three more are needed to block it again, not two.
    guard.fail("filler-0", "test", 40);
    guard.fail("filler-0", "test", 41);
    expect(guard.blocked("filler-0", 41)).toBe(false);
  });

  test("the map stays bounded even when every old record is blocked: then the stalest goes, block and all", () => {
    const guard = new LoginGuard(1, 60_000, 60_000); // one failure blocks
    for (let i = 0; i < MAX_TRACKED_ADDRESSES; i++) guard.fail(`b-${i}`, "test", 0);
    expect(guard.blocked("b-0", 1)).toBe(true);
    guard.fail("new", "test", 1);
    expect(guard.tracked).toBe(MAX_TRACKED_ADDRESSES);
    expect(guard.blocked("b-0", 1)).toBe(false);
    expect(guard.blocked("b-1", 1)).toBe(true);
  });

  test("a block is timed on the monotonic clock: a wall-clock step forward does not lift it", () => {
    const guard = new LoginGuard(2, 60_000, 60_000);
    guard.fail("192.0.2.50", "test");
    guard.fail("192.0.2.50", "test");
    expect(guard.blocked("192.0.2.50")).toBe(true);
    try {
      setSystemTime(new Date(Date.now() + 3_600_000)); // an hour ahead
      expect(guard.blocked("192.0.2.50")).toBe(true);
    } finally {
      setSystemTime();
    }
  });

  test("IPv6 sources count per /64 (one host or subscriber), IPv4 per address, mapped IPv4 as IPv4", () => {
    expect(sourceKey("2001:db8:1:2:aaaa::1")).toBe("2001:db8:1:2::/64");
    expect(sourceKey("::ffff:192.0.2.7")).toBe("192.0.2.7");
    expect(sourceKey("192.0.2.7")).toBe("192.0.2.7");
    const guard = new LoginGuard(3, 60_000, 60_000);
    // Three failures from three addresses of one /64 block the whole /64, and no other.
    for (const [i, a] of ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff:ffff:ffff:ffff"].entries()) guard.fail(a, "test", i);
    expect(guard.blocked("2001:db8:1:2::99", 3)).toBe(true);
    expect(guard.blocked("2001:db8:1:3::1", 3)).toBe(false);
    expect(guard.tracked).toBe(1);
    for (const [i, a] of ["192.0.2.1", "192.0.2.2", "192.0.2.3"].entries()) guard.fail(a, "test", i);
    expect(guard.blocked("192.0.2.4", 3)).toBe(false);
  });
});

describe("users waiting for a work connection (maxPendingUsers)", () => {
  test("with maxPendingUsers 2 and a client that never dials, the third user is closed at once; the first two wait until userConnTimeout", async () => {
    const s = await server({ maxPendingUsers: 2, userConnTimeout: 0.6 });
    expect(await createGroup(s, "lazy", ["l"])).toBe(201);
    const control = await rawLogin(s.controlPort, "lazy", [{ name: "l", type: "tcp" }]);
    if (!control.answer?.ok || control.answer.msg.type !== FrameType.LoginOk) throw new Error("login failed");
    const port = control.answer.msg.apps[0]!.remotePort;
    expect(show(await control.next())).toEqual({ type: "OpenWork", count: QUIET_POOL }); // the warm pool of a quiet group
    // Each waiting user asks for one work connection more: that OpenWork shows the user is queued.
    const first = user(port);
    expect(show(await control.next())).toEqual({ type: "OpenWork", count: 1 });
    // The second also raises the pool's target to two starts (pool-demand.ts): one for the user, one more warm.
    const second = user(port);
    expect(show(await control.next())).toEqual({ type: "OpenWork", count: 2 });
    let waitingClosed = 0;
    for (const u of [first, second]) u.closedAfter.then(() => waitingClosed++);
    const third = user(port);
    const thirdMs = await third.closedAfter;
    expect(thirdMs).toBeLessThan(300);
    expect(waitingClosed).toBe(0); // still open when the third was refused
    const [a, b] = await Promise.all([first.closedAfter, second.closedAfter]);
    for (const ms of [a, b]) {
      expect(ms).toBeGreaterThanOrEqual(550);
      expect(ms).toBeLessThan(2000);
    }
    // The refused user asked for no work connection (by now it would have arrived), and was logged once with the limit.
    expect(control.pending()).toBe(0);
    expect(logs.filter((l) => l.includes("too many users waiting") && l.includes("limit=2")).length).toBe(1);
    expect(s.hub.view(s.hub.registry.get("lazy")!).apps[0]).toMatchObject({ queueFullConnections: 1, overLimitConnections: 0 });
    expect(logs.filter((l) => l.includes("no work connection within userConnTimeout")).length).toBe(2);
  });
});

describe("unfinished handshakes (MAX_PENDING_HANDSHAKES)", () => {
  const challenged = async (port: number) => {
    const c = rawConn(port, { type: FrameType.Hello });
    expect(show(await c.next())).toMatchObject({ type: "Challenge" });
    return c; // challenged but not logged in: its handshake is unfinished
  };
  const overloaded = { type: "Error", code: ErrorCode.Overloaded, message: "server busy: too many unfinished handshakes" };

  test("the (N+1)th unfinished handshake is refused with Overloaded; once they close, a new connection gets a Challenge, and the cap is N again", async () => {
    expect(MAX_PENDING_HANDSHAKES).toBe(4096);
    const s = await server({ handshakeTimeout: 30 });
    expect(s.hub.maxPendingHandshakes).toBe(MAX_PENDING_HANDSHAKES);
    const N = 5;
    s.hub.maxPendingHandshakes = N;
    const held = [];
    for (let i = 0; i < N; i++) held.push(await challenged(s.controlPort));
    expect(s.hub.pendingHandshakes).toBe(N);
    // One that has said nothing yet is refused at once, before it speaks.
    const silent = rawConn(s.controlPort);
    expect(show(await silent.next())).toEqual(overloaded);
    expect(await silent.next()).toBeNull(); // then closed
    const late = rawConn(s.controlPort, { type: FrameType.Hello });
    expect(show(await late.next())).toEqual(overloaded);
    await late.closed;
    expect(s.hub.pendingHandshakes).toBe(N);
    expect(logs.filter((l) => l.includes("too many unfinished handshakes") && l.includes(`limit=${N}`)).length).toBe(2);

    for (const c of held) c.sock.destroy();
    await until(() => s.hub.pendingHandshakes === 0, 3000, "the held handshakes to be released");
    // The refused connections took nothing from the count either: exactly N fit again.
    const again = [];
    for (let i = 0; i < N; i++) again.push(await challenged(s.controlPort));
    expect(s.hub.pendingHandshakes).toBe(N);
    expect(show(await rawConn(s.controlPort, { type: FrameType.Hello }).next())).toEqual(overloaded);
    // A finished login gives its slot back: after it, one more handshake fits, and then none.
    expect(await createGroup(s, "g", [])).toBe(201);
    again.shift()!.sock.destroy();
    await until(() => s.hub.pendingHandshakes === N - 1, 3000, "one slot released");
    const login = await rawLogin(s.controlPort, "g", []);
    expect(show(login.answer)).toMatchObject({ type: "LoginOk", apps: [] });
    expect(s.hub.pendingHandshakes).toBe(N - 1);
    again.push(await challenged(s.controlPort));
    expect(s.hub.pendingHandshakes).toBe(N);
    expect(show(await rawConn(s.controlPort, { type: FrameType.Hello }).next())).toEqual(overloaded);
  });

  test("unfinished handshakes may hold at most half of sockets.max", async () => {
    const s = await server({ handshakeTimeout: 30 });
    const max = sockets.max;
    // Half the cap just above the sockets open now, so the relay's own cap (sockets.max) is not what refuses.
    const N = sockets.open + 4;
    sockets.max = 2 * N;
    try {
      const held = [];
      for (let i = 0; i < N; i++) held.push(await challenged(s.controlPort));
      expect(s.hub.pendingHandshakes).toBe(N);
      expect(sockets.open).toBeLessThan(sockets.max);
      const refused = rawConn(s.controlPort, { type: FrameType.Hello });
      expect(show(await refused.next())).toEqual(overloaded); // a frame, not the relay's bare reset
      expect(logs.filter((l) => l.includes("too many unfinished handshakes") && l.includes(`limit=${N}`)).length).toBe(1);
      for (const c of held) c.sock.destroy();
      await until(() => s.hub.pendingHandshakes === 0, 3000, "the held handshakes to be released");
      await challenged(s.controlPort);
    } finally {
      sockets.max = max;
    }
  });
});

describe("work requests (OpenWork)", () => {
  test(`with poolSize 200 and 100 users waiting, each OpenWork asks for at most MAX_WORK_REQUEST (${MAX_WORK_REQUEST})`, async () => {
    const USERS = 100;
    const s = await server({ poolSize: 200 });
    s.hub.workRequestTimeoutMs = 400; // 5 s would make this test too slow
    expect(await createGroup(s, "big-pool", ["p"])).toBe(201);
    const c = await rawLogin(s.controlPort, "big-pool", [{ name: "p", type: "tcp" }]);
    if (!c.answer?.ok || c.answer.msg.type !== FrameType.LoginOk) throw new Error("login failed");
    expect(show(await c.next())).toEqual({ type: "OpenWork", count: QUIET_POOL });
    // Each user asks for itself and, as the starts raise the target, for one more warm: two at most.
    for (let i = 0; i < USERS; i++) user(c.answer.msg.apps[0]!.remotePort);
    let asked = QUIET_POOL;
    for (let n = 0; asked < 2 * USERS && n < 2 * USERS; n++) {
      const f = show(await c.next()) as { type: string; count: number };
      expect(f.type).toBe("OpenWork");
      expect(f.count).toBeLessThanOrEqual(2);
      asked += f.count;
    }
    expect(asked).toBe(2 * USERS); // 100 users and a target of 100 warm
    // Nothing answered: after the timeout the whole need is asked again, MAX_WORK_REQUEST at a time.
    expect(show(await c.next())).toEqual({ type: "OpenWork", count: MAX_WORK_REQUEST });
    // A frame from the client makes the server top up: 64, 64, then the 8 left of 200.
    for (const [seq, count] of [[1, 64], [2, 64], [3, 2 * USERS - 3 * 64]] as const) {
      c.sock.write(encode({ type: FrameType.Ping, seq }));
      expect(show(await c.next())).toEqual({ type: "OpenWork", count });
      expect(show(await c.next())).toEqual({ type: "Pong", seq });
    }
    c.sock.write(encode({ type: FrameType.Ping, seq: 4 }));
    expect(show(await c.next())).toEqual({ type: "Pong", seq: 4 });
  });

  test("a request the client ignores while a user waits is asked again after the work request timeout, in full", async () => {
    expect(WORK_REQUEST_TIMEOUT_MS).toBe(5000);
    const s = await server({ poolSize: 1, userConnTimeout: 5 });
    expect(s.hub.workRequestTimeoutMs).toBe(WORK_REQUEST_TIMEOUT_MS);
    const TIMEOUT = 400;
    s.hub.workRequestTimeoutMs = TIMEOUT; // 5 s would make this test too slow
    expect(await createGroup(s, "deaf", ["d"])).toBe(201);
    const c = await rawLogin(s.controlPort, "deaf", [{ name: "d", type: "tcp" }]);
    if (!c.answer?.ok || c.answer.msg.type !== FrameType.LoginOk) throw new Error("login failed");
    expect(show(await c.next())).toEqual({ type: "OpenWork", count: 1 }); // the pool
    const u = user(c.answer.msg.apps[0]!.remotePort);
    let userClosed = false;
    u.closedAfter.then(() => (userClosed = true));
    expect(show(await c.next())).toEqual({ type: "OpenWork", count: 1 }); // one more for the user
    const t1 = performance.now();
    // Nothing answered: after the timeout the whole need (pool + user) is asked again, and again.
    expect(show(await c.next())).toEqual({ type: "OpenWork", count: 2 });
    const t2 = performance.now();
    expect(show(await c.next())).toEqual({ type: "OpenWork", count: 2 });
    const t3 = performance.now();
    for (const gap of [t2 - t1, t3 - t2]) {
      expect(gap).toBeGreaterThanOrEqual(TIMEOUT - 50); // measured at the client: its reads may lag a little
      expect(gap).toBeLessThan(TIMEOUT + 300); // well short of two timeouts
    }
    expect(userClosed).toBe(false); // still waiting: userConnTimeout is 5 s
  });
});

describe("declared apps (MAX_DECLARED_APPS)", () => {
  test(`a login declaring exactly ${MAX_DECLARED_APPS} apps with 64-character names is answered in one LoginOk; one more is refused with a clear error`, async () => {
    const s = await server();
    const group = "g".repeat(64);
    expect(await createGroup(s, group, [])).toBe(201);
    // Unknown apps: their statuses carry the longest error the server writes, naming the app and the group.
    const apps = Array.from({ length: MAX_DECLARED_APPS }, (_, i) => ({ name: String(i).padStart(3, "0") + "a".repeat(61), type: "tcp" as const }));
    expect(apps.every((a) => a.name.length === 64)).toBe(true);
    const ok = await rawLogin(s.controlPort, group, apps);
    if (!ok.answer?.ok || ok.answer.msg.type !== FrameType.LoginOk) throw new Error(`login refused: ${JSON.stringify(show(ok.answer))}`);
    expect(ok.answer.msg.apps).toEqual(apps.map((a) => ({ name: a.name, type: "tcp", remotePort: 0, error: `unknown app "${a.name}": group "${group}" has no such app` })));
    // 61,458 body bytes (one byte per status says it has no URLs): under the frame limit with about 4 KiB to spare.
    const body = encode(ok.answer.msg).length - FRAME_HEADER_BYTES;
    expect(body).toBe(61_458);
    expect(body).toBeLessThanOrEqual(MAX_FRAME_BYTES);
    const session = s.hub.session(group)!;

    const tooMany = await rawLogin(s.controlPort, group, [...apps, { name: "one-more", type: "tcp" }]);
    expect(show(tooMany.answer)).toEqual({ type: "Error", code: ErrorCode.MalformedFrame, message: `a login may declare at most ${MAX_DECLARED_APPS} apps` });
    expect(await tooMany.next()).toBeNull();
    // Refused before it could replace anything: the first session is still the group's, and the address is not penalised.
    expect(s.hub.session(group)).toBe(session);
    expect(session.ended).toBe(false);
    expect(s.hub.guard.blocked("127.0.0.1")).toBe(false);
  });
});
