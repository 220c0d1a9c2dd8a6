/**
 * Adaptive pools of idle work connections (issue 21, part 5): a quiet group keeps QUIET_POOL,
 * a burst grows the pool (every byte back, SHA-256 equal), a quiet period shrinks it again, and
 * the idle connections of all groups stay within the process's budget while users are still served.
 * Counted at both ends: the server's session and the client's Connector.
 */
import { afterAll, describe, expect, test } from "bun:test";
import type { Connector } from "../lib/client/connector.ts";
import { IDLE_WORK_TIMEOUT_MS } from "../lib/server/session.ts";
import { appSockets, idleWork, idleWorkRoom, IDLE_WORK_SHARE, POOL_WINDOW_MS, QUIET_POOL } from "../lib/server/pool-demand.ts";
import { sockets } from "../lib/net/sockets.ts";
import { clientConfig, createGroup, echoApp, onlineClient, randomData, roundTrip, sha256, testServer, until } from "./helpers.ts";

const POOL = 8;
/** Users of the burst: more than POOL, so some wait for a new work connection. */
const BURST = 24;
/** Past this, a burst's demand has left both windows and its extra connections are unused long enough to close. */
const QUIET_AFTER_MS = 2 * POOL_WINDOW_MS + IDLE_WORK_TIMEOUT_MS + 1;

const server = await testServer({ poolSize: POOL });
const echo = await echoApp();
const connectors: Connector[] = [];
/** Public port of each group's app. */
const ports: Record<string, number> = {};
const base = { pooled: idleWork.pooled, requested: idleWork.requested, appSockets: appSockets.open };

afterAll(() => {
  for (const c of connectors) c.stop();
  server.stop();
  echo.close();
});

async function online(group: string): Promise<{ port: number; connector: Connector }> {
  expect(await createGroup(server, group, ["a"])).toBe(201);
  // Heartbeats every 0.2 s: each is a frame on which the server would top its pool up.
  const { connector, apps } = await onlineClient(clientConfig(server, group, [{ name: "a", localAddr: `127.0.0.1:${echo.port}` }], { heartbeatInterval: 0.2 }));
  connectors.push(connector);
  ports[group] = apps[0]!.remotePort;
  return { port: apps[0]!.remotePort, connector };
}

/** `n` users at once, each with its own bytes: every one comes back whole. */
async function burst(port: number, n: number, seed: number): Promise<void> {
  const datas = Array.from({ length: n }, (_, i) => randomData(20_000 + i * 37, seed + i));
  const results = await Promise.all(datas.map((d) => roundTrip(port, d)));
  results.forEach((r, i) => {
    expect(r.received).toBe(datas[i]!.length);
    expect(r.hash).toBe(sha256(datas[i]!));
  });
}

/** Resolves after the server has heard `n` more frames of the session's client (heartbeats). */
async function heartbeats(group: string, n: number): Promise<void> {
  const session = server.hub.session(group)!;
  for (let i = 0; i < n; i++) {
    const seen = session.lastSeen;
    await until(() => session.lastSeen > seen, 3000, "a heartbeat");
  }
}

describe("adaptive pools of idle work connections", () => {
  test(`a quiet group holds QUIET_POOL (${QUIET_POOL}) idle work connection, not poolSize (${POOL}), through heartbeats`, async () => {
    expect(QUIET_POOL).toBe(1);
    const { port, connector } = await online("quiet");
    const session = server.hub.session("quiet")!;
    await until(() => session.pooled === QUIET_POOL && connector.idleWork === QUIET_POOL, 3000, "the warm connection pooled");
    expect(session.poolTarget).toBe(QUIET_POOL);
    // Every heartbeat could top the pool up: none asks for more.
    await heartbeats("quiet", 3);
    expect(session.pooled).toBe(QUIET_POOL);
    expect(connector.idleWork).toBe(QUIET_POOL);
    expect(session.counts.workOpened).toBe(QUIET_POOL);
    // Its first user finds the warm connection: no dial on its path.
    const data = randomData(100_000, 1);
    expect((await roundTrip(port, data)).hash).toBe(sha256(data));
    expect(session.counts.workOpened).toBeLessThanOrEqual(QUIET_POOL + 1); // the one used, and its refill
  });

  test(`a burst of ${BURST} users on a quiet group: every byte back, the pool grows to poolSize, and shrinks to QUIET_POOL after the quiet period`, async () => {
    const { port, connector } = await online("bursty");
    const session = server.hub.session("bursty")!;
    await until(() => session.pooled === QUIET_POOL, 3000, "the warm connection pooled");
    await burst(port, BURST, 100);
    expect(session.poolTarget).toBe(POOL);
    await until(() => session.counts.workFreed >= BURST, 5000, "every stream freed");
    expect(session.pooled).toBeGreaterThanOrEqual(POOL);
    // Busy now: the next users find warm connections, none waits for a dial.
    const opened = session.counts.workOpened;
    await burst(port, POOL / 2, 200);
    expect(session.counts.workOpened).toBe(opened);
    // Not quiet long enough yet: kept.
    const pooled = session.pooled;
    session.trimIdle(performance.now() + POOL_WINDOW_MS / 2);
    expect(session.pooled).toBe(pooled);
    // Quiet for both windows and the idle timeout: back to QUIET_POOL, at both ends.
    session.trimIdle(performance.now() + QUIET_AFTER_MS);
    expect(session.poolTarget).toBe(QUIET_POOL);
    expect(session.pooled).toBe(QUIET_POOL);
    await until(() => connector.idleWork === QUIET_POOL, 3000, "the client saw the idle connections close");
    await heartbeats("bursty", 2);
    expect(session.pooled).toBe(QUIET_POOL);
    const again = randomData(1 << 20, 5);
    expect((await roundTrip(port, again)).hash).toBe(sha256(again));
  });

  test("with a low idle-work budget the server holds no idle connection beyond it, and every user is still served", async () => {
    expect(IDLE_WORK_SHARE).toBeGreaterThan(0);
    expect(IDLE_WORK_SHARE).toBeLessThan(1);
    const limit = idleWork.limit;
    // Room for exactly one idle connection in the whole process beyond what is held now.
    idleWork.limit = idleWork.pooled + idleWork.requested + 1;
    try {
      const { port, connector } = await online("tight");
      const session = server.hub.session("tight")!;
      await until(() => session.pooled === 1 && connector.idleWork === 1, 3000, "the one connection the budget allows");
      expect(idleWorkRoom()).toBe(0);
      let most = idleWork.pooled;
      const watch = setInterval(() => (most = Math.max(most, idleWork.pooled)), 2);
      try {
        // Users beyond the budget each get a connection asked for them (one round trip), then it closes.
        await burst(port, 12, 300);
        for (let i = 0; i < 5; i++) await burst(port, 1, 400 + i);
        await until(() => session.counts.workFreed >= 17, 5000, "every stream freed");
      } finally {
        clearInterval(watch);
      }
      expect(most).toBeLessThanOrEqual(idleWork.limit);
      expect(idleWork.pooled).toBeLessThanOrEqual(idleWork.limit);
      expect(session.pooled).toBeLessThanOrEqual(1);
      await heartbeats("tight", 2);
      expect(idleWork.pooled).toBeLessThanOrEqual(idleWork.limit);
      // The budget falls under what is pooled (users took the descriptors): the sweep closes idle ones.
      idleWork.limit = idleWork.pooled - session.pooled;
      session.trimIdle();
      expect(session.pooled).toBe(0);
      await until(() => connector.idleWork === 0, 3000, "the client saw its idle connection close");
      await heartbeats("tight", 2);
      expect(session.pooled).toBe(0);
      // A group with no idle connection: its user waits one round trip, and is served.
      const data = randomData(300_000, 9);
      expect((await roundTrip(port, data)).hash).toBe(sha256(data));
    } finally {
      idleWork.limit = limit;
    }
  });

  test("the budget is a share of the descriptors that busy sockets and app listeners leave free", () => {
    expect(appSockets.open).toBe(base.appSockets + 3); // the three groups' TCP apps
    const max = sockets.max;
    try {
      const busy = sockets.open + appSockets.open - idleWork.pooled;
      sockets.max = busy + 1000;
      expect(idleWorkRoom()).toBe(Math.floor(1000 * IDLE_WORK_SHARE) - idleWork.pooled - idleWork.requested);
    } finally {
      sockets.max = max;
    }
  });

  test("over the budget, the sweeps of all sessions together close just enough idle connections, not more", async () => {
    const SHORT = 4;
    const sessions = ["quiet", "bursty"].map((g) => server.hub.session(g)!);
    // Enough idle connections in each that one sweep alone could close all SHORT.
    for (const g of ["quiet", "bursty"]) await burst(ports[g]!, SHORT + 2, 500);
    await until(() => sessions.every((s) => s.pooled >= SHORT) && idleWork.requested === 0, 3000, "pools settled");
    const max = sockets.max;
    const busy = sockets.open + appSockets.open - idleWork.pooled;
    const used = idleWork.pooled + idleWork.requested;
    // The file limit at which the budget is SHORT connections short.
    let m = busy;
    while (Math.floor((m - busy) * IDLE_WORK_SHARE) - used < -SHORT && m < busy + 4 * used) m++;
    sockets.max = m;
    try {
      expect(idleWorkRoom()).toBe(-SHORT);
      const before = idleWork.pooled;
      // Each sweep sees the closes of the sweeps before it (an idle socket's end closes it at once in Bun).
      for (const s of sessions) s.trimIdle();
      expect(idleWork.pooled).toBe(before - SHORT);
      expect(idleWorkRoom()).toBe(0);
    } finally {
      sockets.max = max;
    }
  });

  test("sessions that end give their idle connections back to the budget", async () => {
    for (const c of connectors.splice(0)) c.stop();
    await until(() => ["quiet", "bursty", "tight"].every((g) => !server.hub.session(g)), 5000, "every session ended");
    await until(() => idleWork.pooled === base.pooled && idleWork.requested === base.requested, 3000, "the budget's use back where it was");
    expect(appSockets.open).toBe(base.appSockets);
  });
});
