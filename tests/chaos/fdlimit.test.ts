/**
 * Scenario 6: file-descriptor exhaustion. The server runs under
 * `ulimit -n 256` and gets more connections than it can hold: it must keep
 * running, not spin a CPU (BUN-NOTES.md: a listener that hits EMFILE spins
 * at 100 %), refuse the excess, and serve normally once connections close.
 */
import { afterAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { encode, FrameType, withMagic } from "../../protocol.ts";
import { deadPort } from "../helpers.ts";
import { tempDir, type Proc } from "../procs.ts";
import { clientToml, countingEcho, cpuSeconds, echoCheck, fdCount, groupToml, killAll, serverToml, startClient, startServer, until } from "./harness.ts";

/** The server's descriptor limit. */
const NOFILE = 256;
/** Connections thrown at it: well past the limit. */
const FLOOD = 600;
/** How long the CPU is watched while the server is out of descriptors, ms. */
const WATCH_MS = 3000;
/** Most CPU the server may use meanwhile, as a share of one core. */
const MAX_CPU_SHARE = 0.25;

const procs: Proc[] = [];
const echo = await countingEcho();

afterAll(async () => {
  await killAll(procs);
  echo.close();
});

describe("scenario 6: file-descriptor exhaustion", () => {
  test(`under ulimit -n ${NOFILE}, ${FLOOD} connections: the server keeps running without spinning, refuses the excess, and serves again afterwards`, async () => {
    const dir = tempDir();
    const ctrl = await deadPort();
    // A long handshake timeout: the flood holds its descriptors for the whole test.
    const server = await startServer(dir, serverToml(dir, ctrl, groupToml("home", ["echo"]), { handshakeTimeout: 60 }), { nofile: NOFILE });
    procs.push(server.proc);
    const limits = (await Bun.file(`/proc/${server.proc.pid}/limits`).text()).split("\n").find((l) => l.startsWith("Max open files"));
    expect(limits).toContain(String(NOFILE));
    const client = await startClient(dir, clientToml(ctrl, "home", { echo: echo.port }), ["echo"]);
    procs.push(client.proc);
    expect((await echoCheck(client.ports.echo!, 1 << 20, 1)).ok).toBe(true);
    const idle0 = cpuSeconds(server.proc.pid);
    await Bun.sleep(1000); // the idle baseline: heartbeats only
    const idleShare = cpuSeconds(server.proc.pid) - idle0;

    // The flood: each connection says hello and no more; the server answers a connection it accepted with its challenge.
    const flood: { s: net.Socket; answered: boolean; closed: boolean }[] = [];
    for (let i = 0; i < FLOOD; i++) {
      const c = { s: net.connect({ port: ctrl, host: "127.0.0.1" }), answered: false, closed: false };
      c.s.on("data", () => (c.answered = true));
      c.s.on("error", () => {});
      c.s.on("close", () => (c.closed = true));
      c.s.on("connect", () => c.s.write(withMagic(encode({ type: FrameType.Hello }))));
      flood.push(c);
    }
    // Users too, on the app's public port: each holds a user socket and a work connection on the server.
    for (let i = 0; i < FLOOD / 2; i++) {
      const c = { s: net.connect({ port: client.ports.echo!, host: "127.0.0.1" }), answered: false, closed: false };
      c.s.on("data", () => (c.answered = true));
      c.s.on("error", () => {});
      c.s.on("close", () => (c.closed = true));
      c.s.on("connect", () => c.s.write("x"));
      flood.push(c);
    }
    // Every connection gets an answer (a challenge, an echo, or a refusal) or is closed: none is left in the backlog.
    await until(() => flood.every((c) => c.answered || c.closed), 20_000, `every flood connection answered or closed (${flood.filter((c) => !c.answered && !c.closed).length} waiting)`);
    const fdsAtPeak = fdCount(server.proc.pid);
    const cpu0 = cpuSeconds(server.proc.pid);
    const t0 = performance.now();
    await Bun.sleep(WATCH_MS);
    const share = (cpuSeconds(server.proc.pid) - cpu0) / ((performance.now() - t0) / 1000);
    const refused = flood.filter((c) => c.closed).length;
    const answered = flood.filter((c) => c.answered && !c.closed).length;
    const waiting = flood.length - answered - refused;
    console.log(`fd exhaustion: server at ${fdsAtPeak}/${NOFILE} fds; CPU ${(share * 100).toFixed(0)} % of a core over ${WATCH_MS} ms (idle baseline ${(idleShare * 100).toFixed(0)} %); flood of ${flood.length}: ${answered} held open and answered, ${refused} refused (closed), ${waiting} left waiting`);
    // It held what it could and refused the rest before running out of descriptors.
    expect(fdsAtPeak).toBeLessThan(NOFILE);
    expect(refused).toBeGreaterThan(0);
    expect(server.proc.child.exitCode).toBeNull();

    // The flood leaves; the server must be fully usable again.
    for (const c of flood) c.s.destroy();
    await until(() => fdCount(server.proc.pid) < 64, 10_000, `server descriptors released (at ${fdCount(server.proc.pid)})`);
    expect((await echoCheck(client.ports.echo!, 1 << 20, 2)).ok).toBe(true);
    // A fresh login works too.
    await client.proc.kill("SIGKILL");
    const again = await startClient(dir, clientToml(ctrl, "home", { echo: echo.port }), ["echo"], "client2");
    procs.push(again.proc);
    expect(again.ports).toEqual(client.ports);
    expect((await echoCheck(again.ports.echo!, 1 << 20, 3)).ok).toBe(true);

    expect(share).toBeLessThan(MAX_CPU_SHARE);
    // Excess connections are refused (closed), not left in the backlog without an answer.
    expect(waiting).toBe(0);
  }, 60_000);
});
