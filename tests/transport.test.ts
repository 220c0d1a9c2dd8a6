/**
 * The relay over a transport that is not a Bun socket (issue 15): an Endpoint takes any
 * Transport, so a stream over another path (peer to peer, through another server) is
 * relayed with the same backpressure, half-close and resets. Two in-memory transports here.
 */
import { describe, expect, test } from "bun:test";
import { Endpoint, HIGH_WATER_BYTES, type Transport } from "../lib/net/endpoint.ts";
import { randomData, sha256 } from "./helpers.ts";

/** An in-memory transport that takes at most `room` bytes until it is drained. */
class MemoryTransport implements Transport {
  readonly taken: Uint8Array[] = [];
  paused = false;
  finned = false;
  state: "open" | "ended" | "reset" = "open";
  constructor(public room: number) {}
  write(data: Uint8Array): number {
    if (this.state !== "open") return -1;
    const n = Math.min(data.length, this.room);
    this.room -= n;
    if (n) this.taken.push(data.slice(0, n));
    return n;
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }
  shutdown(): void {
    this.finned = true;
  }
  end(): void {
    this.state = "ended";
  }
  terminate(): void {
    this.state = "reset";
  }
  readonly remoteAddress = "192.0.2.1";
  readonly remotePort = 1;
  readonly localAddress = "192.0.2.2";
  readonly localPort = 2;
  get bytes(): Buffer {
    return Buffer.concat(this.taken);
  }
}

describe("Endpoint over a transport that is not a socket", () => {
  test("bytes relayed byte-exact with backpressure (source paused past HIGH_WATER_BYTES, resumed on drain), then a half-close passed on", () => {
    const inT = new MemoryTransport(Infinity);
    const outT = new MemoryTransport(10_000); // a slow reader: takes 10 KB, then nothing until drained
    const source = new Endpoint();
    const sink = new Endpoint();
    source.attach(inT);
    sink.attach(outT);
    source.pipe(sink);
    const data = randomData(2 * HIGH_WATER_BYTES + 12_345, 21);
    for (let at = 0; at < data.length; at += 64 * 1024) Endpoint.events.data(source, data.subarray(at, at + 64 * 1024));
    // The sink took its room; the rest waits in its queue, and the source was paused.
    expect(outT.bytes.length).toBe(10_000);
    expect(sink.queued).toBe(data.length - 10_000);
    expect(inT.paused).toBe(true);
    Endpoint.events.end(source); // the source's FIN: passed on once the queue is empty
    expect(outT.finned).toBe(false);
    outT.room = Infinity;
    Endpoint.events.drain(sink);
    expect(inT.paused).toBe(false);
    expect(outT.finned).toBe(true);
    expect(sha256(outT.bytes)).toBe(sha256(data));
  });

  test("a reset on one side resets the other, and a work-style side that ends without its count is reset too", () => {
    const a = new Endpoint();
    const b = new Endpoint();
    const [ta, tb] = [new MemoryTransport(Infinity), new MemoryTransport(Infinity)];
    a.attach(ta);
    b.attach(tb);
    a.pipe(b);
    Endpoint.events.closed(a, true); // a was reset
    expect(tb.state).toBe("reset");

    const work = new Endpoint();
    const user = new Endpoint();
    const [tw, tu] = [new MemoryTransport(Infinity), new MemoryTransport(Infinity)];
    work.attach(tw);
    user.attach(tu);
    work.countedEnd = true;
    work.pipe(user);
    Endpoint.events.data(work, randomData(1000, 22));
    Endpoint.events.end(work); // a FIN with no StreamEnd count behind it
    expect(tu.bytes.length).toBe(1000);
    expect(tu.finned).toBe(false);
    expect(tu.state).toBe("reset");
  });
});
