/**
 * Property-based tests of the decoder (fast-check): whatever bytes arrive, in
 * whatever pieces, the decoder returns a typed result and never throws,
 * never holds more than one frame plus one chunk, and inverts the encoder.
 * A failure prints fast-check's seed and path; replay with FC_SEED=<seed>.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { decodeBody, encode, ErrorCode, FRAME_HEADER_BYTES, FrameReader, FrameType, MAGIC, MAX_FRAME_BYTES, withMagic, type Message } from "../../protocol.ts";

const params = { numRuns: Number(process.env.FC_RUNS ?? 500), ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {}) };

const bytes = (min: number, max: number) => fc.uint8Array({ minLength: min, maxLength: max });
// Strings whose UTF-8 form fits a u16 length many times over.
const str = fc.string({ unit: "binary", maxLength: 40 });
const appType = fc.constantFrom("tcp" as const, "udp" as const);
const appStatus = fc.record({ name: str, type: appType, remotePort: fc.integer({ min: 0, max: 65535 }), error: str });

/** Every message of the protocol, with arbitrary field values. */
const message: fc.Arbitrary<Message> = fc.oneof(
  fc.record({ type: fc.constant(FrameType.Challenge), nonce: bytes(32, 32) }),
  fc.record({ type: fc.constant(FrameType.Login), group: str, proof: bytes(32, 32), apps: fc.array(fc.record({ name: str, type: appType }), { maxLength: 8 }) }),
  fc.record({ type: fc.constant(FrameType.LoginOk), sessionId: bytes(16, 16), apps: fc.array(appStatus, { maxLength: 8 }) }),
  fc.record({ type: fc.constant(FrameType.Apps), apps: fc.array(appStatus, { maxLength: 8 }) }),
  fc.record({ type: fc.constantFrom(FrameType.Ping, FrameType.Pong), seq: fc.integer({ min: 0, max: 2 ** 32 - 1 }) }),
  fc.record({ type: fc.constant(FrameType.OpenWork), count: fc.integer({ min: 0, max: 65535 }) }),
  fc.record({ type: fc.constant(FrameType.Hello) }),
  fc.record({ type: fc.constant(FrameType.WorkHello), sessionId: bytes(16, 16), seq: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), proof: bytes(32, 32) }),
  fc.record({ type: fc.constant(FrameType.StartWork), app: str, userAddr: str, publicAddr: str }),
  fc.record({ type: fc.constant(FrameType.WorkAck), ok: fc.boolean(), message: str }),
  fc.record({ type: fc.constant(FrameType.Error), code: fc.integer({ min: 0, max: 255 }), message: str }),
) as fc.Arbitrary<Message>;

/** Splits `b` at the given cut points (any order, any count). */
function split(b: Uint8Array, cuts: number[]): Uint8Array[] {
  const at = [...new Set(cuts.map((c) => c % (b.length + 1)))].sort((x, y) => x - y);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const c of [...at, b.length]) {
    out.push(b.slice(prev, c));
    prev = c;
  }
  return out;
}

/** Feeds chunks to a reader and collects every result until it is done or dead. */
function readAll(chunks: Uint8Array[]): { msgs: Message[]; error: number | null; maxBuffered: number } {
  const r = new FrameReader();
  const msgs: Message[] = [];
  let error: number | null = null;
  let maxBuffered = 0;
  for (const c of chunks) {
    r.push(c);
    maxBuffered = Math.max(maxBuffered, r.buffered);
    for (let res = r.next(); res; res = r.next()) {
      if (res.ok) msgs.push(res.msg);
      else error = res.error.code;
    }
  }
  return { msgs, error, maxBuffered };
}

describe("decoder properties", () => {
  test("decodeBody never throws and always returns a typed result, for any type byte and body", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 255 }), bytes(0, 512), (type, body) => {
        const res = decodeBody(type, body);
        if (res.ok) expect(res.msg.type).toBe(type);
        else expect(Object.values(ErrorCode)).toContain(res.error.code);
      }),
      params,
    );
  }, 60_000);

  test("encode then decode is the identity for every message", () => {
    fc.assert(
      fc.property(message, (msg) => {
        const frame = encode(msg);
        const res = decodeBody(frame[0]!, frame.subarray(FRAME_HEADER_BYTES));
        expect(res).toEqual({ ok: true, msg });
      }),
      params,
    );
  }, 60_000);

  test("a stream of frames decodes the same whatever the chunk boundaries", () => {
    fc.assert(
      fc.property(fc.array(message, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 12 }), (msgs, cuts) => {
        const stream = withMagic(...msgs.map(encode));
        const res = readAll(split(stream, cuts));
        expect(res.error).toBeNull();
        expect(res.msgs).toEqual(msgs);
      }),
      params,
    );
  }, 60_000);

  test("every strict prefix and every extension of a valid body is a malformed-frame error", () => {
    fc.assert(
      fc.property(message, fc.nat(), bytes(1, 16), (msg, cut, extra) => {
        const frame = encode(msg);
        const type = frame[0]!;
        const body = frame.subarray(FRAME_HEADER_BYTES);
        if (body.length > 0) {
          const short = decodeBody(type, body.subarray(0, cut % body.length));
          expect(short.ok).toBe(false);
          if (!short.ok) expect(short.error.code).toBe(ErrorCode.MalformedFrame);
        }
        const long = new Uint8Array(body.length + extra.length);
        long.set(body);
        long.set(extra, body.length);
        const res = decodeBody(type, long);
        expect(res.ok).toBe(false);
      }),
      params,
    );
  }, 60_000);

  test("arbitrary bytes in arbitrary chunks: the reader never throws, never holds more than one frame plus one chunk, and stays dead after an error", () => {
    fc.assert(
      fc.property(fc.boolean(), fc.array(bytes(0, 300), { maxLength: 20 }), (withM, chunks) => {
        const all = withM ? [MAGIC, ...chunks] : chunks;
        const largest = Math.max(0, ...all.map((c) => c.length));
        const r = new FrameReader();
        let dead = false;
        for (const c of all) {
          r.push(c);
          expect(r.buffered).toBeLessThanOrEqual(MAGIC.length + FRAME_HEADER_BYTES + MAX_FRAME_BYTES + largest);
          for (let res = r.next(); res; res = r.next()) {
            expect(dead).toBe(false);
            if (!res.ok) dead = true;
          }
        }
      }),
      params,
    );
  }, 60_000);

  test("a length field above the limit is refused from the header alone, before any body arrives", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 255 }), fc.integer({ min: MAX_FRAME_BYTES + 1, max: 2 ** 32 - 1 }), (type, len) => {
        const header = new Uint8Array(FRAME_HEADER_BYTES);
        header[0] = type;
        new DataView(header.buffer).setUint32(1, len);
        const res = readAll([MAGIC, header]);
        expect(res.error).toBe(ErrorCode.FrameTooLarge);
      }),
      params,
    );
  }, 60_000);
});
