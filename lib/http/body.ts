/**
 * HTTP/1.x message bodies for the reverse proxy: how a body is framed (RFC 9112
 * §6.3), and a reader that follows one body as its bytes stream past, so the
 * proxy forwards exactly the body and knows where the next message starts.
 * Pure, no I/O. Framing is where request smuggling lives, so every ambiguity
 * is refused rather than guessed at: what the proxy passes, any server reads alike.
 */
import { type HeadProblem, type Header, header, headerTokens, isBadValueChar, isTchar, MAX_HEAD_BYTES, type RequestHead, type ResponseHead } from "./head.ts";

/** How a message body is delimited. */
export type BodyKind = { kind: "none" } | { kind: "length"; length: number } | { kind: "chunked" } | { kind: "close" };

/** Longest chunk-size line with its extensions, CRLF included: extensions carry nothing the proxy needs, so a long one is refused. */
export const MAX_CHUNK_LINE_BYTES = 4096;

// Registered transfer codings (IANA HTTP Transfer Coding registry); "identity" was withdrawn by RFC 7230.
const KNOWN_CODINGS = new Set(["chunked", "compress", "deflate", "gzip", "x-compress", "x-gzip"]);

const NONE: BodyKind = { kind: "none" };
const CHUNKED: BodyKind = { kind: "chunked" };
const CLOSE: BodyKind = { kind: "close" };

/** The one Content-Length of `headers`: null when absent, a string when malformed or conflicting (RFC 9110 §8.6 allows identical repeats only). */
function contentLength(headers: readonly Header[]): number | null | string {
  let length: number | null = null;
  for (const [name, value] of headers) {
    if (name.length !== 14 || name.toLowerCase() !== "content-length") continue;
    for (const part of value.split(",")) {
      const digits = part.trim();
      if (!/^[0-9]+$/.test(digits)) return "malformed Content-Length";
      const n = Number(digits);
      if (!Number.isSafeInteger(n)) return "Content-Length too large";
      if (length !== null && n !== length) return "conflicting Content-Length values";
      length = n;
    }
  }
  return length;
}

const bad = (reason: string): HeadProblem => ({ status: 400, reason });

/** How a request's body is framed, or why the request is refused: Transfer-Encoding together with Content-Length → 400; a Transfer-Encoding whose last coding is not chunked → 400 (RFC 9112 §6.3); an unknown coding → 501; Content-Length not 1*DIGIT, or several differing values (comma lists or repeated lines) → 400; identical repeats are fine. No TE and no CL → none. Also 400: Transfer-Encoding in an HTTP/1.0 request, or chunked applied twice. */
export function requestBody(h: RequestHead): BodyKind | HeadProblem {
  const cl = contentLength(h.headers);
  if (header(h.headers, "transfer-encoding") !== undefined) {
    // RFC 9112 §6.1: an HTTP/1.0 recipient may not know chunked, so its framing is faulty; a proxy refuses it.
    if (h.minor === 0) return bad("Transfer-Encoding in an HTTP/1.0 request");
    // RFC 9112 §6.3: both at once is the classic smuggling shape; a server MAY refuse it, a proxy should.
    if (cl !== null) return bad("both Transfer-Encoding and Content-Length");
    const codings = headerTokens(h.headers, "transfer-encoding");
    if (codings.at(-1) !== "chunked") return bad("Transfer-Encoding does not end with chunked");
    // RFC 9112 §7: chunked MUST NOT be applied more than once.
    if (codings.indexOf("chunked") !== codings.length - 1) return bad("chunked applied more than once");
    for (const c of codings) if (!KNOWN_CODINGS.has(c)) return { status: 501, reason: "unknown transfer coding" };
    return CHUNKED;
  }
  if (typeof cl === "string") return bad(cl);
  return cl === null ? NONE : { kind: "length", length: cl };
}

/** How a response to `method` is framed (RFC 9112 §6.3): HEAD, 1xx, 204, 304 → none; a 2xx to CONNECT → close (a tunnel); chunked (last coding) → chunked; another Transfer-Encoding → close; a valid Content-Length → length; otherwise close. A malformed or conflicting Content-Length, or one beside Transfer-Encoding, → a string error. */
export function responseBody(h: ResponseHead, method: string): BodyKind | string {
  const s = h.status;
  if (method === "HEAD" || s < 200 || s === 204 || s === 304) return NONE;
  if (method === "CONNECT" && s < 300) return CLOSE;
  const cl = contentLength(h.headers);
  if (header(h.headers, "transfer-encoding") !== undefined) {
    // RFC 9112 §6.3 (3): TE overrides CL, but the pair "ought to be handled as an error"; refusing it
    // spares the proxy from having to strip the Content-Length before forwarding.
    if (cl !== null) return "both Transfer-Encoding and Content-Length";
    return headerTokens(h.headers, "transfer-encoding").at(-1) === "chunked" ? CHUNKED : CLOSE;
  }
  if (typeof cl === "string") return cl;
  return cl === null ? CLOSE : { kind: "length", length: cl };
}

// Chunked decoder states (RFC 9112 §7.1). Line ends in the framing must be CRLF: a bare LF accepted
// here but not by the server behind (or the reverse) is a known smuggling vector.
const SIZE = 0; // hex digits of chunk-size
const EXT_WS = 1; // BWS after the size, before ";"
const EXT = 2; // chunk extensions, skipped up to CR
const SIZE_LF = 3; // LF ending the size line
const DATA = 4; // chunk-data, skipped in bulk
const DATA_CR = 5; // CRLF after chunk-data
const DATA_LF = 6;
const TRAILER_START = 7; // start of a trailer line, or of the final CRLF
const TRAILER_NAME = 8;
const TRAILER_VALUE = 9;
const TRAILER_LF = 10;
const FINAL_LF = 11;

const HTAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const SEMI = 0x3b;
const COLON = 0x3a;

/** Value of hex digit `c`, or -1. */
function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  return l >= 0x61 && l <= 0x66 ? l - 0x57 : -1;
}

/** Follows one body as its bytes pass, without copying them: the caller forwards exactly the bytes `take` reports as body. */
export class BodyReader {
  /** The body is complete: bytes after it belong to the next message. */
  done = false;
  /** Why the body is malformed; once set, `take` consumes nothing more. */
  error: string | null = null;
  /** Given the payload bytes as they pass (chunk framing left out), when set: the inspector's tap. */
  onData: ((payload: Uint8Array) => void) | null = null;
  readonly #kind: BodyKind["kind"];
  readonly #maxTrailerBytes: number;
  #data = 0;
  /** Bytes left: of the whole body for "length", of the current chunk for "chunked". */
  #remaining = 0;
  #state = SIZE;
  #size = 0;
  #digits = 0;
  /** Bytes of the current size line, or of all trailers: the only thing that grows, and it is bounded. */
  #lineBytes = 0;

  constructor(kind: BodyKind, maxTrailerBytes: number = MAX_HEAD_BYTES) {
    this.#kind = kind.kind;
    this.#maxTrailerBytes = maxTrailerBytes;
    if (kind.kind === "length") this.#remaining = kind.length;
    this.done = kind.kind === "none" || (kind.kind === "length" && kind.length === 0);
  }

  /** Body payload bytes seen so far (for chunked: the data bytes, not the framing). */
  get dataBytes(): number {
    return this.#data;
  }

  /** Consumes bytes of `chunk` from `offset`; returns how many belong to this body (0..chunk.length-offset). After it, `done` says the body is complete (the rest of the chunk is the next message), or `error` is set (then the count stops before the offending byte). For "none" it is done at once; for "close" it takes everything and is never done (the caller ends it at EOF via `eof()`). */
  take(chunk: Uint8Array, offset: number): number {
    if (this.done || this.error !== null) return 0;
    const avail = Math.max(0, chunk.length - offset);
    switch (this.#kind) {
      case "none":
        return 0;
      case "close":
        this.#data += avail;
        if (this.onData !== null && avail > 0) this.onData(chunk.subarray(offset, offset + avail));
        return avail;
      case "length": {
        const n = Math.min(avail, this.#remaining);
        this.#remaining -= n;
        this.#data += n;
        if (this.onData !== null && n > 0) this.onData(chunk.subarray(offset, offset + n));
        if (this.#remaining === 0) this.done = true;
        return n;
      }
      case "chunked":
        return this.#chunked(chunk, offset, offset + avail) - offset;
    }
  }

  /** The stream ended: true when that is a proper end of this body (close-delimited, or already done); false means truncated. */
  eof(): boolean {
    if (this.error !== null) return false;
    if (this.#kind === "close") this.done = true;
    return this.done;
  }

  #fail(reason: string, at: number): number {
    this.error = reason;
    return at;
  }

  /** Runs the chunked state machine over chunk[i..end); returns the index where it stopped. */
  #chunked(chunk: Uint8Array, i: number, end: number): number {
    while (i < end) {
      const state = this.#state;
      if (state === DATA) {
        const n = Math.min(end - i, this.#remaining);
        if (this.onData !== null && n > 0) this.onData(chunk.subarray(i, i + n));
        i += n;
        this.#data += n;
        this.#remaining -= n;
        if (this.#remaining === 0) this.#state = DATA_CR;
        continue;
      }
      const c = chunk[i]!;
      if (state <= SIZE_LF) {
        if (++this.#lineBytes > MAX_CHUNK_LINE_BYTES) return this.#fail("chunk size line too long", i);
      } else if (state >= TRAILER_START) {
        if (++this.#lineBytes > this.#maxTrailerBytes) return this.#fail("trailers too long", i);
      }
      switch (state) {
        case SIZE: {
          const d = hexValue(c);
          if (d >= 0) {
            this.#size = this.#size * 16 + d;
            this.#digits++;
            if (this.#size > Number.MAX_SAFE_INTEGER) return this.#fail("chunk size too large", i);
            break;
          }
          if (this.#digits === 0) return this.#fail("bad chunk size", i);
          if (c === CR) this.#state = SIZE_LF;
          else if (c === SEMI) this.#state = EXT;
          else if (c === SP || c === HTAB) this.#state = EXT_WS;
          else return this.#fail("bad chunk size", i);
          break;
        }
        case EXT_WS:
          // RFC 9112 §7.1.1: whitespace after the size is only allowed before an extension.
          if (c === SEMI) this.#state = EXT;
          else if (c !== SP && c !== HTAB) return this.#fail("bad chunk extension", i);
          break;
        case EXT:
          if (c === CR) this.#state = SIZE_LF;
          else if (isBadValueChar(c)) return this.#fail("control character in chunk extension", i);
          break;
        case SIZE_LF:
          if (c !== LF) return this.#fail("chunk size line not ended by CRLF", i);
          this.#lineBytes = 0;
          if (this.#size === 0) {
            this.#state = TRAILER_START;
          } else {
            this.#remaining = this.#size;
            this.#state = DATA;
          }
          this.#size = 0;
          this.#digits = 0;
          break;
        case DATA_CR:
          if (c !== CR) return this.#fail("missing CRLF after chunk data", i);
          this.#state = DATA_LF;
          break;
        case DATA_LF:
          if (c !== LF) return this.#fail("missing CRLF after chunk data", i);
          this.#state = SIZE;
          break;
        case TRAILER_START:
          if (c === CR) this.#state = FINAL_LF;
          else if (isTchar(c)) this.#state = TRAILER_NAME;
          else return this.#fail("malformed trailer line", i);
          break;
        case TRAILER_NAME:
          if (c === COLON) this.#state = TRAILER_VALUE;
          else if (!isTchar(c)) return this.#fail("malformed trailer name", i);
          break;
        case TRAILER_VALUE:
          if (c === CR) this.#state = TRAILER_LF;
          else if (isBadValueChar(c)) return this.#fail("control character in trailer", i);
          break;
        case TRAILER_LF:
          if (c !== LF) return this.#fail("trailer line not ended by CRLF", i);
          this.#state = TRAILER_START;
          break;
        case FINAL_LF:
          if (c !== LF) return this.#fail("chunked body not ended by CRLF", i);
          this.done = true;
          return i + 1;
      }
      i++;
    }
    return i;
  }
}
