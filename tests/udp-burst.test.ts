/**
 * UDP bursts through a tunnel (issue 21, part 4): the client sends the datagrams of a read
 * with one sendMany per peer, both sides remember the last peer instead of keying each
 * datagram, and the frame reader reuses the last peer address. Bursts of distinct datagrams
 * from interleaved peers must still arrive complete, intact and in order (SHA-256 each).
 */
import { afterAll, describe, expect, test } from "bun:test";
import type { udp } from "bun";
import { DatagramReader, encodeDatagramInto } from "../protocol.ts";
import { setReceiveBuffer } from "../lib/net/udp-buffers.ts";
import { clientConfig, onlineClient, randomData, sha256, testServer, TOKEN } from "./helpers.ts";

type Sock = udp.Socket<"uint8array">;
/** Datagrams per peer in a burst: with 2 peers, 2.9 MB back to back, within the 4 MiB receive buffers. */
const BURST = 1_200;
const SIZE = 1_200;
/** How long a burst may take to come back on a loaded machine. */
const BURST_MS = 20_000;

const cleanup: (() => void)[] = [];
afterAll(() => {
  for (const f of cleanup.reverse()) f();
});

/** A loopback UDP socket with a 4 MiB receive buffer; `onData` gets each datagram (a copy). */
async function socket(onData: (s: Sock, buf: Uint8Array, port: number, addr: string) => void): Promise<Sock> {
  const sock = await Bun.udpSocket({ hostname: "127.0.0.1", binaryType: "uint8array", socket: { data: onData, error() {} } });
  await setReceiveBuffer((sock as unknown as { fd: number }).fd, 4 << 20);
  cleanup.push(() => sock.close());
  return sock;
}

describe("udp bursts", () => {
  test(`2 peers x ${BURST} distinct ${SIZE}-byte datagrams back to back, interleaved: all echoed, byte for byte, in order, none dropped`, async () => {
    const server = await testServer();
    cleanup.push(() => server.stop());
    const app = await socket((s, buf, port, addr) => s.send(buf, port, addr));
    const res = await fetch(`http://127.0.0.1:${server.apiPort}/api/groups`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.adminToken}` },
      body: JSON.stringify({ name: "burst", token: TOKEN, apps: [{ name: "u", type: "udp" }] }),
    });
    expect(res.status).toBe(201);
    const { connector, apps } = await onlineClient(clientConfig(server, "burst", [{ name: "u", type: "udp", localAddr: `127.0.0.1:${app.port}` }]));
    cleanup.push(() => connector.stop());
    const port = apps[0]!.remotePort;

    const got: string[][] = [[], []];
    let done = () => {};
    let want = 2;
    const peers = await Promise.all(
      [0, 1].map((i) =>
        socket((_s, buf) => {
          got[i]!.push(sha256(buf));
          if (got[0]!.length + got[1]!.length === want) done();
        }),
      ),
    );
    // One datagram each first: a new peer's local socket opens asynchronously, and until then the
    // client holds only UDP_PENDING_PER_PEER datagrams; the burst is about the running path.
    let all = new Promise<void>((r) => (done = r));
    for (const p of peers) p.send(new Uint8Array(SIZE), port, "127.0.0.1");
    let timer = setTimeout(() => done(), BURST_MS);
    await all;
    clearTimeout(timer);
    expect([got[0]!.length, got[1]!.length]).toEqual([1, 1]);
    got[0]!.length = got[1]!.length = 0;
    want = 2 * BURST;
    all = new Promise<void>((r) => (done = r));
    const sent: string[][] = [[], []];
    for (let k = 0; k < BURST; k++) {
      for (const [i, p] of peers.entries()) {
        const d = randomData(SIZE, 1 + i * BURST + k);
        sent[i]!.push(sha256(d));
        p.send(d, port, "127.0.0.1");
      }
    }
    timer = setTimeout(() => done(), BURST_MS);
    await all;
    clearTimeout(timer);
    expect([got[0]!.length, got[1]!.length]).toEqual([BURST, BURST]);
    expect(got).toEqual(sent);
    const view = (await (await fetch(`http://127.0.0.1:${server.apiPort}/api/groups/burst`, { headers: { authorization: `Bearer ${server.adminToken}` } })).json()) as {
      apps: { droppedDatagrams: number }[];
    };
    expect(view.apps[0]!.droppedDatagrams).toBe(0);
  }, 60_000);
});

describe("datagram reader", () => {
  test("peers whose addresses differ in one byte, and in length, alternate: each frame keeps its own address and port", () => {
    const peers = [
      ["127.0.0.1", 1000],
      ["127.0.0.2", 1000],
      ["127.0.0.2", 1001],
      ["10.0.0.1", 53],
      ["::1", 65535],
      ["127.0.0.1", 1000],
    ] as const;
    const buf = new Uint8Array(4096);
    let at = 0;
    for (const [k, [a, p]] of peers.entries()) at = encodeDatagramInto(buf, at, a, p, new Uint8Array([k]));
    const seen: [string, number, number][] = [];
    // One frame per push and all at once: the cached address must not leak between frames either way.
    for (const whole of [true, false]) {
      seen.length = 0;
      const r = new DatagramReader((a, p, d) => seen.push([a, p, d[0]!]));
      if (whole) expect(r.push(buf.subarray(0, at))).toBeNull();
      else for (let i = 0; i < at; i++) expect(r.push(buf.subarray(i, i + 1))).toBeNull();
      expect(seen).toEqual(peers.map(([a, p], k) => [a, p, k]));
    }
  });
});
