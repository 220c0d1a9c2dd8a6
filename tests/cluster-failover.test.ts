/**
 * Several servers as one (issue 20), failures with real processes: a
 * throwaway PostgreSQL, three server processes on 127.0.0.11, .12 and .13
 * (same config but for bindAddr and nodeName; one group with a TCP echo app
 * at a fixed remotePort from server.toml), and a client process whose
 * `servers` lists the three control ports.
 *
 * 1. kill -9 of the node holding the session while a user streams through it
 *    and another streams through a node forwarding to it: both users are cut
 *    (an error, never a short clean end), the client is online on another node
 *    within heartbeatTimeout + backoff, the app answers byte-exact through both
 *    survivors at the same port, and no lease of the dead node is left.
 * 2. The killed node starts again with the same config: it joins and forwards
 *    the app to the holder.
 * 3. The database stops while a user streams through a forwarding node: that
 *    stream completes byte-exact, new users reach the app through every node,
 *    an API change answers 503 naming the database; once the database is back
 *    the API works again and a new group reaches every node.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { SQL } from "bun";
import { createHash } from "node:crypto";
import { rmSync } from "node:fs";
import net from "node:net";
import { freePort } from "../bench/common.ts";
import { backoffDelay } from "../lib/client/connector.ts";
import { Pattern, feed } from "./chaos/harness.ts";
import { echoApp, TOKEN } from "./helpers.ts";
import { postgresMissing, startPostgres, type TestPostgres } from "./pg.ts";
import { startClientProc, startServerProc, tempDir, type Proc } from "./procs.ts";

const missing = postgresMissing();
if (missing) console.warn(`tests/cluster-failover.test.ts skipped: ${missing}`);
const suite = missing ? describe.skip : describe;

const ADMIN = "admin-token-for-failover-tests";
const CLUSTER_TOKEN = "cluster-token-for-failover-0123456789";
const ADDRS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"] as const;
const NAMES = ["n1", "n2", "n3"] as const;
const addr = (i: number): string => ADDRS[i]!;
const nodeName = (i: number): string => NAMES[i]!;
/** Server heartbeatTimeout (s): a lease not renewed for this long expires. */
const HEARTBEAT_TIMEOUT_S = 2;
/** Client heartbeat (s). */
const CLIENT_HEARTBEAT = { interval: 0.5, timeout: 2 };

let pg: TestPostgres;
let db: SQL;
const echo = await echoApp();
const ports = { control: 0, api: 0, peer: 0, app: 0 };
const dirs: string[] = [];
const nodes: (Proc | null)[] = [null, null, null];
let client: Proc;
/** The node (index) that holds the group's session after scenario 1. */
let holder = -1;

function serverToml(i: number): string {
  return `bindAddr = "${addr(i)}"
controlPort = ${ports.control}
apiHost = "${addr(i)}"
apiPort = ${ports.api}
peerPort = ${ports.peer}
dataDir = "${dirs[i]}/data"
adminToken = "${ADMIN}"
heartbeatTimeout = ${HEARTBEAT_TIMEOUT_S}
handshakeTimeout = 2
database = "${pg.url}"
clusterToken = "${CLUSTER_TOKEN}"
nodeName = "${nodeName(i)}"
[[groups]]
name = "home"
token = "${TOKEN}"
[[groups.apps]]
name = "echo"
remotePort = ${ports.app}
`;
}

function clientToml(): string {
  return `servers = [${ADDRS.map((a) => `"${a}:${ports.control}"`).join(", ")}]
group = "home"
token = "${TOKEN}"
heartbeatInterval = ${CLIENT_HEARTBEAT.interval}
heartbeatTimeout = ${CLIENT_HEARTBEAT.timeout}
[[apps]]
name = "echo"
localAddr = "127.0.0.1:${echo.port}"
`;
}

/** An admin API call on node `i`. */
async function api(i: number, method: string, path: string, body?: unknown): Promise<{ status: number; body: any; ms: number }> {
  const t0 = performance.now();
  const res = await fetch(`http://${addr(i)}:${ports.api}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, body: await res.json().catch(() => null), ms: performance.now() - t0 };
}

/** A query of the test's own connection; tried twice (Bun.SQL 1.4.5 now and then fails a query of a healthy pool, see lib/cluster/cluster.ts). */
async function query<T = Record<string, unknown>>(run: () => Promise<unknown>): Promise<T[]> {
  try {
    return (await run()) as T[];
  } catch {
    return (await run()) as T[];
  }
}

const leases = () => query<{ grp: string; node: string; session: string; expires_at: Date }>(() => db`SELECT grp, node, session, expires_at FROM warren_leases ORDER BY grp`);

/** Polls `cond` every `every` ms until it holds; fails after `ms`; resolves with the time it took. */
async function until(cond: () => boolean | Promise<boolean>, ms: number, what: string, every = 25): Promise<number> {
  const t0 = performance.now();
  while (!(await cond())) {
    if (performance.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await Bun.sleep(every);
  }
  return performance.now() - t0;
}

/** `p`, or a rejection naming `what` after `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: Timer;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

/** How a user's connection ended. */
interface Outcome {
  received: number;
  hash: string;
  /** A FIN came (the 'end' event), and at how many bytes received. */
  ended: boolean;
  endedAt: number;
  /** The socket's error (ECONNRESET, EPIPE, ECONNREFUSED...), if any. */
  error: string | null;
  /** Events in order, e.g. ["end@123", "error:ECONNRESET", "close"]. */
  events: string[];
  closedAt: number;
}

/** A user streaming `total` bytes of a pattern through the echo app at host:port (both ways at once), optionally paced. */
function transfer(host: string, port: number, total: number, seed: number, rate = 0) {
  const pattern = Pattern.of(seed);
  const s = net.connect({ host, port, allowHalfOpen: true });
  const h = createHash("sha256");
  const st = { received: 0 };
  const events: string[] = [];
  let ended = false;
  let endedAt = -1;
  let error: string | null = null;
  s.on("data", (d: Buffer) => {
    st.received += d.length;
    h.update(d);
  });
  // A FIN from the other side is recorded, not answered: a user still sending keeps sending (and then learns of a reset).
  s.on("end", () => {
    ended = true;
    endedAt = st.received;
    events.push(`end@${st.received}`);
  });
  s.on("error", (e: NodeJS.ErrnoException) => {
    error ??= e.code ?? e.message;
    events.push(`error:${e.code ?? e.message}`);
  });
  s.once("connect", () => void feed(s, pattern, total, rate).catch(() => {}));
  const done = new Promise<Outcome>((resolve) =>
    s.on("close", () => {
      events.push("close");
      resolve({ received: st.received, hash: h.digest("hex"), ended, endedAt, error, events, closedAt: performance.now() });
    }),
  );
  return { socket: s, pattern, total, get received() {
    return st.received;
  }, get sent() {
    return s.bytesWritten;
  }, done };
}

/** Whether an outcome is the whole echo, byte-exact, ended cleanly. */
function complete(o: Outcome, pattern: Pattern, total: number): boolean {
  return o.received === total && o.ended && o.error === null && o.hash === pattern.hash(total);
}

/** One user's echo round trip of `total` bytes through host:port; bounded by `ms` (the socket is destroyed then). */
async function echoCheck(host: string, total: number, seed: number, ms = 5_000): Promise<{ ok: boolean; outcome: Outcome | null; why: string }> {
  const t = transfer(host, ports.app, total, seed);
  try {
    const o = await within(t.done, ms, `echo of ${total} bytes through ${host}:${ports.app}`);
    const ok = complete(o, t.pattern, total);
    return { ok, outcome: o, why: ok ? "ok" : `received ${o.received} of ${total} (${o.events.join(" ")})` };
  } catch (err) {
    t.socket.destroy();
    return { ok: false, outcome: null, why: (err as Error).message };
  }
}

/** Retries an echo check through `host` until it succeeds (a forwarding node opens its port shortly after it learns of a new holder). */
async function reachable(host: string, total: number, seed: number, ms: number): Promise<number> {
  let last = "";
  return until(
    async () => {
      const r = await echoCheck(host, total, seed, Math.min(ms, 5_000));
      last = r.why;
      return r.ok;
    },
    ms,
    `the app to answer byte-exact through ${host}:${ports.app}`,
    50,
  ).catch((err: Error) => {
    throw new Error(`${err.message}; last try: ${last}`);
  });
}

/** Log lines of node `i` from line `from` on that match `re`. */
function linesOf(p: Proc | null, re: RegExp, from = 0): string[] {
  return p ? p.lines.slice(from).filter((l) => re.test(l)) : [];
}

beforeAll(async () => {
  if (missing) return;
  const t0 = performance.now();
  pg = await startPostgres();
  db = new Bun.SQL({ url: pg.url, max: 1, connectionTimeout: 5 });
  ports.control = await freePort();
  ports.api = await freePort();
  ports.peer = await freePort();
  ports.app = await freePort();
  for (let i = 0; i < 3; i++) dirs.push(tempDir());
  // The three nodes start at once (as a service manager would start them): schema, config groups and node rows race.
  const started = await Promise.all([0, 1, 2].map((i) => startServerProc(dirs[i]!, serverToml(i))));
  started.forEach((s, i) => (nodes[i] = s.proc));
  // The client's first server is node 1: it holds the session.
  dirs.push(tempDir());
  const c = await startClientProc(dirs[3]!, clientToml(), ["echo"]);
  client = c.proc;
  expect(c.ports.echo).toBe(ports.app);
  await until(async () => (await leases()).some((l) => l.grp === "home" && l.node === "n1"), 5_000, "node 1's lease of the group");
  // Nodes 2 and 3 learn of the lease and open the app on their addresses.
  for (const i of [1, 2]) await until(async () => (await api(i, "GET", "/api/groups/home")).body?.node === "n1", 5_000, `node ${i + 1} to name node 1 as the holder`);
  for (const [i, host] of ADDRS.entries()) await reachable(host, 1 << 20, 100 + i, 5_000);
  console.log(`setup: PostgreSQL, 3 nodes and a client in ${(performance.now() - t0).toFixed(0)} ms; app port ${ports.app}`);
}, 45_000);

afterAll(async () => {
  for (const p of [client, ...nodes]) if (p && p.child.exitCode === null) await p.kill("SIGKILL");
  await db?.close().catch(() => {});
  await pg?.stop();
  echo.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

suite("three node processes on one database", () => {
  test("1. kill -9 of the holding node mid-transfer: its users and the forwarded ones are cut, never short-ended; the client moves; the app is back through both survivors", async () => {
    const BIG = 1 << 30;
    // A user on the holder itself, and one on node 2 (forwarded over the link to node 1), both at full speed.
    const direct = transfer(addr(0), ports.app, BIG, 11);
    const forwarded = transfer(addr(1), ports.app, BIG, 12);
    await until(() => direct.received >= 4 << 20 && forwarded.received >= 4 << 20, 10_000, "both transfers under way");
    const mark = client.lines.length;
    const tKill = performance.now();
    await nodes[0]!.kill("SIGKILL");
    nodes[0] = null;
    const [d, f] = await within(Promise.all([direct.done, forwarded.done]), 5_000, "both users to be closed after the kill");
    const cut = { direct: d.closedAt - tKill, forwarded: f.closedAt - tKill };
    console.log(
      `kill -9 of n1: direct user got ${(d.received / 2 ** 20).toFixed(1)} MiB, sent ${(direct.sent / 2 ** 20).toFixed(1)} MiB, closed after ${cut.direct.toFixed(0)} ms: ${d.events.join(" ")}; ` +
        `forwarded user (via n2) got ${(f.received / 2 ** 20).toFixed(1)} MiB, sent ${(forwarded.sent / 2 ** 20).toFixed(1)} MiB, closed after ${cut.forwarded.toFixed(0)} ms: ${f.events.join(" ")}`,
    );
    for (const [name, o, t] of [["direct", d, direct], ["forwarded", f, forwarded]] as const) {
      if (complete(o, t.pattern, BIG)) continue; // finished before the kill: byte-exact, fine
      // Cut: fewer bytes than sent, and an error (a reset), never a clean end.
      expect(o.received, `${name} user: received`).toBeLessThan(t.sent);
      expect(o.error, `${name} user: an error (reset), not a clean end (${o.events.join(" ")})`).not.toBeNull();
    }
    // The forwarding node is alive: it must reset its user, never send it a FIN (a lost link leaves the stream unprovable).
    expect(f.ended, `forwarded user must see no FIN (${f.events.join(" ")})`).toBe(false);
    // The holder's own user: its socket was closed by the kernel of a killed process. While the user still
    // sends, that is a reset; a FIN first would be the kernel's doing (no unread data at that instant), and
    // must still be followed by the reset of the user's next write.
    expect(d.error, `direct user: ${d.events.join(" ")}`).not.toBeNull();

    // The client logs in on the next server of its list (node 2) and is online again.
    const bound = CLIENT_HEARTBEAT.timeout * 1000 + backoffDelay(0, 1) + backoffDelay(1, 1);
    await client.waitFor(/app echo \(tcp\) is reachable at/, bound + 1_000, mark);
    const failoverMs = performance.now() - tKill;
    // The new holder writes its lease just after the login is answered.
    await until(async () => (await leases()).some((l) => l.grp === "home" && l.node !== "n1"), 2_000, "the group's lease to leave n1");
    const moved = await leases();
    const home = moved.find((l) => l.grp === "home");
    console.log(`failover: client online again ${failoverMs.toFixed(0)} ms after the kill, on ${home?.node} (bound ${bound} ms: client heartbeatTimeout + 2 backoffs); client said: ${linesOf(client, /reconnecting|reachable/, mark).join(" | ")}`);
    expect(failoverMs).toBeLessThan(bound);
    expect(home?.node === "n2" || home?.node === "n3").toBe(true);
    holder = NAMES.indexOf(home!.node as (typeof NAMES)[number]);
    // No lease of the dead node is left for the group (nor any other).
    expect(moved.filter((l) => l.node === "n1")).toEqual([]);

    // Both survivors serve the app at the same port: the holder itself, the other forwarding to it.
    const other = holder === 1 ? 2 : 1;
    await until(async () => (await api(other, "GET", "/api/groups/home")).body?.node === nodeName(holder), 3_000, `node ${other + 1} to name the new holder`);
    for (const i of [1, 2]) {
      const ms = await reachable(addr(i), 8 << 20, 20 + i, 5_000);
      console.log(`after failover: 8 MiB byte-exact through ${addr(i)}:${ports.app} (${i === holder ? "holder" : "forwarding"}) after ${ms.toFixed(0)} ms of retries`);
    }
    // Still no lease of n1 a heartbeatTimeout later (nothing brings it back).
    expect((await leases()).filter((l) => l.node === "n1")).toEqual([]);
  }, 30_000);

  test("2. the killed node starts again with the same config, joins, and forwards the app to the holder", async () => {
    expect(holder).toBeGreaterThan(0);
    const t0 = performance.now();
    const s = await startServerProc(dirs[0]!, serverToml(0));
    nodes[0] = s.proc;
    const readyMs = performance.now() - t0;
    await until(async () => (await api(0, "GET", "/api/groups/home")).body?.node === nodeName(holder), 3_000, "node 1 to name the holder");
    const ms = await reachable(addr(0), 8 << 20, 30, 5_000);
    console.log(`restart of n1: ready in ${readyMs.toFixed(0)} ms, app byte-exact through it ${ms.toFixed(0)} ms later (forwarded to ${nodeName(holder)})`);
    // One lease for the group, the holder's: the restart took nothing over.
    expect((await leases()).map((l) => [l.grp, l.node])).toEqual([["home", nodeName(holder)]]);
    for (const [i, host] of ADDRS.entries()) await reachable(host, 1 << 20, 40 + i, 3_000);
  }, 30_000);

  test("3. the database stops mid-transfer: streams, links and sessions go on, API changes answer 503; once it is back the API works and changes reach every node", async () => {
    expect(holder).toBeGreaterThan(0);
    const fwd = [0, 1, 2].filter((i) => i !== holder);
    const via = fwd[0]!; // a forwarding node
    const TOTAL = 64 << 20;
    const t = transfer(addr(via), ports.app, TOTAL, 50, 12 << 20); // ~5 s
    await until(() => t.received >= 1 << 20, 5_000, "the transfer through a forwarding node under way");
    const marks = { client: client.lines.length, nodes: nodes.map((p) => p!.lines.length) };

    const tPause = performance.now();
    await pg.pause();
    const pausedAt = performance.now();
    console.log(`database stopped (pg_ctl stop -m immediate took ${(pausedAt - tPause).toFixed(0)} ms) with the transfer at ${(t.received / 2 ** 20).toFixed(1)} MiB`);

    // New users through every node, the holder and both forwarding nodes.
    for (const [i, host] of ADDRS.entries()) {
      const r = await echoCheck(host, 1 << 20, 60 + i, 5_000);
      expect(r.ok, `a new user through ${host} while the database is away: ${r.why}`).toBe(true);
    }
    // A change through the API: 503, naming the database.
    const during = await api(via, "POST", "/api/groups", { name: "during", token: TOKEN, apps: [{ name: "x" }] });
    console.log(`POST /api/groups while the database is away: ${during.status} in ${during.ms.toFixed(0)} ms: ${JSON.stringify(during.body)}`);
    expect(during.status).toBe(503);
    expect(String(during.body?.error)).toMatch(/database/i);
    expect(String(during.body?.error)).toMatch(/unavailable/i);
    expect(during.ms).toBeLessThan(6_000);
    // Reads answer from memory.
    expect((await api(holder, "GET", "/api/groups/home")).status).toBe(200);

    // The established transfer completes byte-exact.
    const o = await within(t.done, 20_000, "the transfer through the forwarding node to finish");
    expect(o.received).toBe(TOTAL);
    expect(o.error).toBeNull();
    expect(o.ended).toBe(true);
    expect(o.hash).toBe(t.pattern.hash(TOTAL));
    // The database stays away for longer than a lease lives, so every lease has expired by its clock when it is back.
    const awayMs = performance.now() - pausedAt;
    if (awayMs < HEARTBEAT_TIMEOUT_S * 1000 + 500) await Bun.sleep(HEARTBEAT_TIMEOUT_S * 1000 + 500 - awayMs);
    // The session did not drop, nor did any node or link.
    expect(linesOf(client, /reconnecting|server closed the session|reachable at/, marks.client)).toEqual([]);
    for (const [i, p] of nodes.entries()) {
      expect(p!.child.exitCode, `node ${i + 1} still running`).toBeNull();
      expect(linesOf(p, /link down|link from a node closed/, marks.nodes[i])).toEqual([]);
    }

    // From now on, users keep arriving through the forwarding nodes: none may be turned away while the database comes back.
    const probes: { at: number; host: string; why: string }[] = [];
    let probing = true;
    let tResume = 0;
    let probeCount = 0;
    const prober = (async () => {
      for (let n = 0; probing; n++) {
        for (const i of fwd) {
          const r = await echoCheck(addr(i), 16 << 10, 70 + (n % 50), 3_000);
          probeCount++;
          if (!r.ok) probes.push({ at: tResume ? performance.now() - tResume : -1, host: addr(i), why: r.why });
        }
        await Bun.sleep(50);
      }
    })();

    tResume = performance.now();
    await pg.resume();
    const resumedMs = performance.now() - tResume;
    // The API works again within a few seconds (each try is a change: a 503 is not committed).
    let tries = 0;
    let created: Awaited<ReturnType<typeof api>> | null = null;
    const apiBackMs = await until(
      async () => {
        tries++;
        created = await api(via, "POST", "/api/groups", { name: "after", token: TOKEN, apps: [{ name: "x" }] });
        return created.status !== 503;
      },
      10_000,
      "the API to accept changes again",
      200,
    );
    expect(created!.status, JSON.stringify(created!.body)).toBe(201);
    const tCreated = performance.now();
    // The new group reaches the other nodes (their LISTEN may still be reconnecting: the 1 s poll, 0.5 s while the
    // database was away, catches up; the bound leaves room for a loaded machine).
    const seen: Record<string, number> = {};
    await until(
      async () => {
        for (const i of [0, 1, 2]) {
          if (i === via || seen[nodeName(i)] !== undefined) continue;
          if ((await api(i, "GET", "/api/groups/after")).status === 200) seen[nodeName(i)] = performance.now() - tCreated;
        }
        return Object.keys(seen).length === 2;
      },
      3_000,
      `the group created on ${nodeName(via)} to appear on the other nodes`,
      100,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; seen so far: ${JSON.stringify(seen)}`);
    });
    // The holder's lease is written again, and the app keeps answering through every node.
    await until(async () => (await leases()).some((l) => l.grp === "home" && l.node === nodeName(holder) && l.expires_at.getTime() > Date.now()), 3_000, "the holder's lease renewed");
    for (const [i, host] of ADDRS.entries()) await reachable(host, 1 << 20, 80 + i, 3_000);
    probing = false;
    await within(prober, 5_000, "the prober to stop");
    console.log(
      `database back: pg_ctl start ${resumedMs.toFixed(0)} ms; API accepted a change ${apiBackMs.toFixed(0)} ms after (${tries} tries); ` +
        `group on the other nodes after ${JSON.stringify(Object.fromEntries(Object.entries(seen).map(([k, v]) => [k, Math.round(v)])))} ms; ` +
        `${probeCount} probes through the forwarding nodes, ${probes.length} failed${probes.length ? `: ${JSON.stringify(probes.slice(0, 5))}` : ""}`,
    );
    const warnings = nodes.flatMap((p, i) => linesOf(p, /lease expired|could not|unavailable/, marks.nodes[i]).map((l) => `${nodeName(i)}: ${l}`));
    if (warnings.length) console.log(`node warnings during the outage:\n  ${warnings.slice(0, 12).join("\n  ")}`);
    expect(linesOf(client, /reconnecting|server closed the session/, marks.client)).toEqual([]);
    // Sessions and links do not depend on the database once up: its coming back must not turn users away either.
    // After an outage longer than heartbeatTimeout every lease looks expired by the database's clock. A node judges
    // another's lease expired only once it has itself reached the database for a whole heartbeatTimeout
    // (Cluster.#trusted), so the live holder renews first and no forwarding node closes the group's ports.
    const refused = probes.length ? `${probes.length} users refused from ${Math.round(probes[0]!.at)} to ${Math.round(probes.at(-1)!.at)} ms after the database was back (${[...new Set(probes.map((p) => `${p.host}: ${p.why}`))].join("; ")})` : "none";
    // The cause, as the nodes log it: a live holder's lease removed as expired (the probes can miss a short window).
    const removed = nodes.flatMap((p, i) => linesOf(p, new RegExp(`lease expired.* node=${nodeName(holder)}\\b`), marks.nodes[i]).map((l) => `${nodeName(i)}: ${l}`));
    expect({ refused, removed }, "users turned away by forwarding nodes once the database is back").toEqual({ refused: "none", removed: [] });
  }, 45_000);
});
