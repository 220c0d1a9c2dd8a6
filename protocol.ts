/**
 * Warren wire protocol, version 5: every byte layout lives here (and, at the
 * end, the PROXY protocol header a client may put before a user's bytes).
 *
 * Every connection to the control port opens with MAGIC from both sides.
 * MAGIC is eight bytes so that a plain client facing a TLS server sends a
 * whole TLS record header (5 bytes) and gets an alert back instead of a hang.
 * Then come frames: `type u8 | length u32 BE | body`. Strings are
 * `u16 BE length | UTF-8`.
 *
 * A control connection: client Hello, server Challenge, client Login, server
 * LoginOk; then Ping/Pong, OpenWork and Apps, and Declare when the client's
 * apps change (a reloaded client.toml): the server answers with Apps. A work connection: client
 * WorkHello (no round trip: its proof covers a sequence number the server
 * accepts once), server StartWork, client WorkAck; then raw bytes only. Each
 * side may send its first frame together with the first bytes that follow it.
 *
 * A work connection is reused: the end of each direction of a stream is told
 * on the control connection (StreamEnd: the work connection's sequence number
 * and the bytes sent), not with a FIN, so the raw bytes need no framing. Once
 * the client has all the server's bytes and has sent all its own, it says
 * WorkFree and the connection waits for the next StartWork. A FIN on a work
 * connection proves nothing (a killed peer's kernel sends one): a direction
 * that ends without its StreamEnd count is reset, and so is a reset stream.
 */
import { formatIp, parseIp } from "./lib/addr.ts";

/** Group and app names on the wire and everywhere else: 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** Protocol version carried in the last byte of MAGIC. */
export const PROTOCOL_VERSION = 6;
/** "WARREN", a zero byte and the version: the first bytes each side sends on every connection. */
export const MAGIC = new Uint8Array([0x57, 0x41, 0x52, 0x52, 0x45, 0x4e, 0x00, PROTOCOL_VERSION]);
const VERSION_AT = MAGIC.length - 1;
/** Bytes in a frame header: type (1) + body length (4). */
export const FRAME_HEADER_BYTES = 5;
/** Largest frame body: 64 KiB holds a login with hundreds of apps, and bounds what a stranger can make us buffer. */
export const MAX_FRAME_BYTES = 64 * 1024;
/** Bytes in a login challenge nonce. */
export const NONCE_BYTES = 32;
/** Bytes in a session id. */
export const SESSION_ID_BYTES = 16;
/**
 * Longest error text of one app status, in UTF-8 bytes; longer ones are cut (ending in "...").
 * With it, 256 statuses (hub.ts's MAX_DECLARED_APPS) with 64-byte names take at most 64,530
 * bytes: a LoginOk always fits in one frame, whatever an error (an OS message) says. An HTTP
 * app's URLs fill the room left (writeAppStatuses).
 */
export const MAX_STATUS_ERROR_BYTES = 180;
/** Bytes in an HMAC-SHA256 proof. */
export const PROOF_BYTES = 32;

/** Frame type bytes. */
export enum FrameType {
  Challenge = 0x01,
  Login = 0x02,
  LoginOk = 0x03,
  Apps = 0x04,
  Ping = 0x05,
  Pong = 0x06,
  OpenWork = 0x07,
  WorkHello = 0x08,
  StartWork = 0x09,
  WorkAck = 0x0a,
  Error = 0x0b,
  Hello = 0x0c,
  StreamEnd = 0x0d,
  WorkFree = 0x0e,
  /** Client: the apps it serves now (protocol 5). */
  Declare = 0x0f,
  /** Cluster (peer port): a node proves the cluster token, answering a Challenge. */
  PeerLogin = 0x10,
  /** Cluster: the link is accepted; its id names it on its data connections. */
  PeerOk = 0x11,
  /** Cluster: a data connection of a link, with its proof (as WorkHello for a session). */
  PeerData = 0x12,
  /** Cluster: a user of a group online on the receiving node, carried on this data connection (as StartWork). */
  PeerStart = 0x13,
}

/** Error codes carried in Error frames and in decoder results. */
export enum ErrorCode {
  BadMagic = 1,
  VersionMismatch = 2,
  TlsExpected = 3,
  MalformedFrame = 4,
  FrameTooLarge = 5,
  UnknownType = 6,
  UnexpectedMessage = 7,
  AuthFailed = 8,
  HandshakeTimeout = 9,
  SessionReplaced = 10,
  GroupDeleted = 11,
  ServerShutdown = 12,
  Overloaded = 13,
  LocalRefused = 14,
  UnknownApp = 15,
  HeartbeatTimeout = 16,
  Blocked = 17,
  /** The group's token was changed: this client's token is no longer valid. */
  TokenChanged = 18,
  /** The group is disabled on the server: the client keeps retrying and comes back once it is enabled. */
  GroupDisabled = 19,
  /** The administrator ended the session (the client reconnects). */
  Kicked = 20,
}

/**
 * App types, as carried on the wire. "http" and "https" travel as TCP streams (the client
 * connects to its local app as for "tcp"); the server routes them by Host or TLS SNI on its
 * shared ports. New types go at the end: the byte is the index.
 */
export type AppType = "tcp" | "udp" | "http" | "https";
const APP_TYPES: readonly AppType[] = ["tcp", "udp", "http", "https"];
/** Most public URLs one app status carries (a subdomain and custom domains, each over HTTP and HTTPS). */
export const MAX_STATUS_URLS = 8;
/** Longest public URL in an app status, in UTF-8 bytes. */
export const MAX_STATUS_URL_BYTES = 300;

/** Longest client name and version a Login carries (longer ones are cut). */
export const MAX_CLIENT_NAME_CHARS = 64;

/** An app a client declares at login. */
export interface DeclaredApp {
  readonly name: string;
  readonly type: AppType;
}

/** The server's answer for one app: its public port, or why it is not served. */
export interface AppStatus {
  readonly name: string;
  readonly type: AppType;
  readonly remotePort: number;
  /** Empty when the app is served; otherwise the reason it is not. */
  readonly error: string;
  /** Where users reach an HTTP or HTTPS app ("http://grafana.example.com/"); empty for TCP and UDP apps. */
  readonly urls?: readonly string[];
}

/** Every message of the protocol. */
export type Message =
  | { readonly type: FrameType.Challenge; readonly nonce: Uint8Array }
  | { readonly type: FrameType.Login; readonly group: string; readonly proof: Uint8Array; readonly apps: readonly DeclaredApp[]; readonly client?: string }
  | { readonly type: FrameType.LoginOk; readonly sessionId: Uint8Array; readonly apps: readonly AppStatus[] }
  | { readonly type: FrameType.Apps; readonly apps: readonly AppStatus[] }
  | { readonly type: FrameType.Ping; readonly seq: number }
  | { readonly type: FrameType.Pong; readonly seq: number }
  | { readonly type: FrameType.OpenWork; readonly count: number }
  | { readonly type: FrameType.Hello }
  | { readonly type: FrameType.WorkHello; readonly sessionId: Uint8Array; readonly seq: number; readonly proof: Uint8Array }
  /** A user's stream: `userAddr` is the user's "ip:port" ("[ip]:port" for IPv6), `publicAddr` the server's address it connected to. */
  | { readonly type: FrameType.StartWork; readonly app: string; readonly userAddr: string; readonly publicAddr: string }
  | { readonly type: FrameType.WorkAck; readonly ok: boolean; readonly message: string }
  | { readonly type: FrameType.Error; readonly code: ErrorCode; readonly message: string }
  /** The sender's direction of the stream on work connection `seq` ended after `bytes` bytes. */
  | { readonly type: FrameType.StreamEnd; readonly seq: number; readonly bytes: number }
  /** The client is done with the stream on work connection `seq`: it may carry the next one. */
  | { readonly type: FrameType.WorkFree; readonly seq: number }
  | { readonly type: FrameType.Declare; readonly apps: readonly DeclaredApp[] }
  | { readonly type: FrameType.PeerLogin; readonly node: string; readonly proof: Uint8Array }
  | { readonly type: FrameType.PeerOk; readonly linkId: Uint8Array; readonly node: string }
  | { readonly type: FrameType.PeerData; readonly linkId: Uint8Array; readonly seq: number; readonly proof: Uint8Array }
  | { readonly type: FrameType.PeerStart; readonly group: string; readonly app: string; readonly userAddr: string; readonly publicAddr: string };

/** A protocol violation: what the peer did wrong, as a code and a sentence. */
export interface ProtocolError {
  readonly code: ErrorCode;
  readonly message: string;
}

/** Result of decoding: a message, or the typed reason there is none. */
export type DecodeResult = { readonly ok: true; readonly msg: Message } | { readonly ok: false; readonly error: ProtocolError };

const utf8 = new TextEncoder();
const ELLIPSIS = utf8.encode("...");
/** The one empty buffer readers hold when they hold nothing. */
const EMPTY = new Uint8Array(0);
// ignoreBOM: a string that starts with U+FEFF must keep it, or decoding would not invert encoding.
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Builds one frame body with a growing cursor. */
class Writer {
  #parts: number[] = [];
  #chunks: Uint8Array[] = [];
  #size = 0;
  u8(n: number): this {
    this.#parts.push(n & 0xff);
    this.#size++;
    return this;
  }
  u16(n: number): this {
    return this.u8(n >>> 8).u8(n);
  }
  u32(n: number): this {
    return this.u16(n >>> 16).u16(n & 0xffff);
  }
  /** An integer below 2^53 as two u32 (high, low). */
  u53(n: number): this {
    return this.u32(Math.floor(n / 0x1_0000_0000)).u32(n >>> 0);
  }
  bytes(b: Uint8Array): this {
    this.#flushParts();
    this.#chunks.push(b);
    this.#size += b.length;
    return this;
  }
  str(s: string): this {
    const b = utf8.encode(s);
    if (b.length > 0xffff) throw new RangeError("string longer than 65535 bytes");
    return this.u16(b.length).bytes(b);
  }
  /** A string of at most `max` UTF-8 bytes: a longer one is cut at a character boundary and ends in "...". */
  clippedStr(s: string, max: number): this {
    let b = utf8.encode(s);
    if (b.length > max) {
      let end = max - 3;
      while (end > 0 && (b[end]! & 0xc0) === 0x80) end--; // not inside a multi-byte character
      const cut = new Uint8Array(end + 3);
      cut.set(b.subarray(0, end));
      cut.set(ELLIPSIS, end);
      b = cut;
    }
    return this.u16(b.length).bytes(b);
  }
  #flushParts(): void {
    if (this.#parts.length) this.#chunks.push(Uint8Array.from(this.#parts));
    this.#parts = [];
  }
  frame(type: FrameType): Uint8Array {
    this.#flushParts();
    if (this.#size > MAX_FRAME_BYTES) throw new RangeError(`frame body of ${this.#size} bytes exceeds ${MAX_FRAME_BYTES}`);
    const out = new Uint8Array(FRAME_HEADER_BYTES + this.#size);
    const view = new DataView(out.buffer);
    out[0] = type;
    view.setUint32(1, this.#size);
    let at = FRAME_HEADER_BYTES;
    for (const c of this.#chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

/** Thrown inside the decoder only; never escapes `decodeBody`. */
class Short extends Error {}

/** Reads one frame body; every read checks bounds. */
class Reader {
  #at = 0;
  constructor(private readonly b: Uint8Array) {}
  #need(n: number): void {
    if (this.#at + n > this.b.length) throw new Short();
  }
  u8(): number {
    this.#need(1);
    return this.b[this.#at++]!;
  }
  u16(): number {
    return (this.u8() << 8) | this.u8();
  }
  u32(): number {
    return this.u16() * 0x10000 + this.u16();
  }
  /** Two u32 (high, low) as one integer; throws past 2^53 so that every value decodes exactly. */
  u53(): number {
    const hi = this.u32();
    if (hi > MAX_SEQ_HIGH) throw new Short("beyond 2^53");
    return hi * 0x1_0000_0000 + this.u32();
  }
  bytes(n: number): Uint8Array {
    this.#need(n);
    const out = this.b.slice(this.#at, this.#at + n);
    this.#at += n;
    return out;
  }
  str(): string {
    const n = this.u16();
    this.#need(n);
    const s = utf8Decoder.decode(this.b.subarray(this.#at, this.#at + n));
    this.#at += n;
    return s;
  }
  appType(): AppType {
    const t = APP_TYPES[this.u8()];
    if (!t) throw new Short("unknown app type");
    return t;
  }
  done(): boolean {
    return this.#at === this.b.length;
  }
}

function writeAppStatuses(w: Writer, apps: readonly AppStatus[]): Writer {
  w.u16(apps.length);
  // URLs take what room the frame has left after every status's fixed part (a 256-app login
  // with long errors leaves little): ones that do not fit are left out, never the frame.
  let room = MAX_FRAME_BYTES - SESSION_ID_BYTES - 2;
  for (const a of apps) room -= 7 + utf8.encode(a.name).length + Math.min(utf8.encode(a.error).length, MAX_STATUS_ERROR_BYTES);
  for (const a of apps) {
    w.str(a.name).u8(APP_TYPES.indexOf(a.type)).u16(a.remotePort).clippedStr(a.error, MAX_STATUS_ERROR_BYTES);
    const urls: string[] = [];
    for (const u of (a.urls ?? []).slice(0, MAX_STATUS_URLS)) {
      const size = 2 + Math.min(utf8.encode(u).length, MAX_STATUS_URL_BYTES);
      if (size > room) break;
      room -= size;
      urls.push(u);
    }
    w.u8(urls.length);
    for (const u of urls) w.clippedStr(u, MAX_STATUS_URL_BYTES);
  }
  return w;
}

function readAppStatuses(r: Reader): AppStatus[] {
  const n = r.u16();
  const apps: AppStatus[] = [];
  for (let i = 0; i < n; i++) {
    const a = { name: r.str(), type: r.appType(), remotePort: r.u16(), error: r.str() };
    const count = r.u8();
    if (count > MAX_STATUS_URLS) throw new Short("too many URLs in an app status");
    const urls: string[] = [];
    for (let j = 0; j < count; j++) urls.push(r.str());
    apps.push(count ? { ...a, urls } : a);
  }
  return apps;
}

/** Encodes one message as a complete frame. Throws RangeError only for our own oversized messages. */
export function encode(msg: Message): Uint8Array {
  const w = new Writer();
  switch (msg.type) {
    case FrameType.Challenge:
      return w.bytes(msg.nonce).frame(msg.type);
    case FrameType.Login:
      w.str(msg.group).bytes(msg.proof).u16(msg.apps.length);
      for (const a of msg.apps) w.str(a.name).u8(APP_TYPES.indexOf(a.type));
      // The client's name and version ("warren-client 0.1.0"), shown to the operator; optional at the end.
      if (msg.client !== undefined) w.str(msg.client.slice(0, MAX_CLIENT_NAME_CHARS));
      return w.frame(msg.type);
    case FrameType.LoginOk:
      return writeAppStatuses(w.bytes(msg.sessionId), msg.apps).frame(msg.type);
    case FrameType.Apps:
      return writeAppStatuses(w, msg.apps).frame(msg.type);
    case FrameType.Ping:
    case FrameType.Pong:
      return w.u32(msg.seq).frame(msg.type);
    case FrameType.OpenWork:
      return w.u16(msg.count).frame(msg.type);
    case FrameType.Hello:
      return w.frame(msg.type);
    case FrameType.WorkHello:
      return w.bytes(msg.sessionId).bytes(seqBytes(msg.seq)).bytes(msg.proof).frame(msg.type);
    case FrameType.StartWork:
      return w.str(msg.app).str(msg.userAddr).str(msg.publicAddr).frame(msg.type);
    case FrameType.WorkAck:
      return w.u8(msg.ok ? 1 : 0).str(msg.message).frame(msg.type);
    case FrameType.Error:
      return w.u8(msg.code).str(msg.message).frame(msg.type);
    case FrameType.StreamEnd:
      return w.u53(msg.seq).u53(msg.bytes).frame(msg.type);
    case FrameType.WorkFree:
      return w.u53(msg.seq).frame(msg.type);
    case FrameType.Declare:
      w.u16(msg.apps.length);
      for (const a of msg.apps) w.str(a.name).u8(APP_TYPES.indexOf(a.type));
      return w.frame(msg.type);
    case FrameType.PeerLogin:
      return w.str(msg.node).bytes(msg.proof).frame(msg.type);
    case FrameType.PeerOk:
      return w.bytes(msg.linkId).str(msg.node).frame(msg.type);
    case FrameType.PeerData:
      return w.bytes(msg.linkId).u53(msg.seq).bytes(msg.proof).frame(msg.type);
    case FrameType.PeerStart:
      return w.str(msg.group).str(msg.app).str(msg.userAddr).str(msg.publicAddr).frame(msg.type);
  }
}

function fail(code: ErrorCode, message: string): DecodeResult {
  return { ok: false, error: { code, message } };
}

/** Decodes one frame body of the given type. Never throws. */
export function decodeBody(type: number, body: Uint8Array): DecodeResult {
  const r = new Reader(body);
  let msg: Message;
  try {
    switch (type) {
      case FrameType.Challenge:
        msg = { type, nonce: r.bytes(NONCE_BYTES) };
        break;
      case FrameType.Login: {
        const group = r.str();
        const proof = r.bytes(PROOF_BYTES);
        const n = r.u16();
        const apps: DeclaredApp[] = [];
        for (let i = 0; i < n; i++) apps.push({ name: r.str(), type: r.appType() });
        const client = r.done() ? undefined : r.str().slice(0, MAX_CLIENT_NAME_CHARS);
        msg = client === undefined ? { type, group, proof, apps } : { type, group, proof, apps, client };
        break;
      }
      case FrameType.LoginOk:
        msg = { type, sessionId: r.bytes(SESSION_ID_BYTES), apps: readAppStatuses(r) };
        break;
      case FrameType.Apps:
        msg = { type, apps: readAppStatuses(r) };
        break;
      case FrameType.Ping:
      case FrameType.Pong:
        msg = { type, seq: r.u32() };
        break;
      case FrameType.OpenWork:
        msg = { type, count: r.u16() };
        break;
      case FrameType.Hello:
        msg = { type };
        break;
      case FrameType.WorkHello: {
        const sessionId = r.bytes(SESSION_ID_BYTES);
        const hi = r.u32();
        const lo = r.u32();
        if (hi > MAX_SEQ_HIGH) return fail(ErrorCode.MalformedFrame, "work-hello sequence number beyond 2^53");
        msg = { type, sessionId, seq: hi * 0x1_0000_0000 + lo, proof: r.bytes(PROOF_BYTES) };
        break;
      }
      case FrameType.StartWork:
        msg = { type, app: r.str(), userAddr: r.str(), publicAddr: r.str() };
        break;
      case FrameType.WorkAck: {
        const flag = r.u8();
        if (flag > 1) return fail(ErrorCode.MalformedFrame, `work ack flag ${flag} is not 0 or 1`);
        msg = { type, ok: flag === 1, message: r.str() };
        break;
      }
      case FrameType.Error: {
        const code = r.u8();
        msg = { type, code: code as ErrorCode, message: r.str() };
        break;
      }
      case FrameType.StreamEnd:
        msg = { type, seq: r.u53(), bytes: r.u53() };
        break;
      case FrameType.WorkFree:
        msg = { type, seq: r.u53() };
        break;
      case FrameType.Declare: {
        const n = r.u16();
        const apps: DeclaredApp[] = [];
        for (let i = 0; i < n; i++) apps.push({ name: r.str(), type: r.appType() });
        msg = { type, apps };
        break;
      }
      case FrameType.PeerLogin:
        msg = { type, node: r.str(), proof: r.bytes(PROOF_BYTES) };
        break;
      case FrameType.PeerOk:
        msg = { type, linkId: r.bytes(SESSION_ID_BYTES), node: r.str() };
        break;
      case FrameType.PeerData:
        msg = { type, linkId: r.bytes(SESSION_ID_BYTES), seq: r.u53(), proof: r.bytes(PROOF_BYTES) };
        break;
      case FrameType.PeerStart:
        msg = { type, group: r.str(), app: r.str(), userAddr: r.str(), publicAddr: r.str() };
        break;
      default:
        return fail(ErrorCode.UnknownType, `unknown frame type 0x${type.toString(16).padStart(2, "0")}`);
    }
  } catch {
    // Short reads, bad UTF-8 and unknown app types all land here: the body does not fit its type.
    return fail(ErrorCode.MalformedFrame, `malformed ${frameName(type)} frame (${body.length} bytes)`);
  }
  if (!r.done()) return fail(ErrorCode.MalformedFrame, `${frameName(type)} frame has ${body.length} bytes, more than its fields`);
  return { ok: true, msg };
}

/** Human name of a frame type, for errors and logs. */
export function frameName(type: number): string {
  const names: Record<number, string> = {
    [FrameType.Challenge]: "challenge",
    [FrameType.Login]: "login",
    [FrameType.LoginOk]: "login-ok",
    [FrameType.Apps]: "apps",
    [FrameType.Ping]: "ping",
    [FrameType.Pong]: "pong",
    [FrameType.OpenWork]: "open-work",
    [FrameType.WorkHello]: "work-hello",
    [FrameType.StartWork]: "start-work",
    [FrameType.WorkAck]: "work-ack",
    [FrameType.Error]: "error",
    [FrameType.Hello]: "hello",
    [FrameType.StreamEnd]: "stream-end",
    [FrameType.WorkFree]: "work-free",
    [FrameType.Declare]: "declare",
    [FrameType.PeerLogin]: "peer-login",
    [FrameType.PeerOk]: "peer-ok",
    [FrameType.PeerData]: "peer-data",
    [FrameType.PeerStart]: "peer-start",
  };
  return names[type] ?? `0x${type.toString(16)}`;
}

/** Checks the first four bytes of a connection and names what is wrong with them. */
export function checkMagic(b: Uint8Array): ProtocolError | null {
  let prefix = true;
  for (let i = 0; i < VERSION_AT && i < b.length; i++) if (b[i] !== MAGIC[i]) prefix = false;
  if (prefix) {
    if (b.length <= VERSION_AT || b[VERSION_AT] === PROTOCOL_VERSION) return null;
    return { code: ErrorCode.VersionMismatch, message: `peer speaks Warren protocol v${b[VERSION_AT]}, this side speaks v${PROTOCOL_VERSION}` };
  }
  // 0x16 opens a TLS handshake record, 0x15 a TLS alert.
  if (b[0] === 0x16 || b[0] === 0x15) return { code: ErrorCode.TlsExpected, message: "the peer speaks TLS: enable TLS on this side" };
  return { code: ErrorCode.BadMagic, message: "not a Warren peer (bad magic bytes)" };
}

/**
 * Incremental frame parser for one connection. Feed it chunks with `push`,
 * pull messages with `next`; `rest` hands back unparsed bytes once the
 * connection switches to raw data.
 */
export class FrameReader {
  /** Unparsed bytes: a received chunk itself, or the tail of `#store`. */
  #buf: Uint8Array = EMPTY;
  /** Our own buffer with room to append, so a frame that trickles in byte by byte is copied once, not once per byte. */
  #store: Uint8Array | null = null;
  #magicSeen = false;
  #failed = false;

  /** Appends received bytes; ignored once the reader has failed or been spent. */
  push(chunk: Uint8Array): void {
    // A dead reader keeps nothing: a peer that goes on sending after an error must not grow our memory.
    if (this.#failed) return;
    const n = this.#buf.length;
    if (n === 0) {
      this.#buf = chunk;
      return;
    }
    const need = n + chunk.length;
    let store = this.#store;
    // `#buf` always ends where the last append ended, so in our store it can grow in place.
    let at = store && this.#buf.buffer === store.buffer ? this.#buf.byteOffset - store.byteOffset : -1;
    if (!store || at < 0 || at + need > store.length) {
      store = this.#store = new Uint8Array(need + Math.min(need, FRAME_HEADER_BYTES + MAX_FRAME_BYTES));
      store.set(this.#buf);
      at = 0;
    }
    store.set(chunk, at + n);
    this.#buf = store.subarray(at, at + need);
  }

  /** The next message, a typed error (after which the reader is dead), or null when more bytes are needed. */
  next(): DecodeResult | null {
    if (this.#failed) return null;
    if (!this.#magicSeen) {
      if (this.#buf.length < MAGIC.length) {
        // Say "TLS" or "bad magic" as soon as the first bytes show it.
        const early = checkMagic(this.#buf);
        return early ? this.#fail(early) : null;
      }
      const bad = checkMagic(this.#buf);
      if (bad) return this.#fail(bad);
      this.#magicSeen = true;
      this.#buf = this.#buf.length === MAGIC.length ? EMPTY : this.#buf.subarray(MAGIC.length);
    }
    if (this.#buf.length < FRAME_HEADER_BYTES) return null;
    const type = this.#buf[0]!;
    const len = ((this.#buf[1]! << 24) >>> 0) + (this.#buf[2]! << 16) + (this.#buf[3]! << 8) + this.#buf[4]!;
    if (len > MAX_FRAME_BYTES) {
      return this.#fail({ code: ErrorCode.FrameTooLarge, message: `${frameName(type)} frame of ${len} bytes exceeds the ${MAX_FRAME_BYTES}-byte limit` });
    }
    if (this.#buf.length < FRAME_HEADER_BYTES + len) return null;
    const body = this.#buf.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + len);
    // An empty view would keep the whole received chunk alive for as long as the connection lives.
    this.#buf = this.#buf.length === FRAME_HEADER_BYTES + len ? EMPTY : this.#buf.subarray(FRAME_HEADER_BYTES + len);
    const res = decodeBody(type, body);
    if (!res.ok) this.#failed = true;
    return res;
  }

  /** Bytes received but not parsed (possibly empty); the reader is spent afterwards. */
  rest(): Uint8Array {
    const b = this.#buf;
    this.#buf = EMPTY;
    this.#failed = true;
    return b;
  }

  /** Parses frames again after `rest` (a reused work connection; MAGIC is not expected twice). */
  reopen(): void {
    this.#buf = EMPTY;
    this.#failed = false;
  }

  /** How many unparsed bytes are held (bounded by the frame limit plus one chunk). */
  get buffered(): number {
    return this.#buf.length;
  }

  #fail(error: ProtocolError): DecodeResult {
    this.#failed = true;
    this.#buf = EMPTY;
    return { ok: false, error };
  }
}

/** Frames MAGIC followed by the given messages, ready for one write. */
export function withMagic(...frames: Uint8Array[]): Uint8Array {
  const total = frames.reduce((n, f) => n + f.length, MAGIC.length);
  const out = new Uint8Array(total);
  out.set(MAGIC);
  let at = MAGIC.length;
  for (const f of frames) {
    out.set(f, at);
    at += f.length;
  }
  return out;
}

function hmac(token: string, label: string, ...parts: Uint8Array[]): Uint8Array {
  const h = new Bun.CryptoHasher("sha256", token);
  h.update(label);
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}

/** Login proof: HMAC-SHA256 keyed by the group token over the nonce and group name, so the token never crosses the wire. */
export function loginProof(token: string, nonce: Uint8Array, group: string): Uint8Array {
  return hmac(token, "warren-login\0", nonce, utf8.encode(group));
}

/** Work-connection proof: binds the session it joins and a sequence number the server accepts only once (no challenge round trip). */
export function workProof(token: string, sessionId: Uint8Array, seq: number): Uint8Array {
  return hmac(token, "warren-work\0", sessionId, seqBytes(seq));
}

/** A node's proof of the cluster token, answering the peer port's challenge. */
export function peerProof(clusterToken: string, nonce: Uint8Array, node: string): Uint8Array {
  return hmac(clusterToken, "warren-peer\0", nonce, utf8.encode(node));
}

/** A peer data connection's proof: binds its link and a sequence number accepted once. */
export function peerDataProof(clusterToken: string, linkId: Uint8Array, seq: number): Uint8Array {
  return hmac(clusterToken, "warren-peer-data\0", linkId, seqBytes(seq));
}

/** Highest value of the upper 32 bits of a sequence number: sequence numbers stay exact JavaScript integers. */
const MAX_SEQ_HIGH = 0x1f_ffff;

/** A work-connection sequence number as 8 bytes, big-endian. */
function seqBytes(seq: number): Uint8Array {
  const b = new Uint8Array(8);
  const view = new DataView(b.buffer);
  view.setUint32(0, Math.floor(seq / 0x1_0000_0000));
  view.setUint32(4, seq >>> 0);
  return b;
}

/** `n` random bytes from the Web Crypto generator. */
export function randomBytes(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

// ---------------------------------------------------------------------------
// UDP datagrams on a work connection, after StartWork and WorkAck:
// `addrLen u8 | address (ASCII) | port u16 | length u16 | payload`.
// The address and port name the public peer, so replies go back to it.

/** Largest UDP payload over IPv4; nothing larger can exist, so a frame claiming more is a protocol error. */
export const MAX_DATAGRAM_BYTES = 65_507;
/** Longest peer address text (an IPv6 address with a zone fits). */
export const MAX_PEER_ADDRESS_BYTES = 64;

/** Encodes one datagram frame for `address:port` into `out` at `at`; returns the new offset, or -1 when it does not fit. */
export function encodeDatagramInto(out: Uint8Array, at: number, address: string, port: number, payload: Uint8Array): number {
  const alen = address.length;
  const end = at + 1 + alen + 4 + payload.length;
  if (end > out.length) return -1;
  out[at++] = alen;
  for (let i = 0; i < alen; i++) out[at++] = address.charCodeAt(i);
  out[at++] = port >>> 8;
  out[at++] = port & 0xff;
  out[at++] = payload.length >>> 8;
  out[at++] = payload.length & 0xff;
  out.set(payload, at);
  return end;
}

/** Bytes one datagram frame takes on the wire. */
export function datagramFrameBytes(address: string, payload: Uint8Array): number {
  return 1 + address.length + 4 + payload.length;
}

/**
 * Incremental parser of datagram frames. `push` calls `onDatagram` for each
 * complete frame and returns an error (after which the reader is dead) or null.
 */
export class DatagramReader {
  // Unparsed bytes live in #store[#start, #end); appends go at the end and the
  // front is compacted only when needed, so a peer dripping one byte at a time costs O(1) per byte.
  #store = new Uint8Array(0);
  #start = 0;
  #end = 0;
  #failed = false;
  constructor(private readonly onDatagram: (address: string, port: number, payload: Uint8Array) => void) {}

  /** Feeds received bytes; returns a protocol error, or null. Payloads are views valid only during the callback. */
  push(chunk: Uint8Array): ProtocolError | null {
    if (this.#failed) return null;
    if (this.#start === this.#end) {
      const at = this.#parse(chunk, 0, chunk.length);
      if (typeof at !== "number") return at;
      this.#keep(chunk.subarray(at));
      return null;
    }
    this.#append(chunk);
    const at = this.#parse(this.#store, this.#start, this.#end);
    if (typeof at !== "number") return at;
    this.#start = at;
    if (this.#start === this.#end) this.#start = this.#end = 0;
    return null;
  }

  #keep(tail: Uint8Array): void {
    this.#start = this.#end = 0;
    if (tail.length) this.#append(tail);
  }

  #append(chunk: Uint8Array): void {
    const used = this.#end - this.#start;
    if (this.#end + chunk.length > this.#store.length) {
      const cap = Math.max(used + chunk.length, Math.min(2 * this.#store.length, used + chunk.length + MAX_DATAGRAM_BYTES + 128));
      const next = cap > this.#store.length ? new Uint8Array(cap) : this.#store;
      // set() copies correctly even when source and target share the buffer (compaction in place).
      next.set(this.#store.subarray(this.#start, this.#end), 0);
      this.#store = next;
      this.#start = 0;
      this.#end = used;
    }
    this.#store.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  /** Parses whole frames in b[from, to); returns the offset after the last whole frame, or an error. */
  #parse(b: Uint8Array, from: number, to: number): number | ProtocolError {
    let at = from;
    while (to - at >= 1) {
      const alen = b[at]!;
      if (alen === 0 || alen > MAX_PEER_ADDRESS_BYTES) return this.#fail(`datagram peer address of ${alen} bytes`);
      const head = 1 + alen + 4;
      if (to - at < head) break;
      const len = (b[at + head - 2]! << 8) | b[at + head - 1]!;
      if (len > MAX_DATAGRAM_BYTES) return this.#fail(`datagram of ${len} bytes exceeds ${MAX_DATAGRAM_BYTES}`);
      if (to - at < head + len) break;
      const address = this.#address(b, at + 1, alen);
      const port = (b[at + 1 + alen]! << 8) | b[at + 2 + alen]!;
      this.onDatagram(address, port, b.subarray(at + head, at + head + len));
      at += head + len;
    }
    return at;
  }

  // The peer address of the last frame, as bytes and as text: runs of one peer's datagrams then build no string each.
  #lastAddress = new Uint8Array(MAX_PEER_ADDRESS_BYTES);
  #lastAddressLen = 0;
  #lastAddressText = "";

  #address(b: Uint8Array, from: number, len: number): string {
    const last = this.#lastAddress;
    let same = len === this.#lastAddressLen;
    for (let i = 0; same && i < len; i++) same = b[from + i] === last[i];
    if (same) return this.#lastAddressText;
    let text = "";
    for (let i = 0; i < len; i++) text += String.fromCharCode((last[i] = b[from + i]!));
    this.#lastAddressLen = len;
    return (this.#lastAddressText = text);
  }

  #fail(message: string): ProtocolError {
    this.#failed = true;
    this.#store = new Uint8Array(0);
    this.#start = this.#end = 0;
    return { code: ErrorCode.MalformedFrame, message };
  }
}

// ---------------------------------------------------------------- PROXY protocol
// HAProxy's PROXY protocol (www.haproxy.org/download/2.9/doc/proxy-protocol.txt): a header
// the client writes to a local app before the user's bytes, so that the app (nginx, HAProxy,
// Postfix, ...) learns the user's address. Version 1 is one text line, version 2 binary.

/** An address as StartWork carries it: "ip:port", or "[ip]:port" for IPv6 (the form config.ts's parseHostPort reads). */
export function hostPort(ip: string, port: number): string {
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** The PROXY protocol versions an app may ask for. */
export type ProxyVersion = "v1" | "v2";
const PROXY_V2_SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
/** Version 2, command PROXY; version 2, command LOCAL (no addresses: the receiver uses the connection's own). */
const PROXY_V2_PROXY = 0x21;
const PROXY_V2_LOCAL = 0x20;
/** Address family and transport bytes of version 2: TCP over IPv4, TCP over IPv6, unspecified. */
const PROXY_V2_TCP4 = 0x11;
const PROXY_V2_TCP6 = 0x21;
const PROXY_V2_UNSPEC = 0x00;

/** One end of a TCP connection for a PROXY header. */
export interface ProxyEnd {
  readonly ip: string;
  readonly port: number;
}

/**
 * An address as PROXY sees it: IPv4 (IPv4-mapped IPv6 included) or IPv6, with its bytes and its text
 * written afresh from them (RFC 5952; readers parse it with inet_pton); null when it is not one. Leading
 * zeros ("010" is octal to some parsers, decimal to others) and zone ids are refused.
 */
function proxyAddress(ip: string): { v6: boolean; bytes: number[]; text: string } | null {
  const a = parseIp(ip); // an IPv4 user on a dual-stack listener comes as ::ffff:a.b.c.d, given back as IPv4
  return a && { v6: a.length === 16, bytes: [...a], text: formatIp(a) };
}

/**
 * The PROXY header for a TCP stream from `src` (the user) to `dst` (the public address it
 * connected to). Ends of different families, or ones that are not addresses, give the header
 * that says "unknown" (v1 UNKNOWN, v2 LOCAL): the app then sees the client's own address.
 */
export function proxyHeader(version: ProxyVersion, src: ProxyEnd, dst: ProxyEnd): Uint8Array {
  const s = proxyAddress(src.ip);
  const d = proxyAddress(dst.ip);
  const known = s && d && s.v6 === d.v6;
  if (version === "v1") {
    const line = known ? `PROXY ${s.v6 ? "TCP6" : "TCP4"} ${s.text} ${d.text} ${src.port} ${dst.port}\r\n` : "PROXY UNKNOWN\r\n";
    return utf8.encode(line);
  }
  const body = known ? [...s.bytes, ...d.bytes, src.port >> 8, src.port & 0xff, dst.port >> 8, dst.port & 0xff] : [];
  const family = known ? (s.v6 ? PROXY_V2_TCP6 : PROXY_V2_TCP4) : PROXY_V2_UNSPEC;
  return Uint8Array.from([...PROXY_V2_SIGNATURE, known ? PROXY_V2_PROXY : PROXY_V2_LOCAL, family, body.length >> 8, body.length & 0xff, ...body]);
}
