/**
 * TLS ClientHello reading for SNI routing: the proxy peeks at a client's first
 * bytes, picks a backend by server name (and ALPN), then relays the TLS stream
 * untouched. Pure, no I/O; never throws on any input (RFC 8446 §4.1.2, RFC 6066 §3, RFC 7301).
 */

/** Largest ClientHello accepted (records reassembled); a larger one is refused. Post-quantum key shares make hellos near 2 KB; 16 KB leaves room and bounds what the proxy buffers. */
export const MAX_CLIENT_HELLO_BYTES = 16 * 1024;
/** Most TLS records a ClientHello may be split into: clients that fragment hellos (to dodge middleboxes) use a few; 1-byte records would multiply the buffered bytes. */
export const MAX_CLIENT_HELLO_RECORDS = 64;
/** Most bytes the proxy ever buffers before readClientHello stops answering null. */
export const MAX_CLIENT_HELLO_WIRE_BYTES = MAX_CLIENT_HELLO_BYTES + 5 * MAX_CLIENT_HELLO_RECORDS;

/** What routing needs from a ClientHello. */
export type ClientHello = { serverName: string | null; alpn: string[] };

const HANDSHAKE = 0x16;
const ALERT = 0x15;
const CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
/** RFC 8446 §5.1: a record's fragment is at most 2^14 bytes. */
const MAX_RECORD_FRAGMENT = 1 << 14;

/** The handshake bytes carried by the records at the start of `buf`: the whole message once complete, null while more are needed. */
function handshakeBytes(buf: Uint8Array): Uint8Array | null | string {
  let msgLen = -1; // handshake message length with its 4-byte header, once known
  let pos = 0;
  let got = 0;
  let parts: Uint8Array[] | null = null;
  let first: Uint8Array | null = null;
  for (let records = 0; ; records++) {
    if (pos >= buf.length) return null;
    if (buf[pos] !== HANDSHAKE) return records === 0 ? "not a TLS handshake record" : "ClientHello interrupted by another record type";
    if (records === MAX_CLIENT_HELLO_RECORDS) return "ClientHello split into too many records";
    if (pos + 5 > buf.length) {
      // Check the version byte early, so plain text starting with 0x16 fails fast.
      if (pos + 1 < buf.length && buf[pos + 1] !== 3) return "bad TLS record version";
      return null;
    }
    if (buf[pos + 1] !== 3) return "bad TLS record version";
    const len = (buf[pos + 3]! << 8) | buf[pos + 4]!;
    // RFC 8446 §5.1: zero-length handshake fragments are forbidden.
    if (len === 0 || len > MAX_RECORD_FRAGMENT) return "bad TLS record length";
    // A hello that fits the limits ends within MAX_CLIENT_HELLO_WIRE_BYTES, so a record reaching past it
    // (or past the message) is refused now: the caller never buffers more than that waiting for it.
    if (pos + 5 + len > MAX_CLIENT_HELLO_WIRE_BYTES) return "ClientHello too large";
    if (msgLen >= 0 && got + len > msgLen) return "data after the ClientHello";
    if (pos + 5 + len > buf.length) {
      // Fragments are only used whole, but the handshake header at the start of the first one is read
      // as soon as it is here, so a huge or foreign message fails before its record is buffered.
      if (records === 0 && len >= 4 && buf.length >= 9) {
        if (buf[5] !== CLIENT_HELLO) return "not a ClientHello";
        if (4 + ((buf[6]! << 16) | (buf[7]! << 8) | buf[8]!) > MAX_CLIENT_HELLO_BYTES) return "ClientHello too large";
      }
      return null;
    }
    const frag = buf.subarray(pos + 5, pos + 5 + len);
    pos += 5 + len;
    if (first === null) first = frag;
    else (parts ??= [first]).push(frag);
    got += len;
    if (msgLen < 0 && got >= 4) {
      const head = parts === null ? first : concat(parts, 4);
      if (head[0] !== CLIENT_HELLO) return "not a ClientHello";
      msgLen = 4 + ((head[1]! << 16) | (head[2]! << 8) | head[3]!);
      if (msgLen > MAX_CLIENT_HELLO_BYTES) return "ClientHello too large";
    }
    if (msgLen >= 0 && got >= msgLen) {
      // Bytes after the hello in its last record would be a second handshake message: not expected before the server speaks.
      if (got > msgLen) return "data after the ClientHello";
      return parts === null ? first : concat(parts, msgLen);
    }
  }
}

/** The first `n` bytes of `parts` joined (reassembly of a hello split across records: rare, so the copy is fine). */
function concat(parts: Uint8Array[], n: number): Uint8Array {
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    if (at >= n) break;
    const take = Math.min(p.length, n - at);
    out.set(p.subarray(0, take), at);
    at += take;
  }
  return out;
}

/** A bounds-checked reader over a byte range; reads past the end set `bad` and return 0. */
class Cursor {
  bad = false;
  readonly b: Uint8Array;
  pos: number;
  readonly end: number;
  constructor(b: Uint8Array, pos: number, end: number) {
    this.b = b;
    this.pos = pos;
    this.end = end;
  }
  u8(): number {
    if (this.pos + 1 > this.end) return this.#overrun();
    return this.b[this.pos++]!;
  }
  u16(): number {
    if (this.pos + 2 > this.end) return this.#overrun();
    const v = (this.b[this.pos]! << 8) | this.b[this.pos + 1]!;
    this.pos += 2;
    return v;
  }
  /** A sub-cursor over the next `n` bytes. */
  sub(n: number): Cursor {
    if (this.pos + n > this.end) {
      this.#overrun();
      return new Cursor(this.b, this.end, this.end);
    }
    const c = new Cursor(this.b, this.pos, this.pos + n);
    this.pos += n;
    return c;
  }
  skip(n: number): void {
    if (this.pos + n > this.end) this.#overrun();
    else this.pos += n;
  }
  get left(): number {
    return this.end - this.pos;
  }
  #overrun(): number {
    this.bad = true;
    this.pos = this.end;
    return 0;
  }
}

/** Bytes to a string one char per byte (protocol names are opaque bytes; this keeps them exact). */
function latin1(b: Uint8Array, start: number, end: number): string {
  let s = "";
  for (let i = start; i < end; i++) s += String.fromCharCode(b[i]!);
  return s;
}

/** A host_name as RFC 6066 §3 sends it: LDH labels of 1-63 bytes joined by dots, no trailing dot, at most 255 bytes; lower-cased, or null when invalid. */
function hostName(b: Uint8Array, start: number, end: number): string | null {
  if (end - start < 1 || end - start > 255) return null;
  let label = 0;
  for (let i = start; i < end; i++) {
    const c = b[i]! | (b[i]! >= 0x41 && b[i]! <= 0x5a ? 0x20 : 0);
    if (c === 0x2e) {
      if (label === 0 || b[i - 1] === 0x2d) return null;
      label = 0;
      continue;
    }
    const ldh = (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d;
    if (!ldh || (c === 0x2d && label === 0) || ++label > 63) return null;
  }
  if (label === 0 || b[end - 1] === 0x2d) return null;
  return latin1(b, start, end).toLowerCase();
}

/** Reads the server_name extension into `hello`; returns why it is refused, or null. */
function serverNameExt(ext: Cursor, hello: ClientHello): string | null {
  const list = ext.sub(ext.u16());
  if (ext.bad || ext.left !== 0 || list.left === 0) return "malformed server_name extension";
  while (list.left > 0) {
    const type = list.u8();
    const entry = list.sub(list.u16());
    if (list.bad) return "malformed server_name extension";
    if (type !== 0) continue; // other name types are unassigned; RFC 6066 lets a server skip them
    if (hello.serverName !== null) return "two host names in server_name"; // RFC 6066 §3: one name per type
    hello.serverName = hostName(entry.b, entry.pos, entry.end);
    if (hello.serverName === null) return "invalid server name";
  }
  return null;
}

/** From the first bytes a TLS client sent: the parsed ClientHello once complete (it may span several TLS records), null while more bytes are needed, or an error string when the bytes are not a TLS ClientHello (first byte not 0x16, bad lengths, not a handshake of type 1, over the limit). The server_name extension (type 0, host_name type 0) is returned lower-cased; an invalid name (not LDH labels with dots, or over 255 bytes) is an error. ALPN (extension 16) protocol names as strings. */
export function readClientHello(buf: Uint8Array): ClientHello | null | string {
  const msg = handshakeBytes(buf);
  if (msg === null || typeof msg === "string") return msg;
  const c = new Cursor(msg, 4, msg.length);
  c.skip(2 + 32); // legacy_version, random
  c.skip(c.u8()); // legacy_session_id
  const suites = c.u16();
  if (suites < 2 || suites % 2 !== 0) return "bad cipher suites length";
  c.skip(suites);
  const compressions = c.u8();
  if (compressions < 1) return "bad compression methods length";
  c.skip(compressions);
  if (c.bad) return "truncated ClientHello";
  const hello: ClientHello = { serverName: null, alpn: [] };
  if (c.left === 0) return hello; // no extensions at all (pre-TLS 1.2 clients)
  const exts = c.sub(c.u16());
  if (c.bad || c.left !== 0) return "bad extensions length";
  let sawName = false;
  let sawAlpn = false;
  while (exts.left > 0) {
    const type = exts.u16();
    const ext = exts.sub(exts.u16());
    if (exts.bad) return "bad extension length";
    if (type === EXT_SERVER_NAME) {
      // RFC 8446 §4.2: an extension type appears at most once; two names would route ambiguously.
      if (sawName) return "duplicate server_name extension";
      sawName = true;
      const problem = serverNameExt(ext, hello);
      if (problem !== null) return problem;
    } else if (type === EXT_ALPN) {
      if (sawAlpn) return "duplicate ALPN extension";
      sawAlpn = true;
      const list = ext.sub(ext.u16());
      if (ext.bad || ext.left !== 0 || list.left === 0) return "malformed ALPN extension";
      while (list.left > 0) {
        const n = list.u8();
        const at = list.pos;
        list.skip(n);
        if (n === 0 || list.bad) return "malformed ALPN extension";
        hello.alpn.push(latin1(msg, at, at + n));
      }
    }
  }
  return hello;
}

/** A TLS fatal alert record (version 3.1/0x0301 on the record layer, which every TLS version accepts before negotiation) with the given description: 112 unrecognized_name, 40 handshake_failure. */
export function tlsAlert(description: number): Uint8Array {
  if (!Number.isInteger(description) || description < 0 || description > 255) throw new RangeError("TLS alert description is a byte");
  return new Uint8Array([ALERT, 3, 1, 0, 2, 2 /* fatal */, description]);
}
