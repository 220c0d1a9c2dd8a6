/**
 * UDP bursts (issue 18, item 3): every Warren UDP socket asks for udpReceiveBuffer (4 MiB
 * by default), and what the kernel still drops at a full buffer is counted (API, logs)
 * instead of vanishing.
 */
import { afterAll, describe, expect, test } from "bun:test";
import type { udp } from "bun";
import { setLogSink } from "../lib/log.ts";
import { setReceiveBuffer, watchKernelDrops } from "../lib/net/udp-buffers.ts";
import { clientConfig, onlineClient, testServer, TOKEN, until } from "./helpers.ts";

type Sock = udp.Socket<"uint8array">;
const fdOf = (s: Sock) => (s as unknown as { fd: number }).fd;
const lines: string[] = [];
setLogSink((l) => lines.push(l));
const cleanup: (() => void)[] = [];
afterAll(() => {
  for (const f of cleanup.reverse()) f();
  setLogSink((l) => process.stderr.write(l + "\n"));
});

/** A UDP socket on loopback with a 4 MiB receive buffer that counts (and, as an echo app, answers) what it gets. */
async function socket(echo: boolean) {
  const state = { got: 0 };
  const sock = await Bun.udpSocket({
    hostname: "127.0.0.1",
    binaryType: "uint8array",
    socket: {
      data(s, buf, port, addr) {
        state.got++;
        if (echo) s.send(buf, port, addr);
      },
      error() {},
    },
  });
  await setReceiveBuffer(fdOf(sock), 4 << 20);
  cleanup.push(() => sock.close());
  return { sock, state };
}

/** Registers a group with one UDP app at `localPort` and brings its client online; the app's public port. */
async function udpApp(server: Awaited<ReturnType<typeof testServer>>, name: string, localPort: number) {
  const res = await fetch(`http://127.0.0.1:${server.apiPort}/api/groups`, {
    method: "POST",
    headers: { authorization: `Bearer ${server.adminToken}` },
    body: JSON.stringify({ name, token: TOKEN, apps: [{ name: "u", type: "udp" }] }),
  });
  expect(res.status).toBe(201);
  const { connector, apps } = await onlineClient(clientConfig(server, name, [{ name: "u", type: "udp", localAddr: `127.0.0.1:${localPort}` }]));
  cleanup.push(() => connector.stop());
  return apps[0]!.remotePort;
}

const view = async (server: Awaited<ReturnType<typeof testServer>>, name: string) =>
  (await (await fetch(`http://127.0.0.1:${server.apiPort}/api/groups/${name}`, { headers: { authorization: `Bearer ${server.adminToken}` } })).json()) as {
    apps: { droppedDatagrams: number; kernelDroppedDatagrams: number }[];
  };

describe("udp receive buffers", () => {
  test("setsockopt through bun:ffi: the kernel holds what was asked (Linux doubles it), within net.core.rmem_max", async () => {
    const max = Number((await Bun.file("/proc/sys/net/core/rmem_max").text()).trim());
    const { sock } = await socket(false);
    const asked = Math.min(1 << 20, max);
    const { setReceiveBuffer: set } = await import("../lib/net/udp-buffers.ts");
    expect(await set(fdOf(sock), asked)).toBe(asked * 2);
  });

  test("the kernel's drops are told per socket (by inode) from its creation: a socket with the same port number on ::1 hears none", async () => {
    const a = await Bun.udpSocket({ hostname: "127.0.0.1", binaryType: "uint8array", socket: { data() {}, error() {} } });
    cleanup.push(() => a.close());
    // The one-port-number-two-sockets case that summing by port got wrong (loopback here has ::1).
    const b = await Bun.udpSocket({ hostname: "::1", port: a.port, binaryType: "uint8array", socket: { data() {}, error() {} } });
    cleanup.push(() => b.close());
    await setReceiveBuffer(fdOf(a), 1);
    const { sock: user } = await socket(false);
    // Sent before the watch starts and without yielding: these drops happen before any reading is taken, and still count.
    for (let i = 0; i < 200; i++) user.send(new Uint8Array(1000), a.port, "127.0.0.1");
    const told = { a: 0, b: 0 };
    let heard = () => {};
    const first = new Promise<void>((r) => (heard = r));
    const stopA = watchKernelDrops(fdOf(a), (n) => {
      told.a += n;
      heard();
    });
    const stopB = watchKernelDrops(fdOf(b), (n) => void (told.b += n));
    cleanup.push(stopA, stopB);
    const timer = setTimeout(heard, 10_000);
    await first;
    clearTimeout(timer);
    // One pass of the sampler reads both sockets, so b's share is known once a's is.
    expect(told.a).toBeGreaterThan(150);
    expect(told.b).toBe(0);
  }, 20_000);

  test("500 datagrams sent back to back through the tunnel: all 500 echoed, none dropped", async () => {
    const server = await testServer();
    cleanup.push(() => server.stop());
    const app = await socket(true);
    const port = await udpApp(server, "burst", app.sock.port);
    const user = await socket(false);
    // One datagram first, so the client's local socket for this peer exists before the burst.
    user.sock.send(new Uint8Array(200), port, "127.0.0.1");
    await until(() => user.state.got === 1, 5000, "the first echo");
    for (let i = 0; i < 500; i++) user.sock.send(new Uint8Array(200).fill(i & 0xff), port, "127.0.0.1");
    await until(() => user.state.got === 501, 10_000, `all 500 echoes (got ${user.state.got - 1})`);
    expect(app.state.got).toBe(501);
    expect((await view(server, "burst")).apps[0]).toMatchObject({ droppedDatagrams: 0, kernelDroppedDatagrams: 0 });
  });

  test("with a tiny udpReceiveBuffer the kernel drops part of a burst: the drops are counted in the API and logged", async () => {
    const server = await testServer({ udpReceiveBuffer: 1 });
    cleanup.push(() => server.stop());
    const app = await socket(true);
    const port = await udpApp(server, "tiny", app.sock.port);
    const user = await socket(false);
    lines.length = 0;
    // Sent without yielding: the server (same process) cannot read until the burst is out, and its buffer holds a few.
    for (let i = 0; i < 500; i++) user.sock.send(new Uint8Array(1000), port, "127.0.0.1");
    let seen = { droppedDatagrams: 0, kernelDroppedDatagrams: 0 };
    await until(async () => (seen = (await view(server, "tiny")).apps[0]!).kernelDroppedDatagrams > 0, 5000, "the kernel's drops counted");
    expect(seen.kernelDroppedDatagrams).toBeGreaterThan(0);
    expect(seen.droppedDatagrams).toBeGreaterThanOrEqual(seen.kernelDroppedDatagrams);
    // What reached the app and what the kernel dropped account for the burst (nothing else drops here).
    await until(async () => app.state.got + (await view(server, "tiny")).apps[0]!.kernelDroppedDatagrams === 500, 5000, "every datagram accounted for");
    await until(() => lines.some((l) => l.includes("udp datagrams dropped") && l.includes("receive buffer full")), 10_000, "the drop logged");
  }, 20_000); // its waits (the drops are read from /proc on a timer, the log after them) add up past the default 5 s on busy cores
});
