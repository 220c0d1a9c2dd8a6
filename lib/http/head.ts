/**
 * HTTP/1.x message heads (request line or status line, then header lines) for
 * the reverse proxy: find where a head ends, parse it strictly, write it back.
 * Pure functions, no I/O. Strict on purpose: a proxy that reads a head more
 * leniently than the server behind it invites request smuggling (RFC 9112 §11.2).
 */

/** Default limit of a request or response head (request line + headers), in bytes. */
export const MAX_HEAD_BYTES = 32 * 1024;
/** Most header lines in one head: more is refused with 431 rather than stored. */
export const MAX_HEADERS = 128;

/** One header line: name as sent (case kept), value with surrounding OWS trimmed. */
export type Header = [name: string, value: string];
/** A parsed request head. */
export interface RequestHead { method: string; target: string; minor: 0 | 1; headers: Header[] }
/** A parsed response head. */
export interface ResponseHead { minor: 0 | 1; status: number; reason: string; headers: Header[] }
/** Why a request head is refused, as the HTTP status the proxy answers with. */
export interface HeadProblem { status: 400 | 431 | 501 | 505; reason: string }

const LF = 0x0a;
const CR = 0x0d;

/** Index just past the empty line ending a head that starts at buf[0], searching from `from` (to resume after a partial read; callers pass the previous length minus 3), or -1 when not complete yet. CRLF CRLF ends a head; a bare LF LF also (RFC 9112 allows LF-only line ends on receipt). */
export function headEnd(buf: Uint8Array, from: number): number {
  // A head ends at an LF followed by an empty line: LF LF or LF CR LF. This
  // covers CRLF CRLF, LF LF and the mixed forms, exactly as the parser splits lines.
  let i = from > 0 ? from : 0;
  for (;;) {
    i = buf.indexOf(LF, i);
    if (i < 0 || i + 1 >= buf.length) return -1;
    const next = buf[i + 1];
    if (next === LF) return i + 2;
    if (next === CR) {
      if (i + 2 >= buf.length) return -1;
      if (buf[i + 2] === LF) return i + 3;
    }
    i++;
  }
}

// RFC 9110 §5.6.2 tchar, as a table indexed by char code (latin1 codes above 0x7f are never tchar).
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") TCHAR[c.charCodeAt(0)] = 1;

/** Whether char code `c` is an RFC 9110 tchar. @internal */
export function isTchar(c: number): boolean {
  return TCHAR[c] === 1;
}

/** Whether `s` is a non-empty RFC 9110 token. @internal */
export function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) if (TCHAR[s.charCodeAt(i)] !== 1) return false;
  return true;
}

/** Whether `c` is a control character a field value must not hold (every CTL but HTAB). @internal */
export function isBadValueChar(c: number): boolean {
  return (c < 0x20 && c !== 0x09) || c === 0x7f;
}

/** Bytes to a string one char per byte. TextDecoder("latin1") is really windows-1252 (WHATWG Encoding), which would remap 0x80-0x9f, so Node's Buffer does it. */
function latin1(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("latin1");
}

/** A string of chars up to 0xff back to its bytes; a wider char is a caller's bug, refused rather than truncated. */
function latin1Bytes(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw new RangeError("HTTP head holds a character above U+00FF");
    out[i] = c;
  }
  return out;
}

const bad = (reason: string): HeadProblem => ({ status: 400, reason });

/** Splits a complete head into its first line and header lines; the shared half of request and response parsing. */
function parseHead(bytes: Uint8Array): { first: string; headers: Header[] } | HeadProblem {
  if (bytes.length > MAX_HEAD_BYTES) return { status: 431, reason: "head too large" };
  const s = latin1(bytes);
  let first: string | null = null;
  const headers: Header[] = [];
  let pos = 0;
  for (;;) {
    const lf = s.indexOf("\n", pos);
    if (lf < 0) return bad("head not terminated by an empty line");
    // A CR is only part of the line end right before the LF; elsewhere it is a bare CR, refused below.
    const end = lf > pos && s.charCodeAt(lf - 1) === CR ? lf - 1 : lf;
    const start = pos;
    pos = lf + 1;
    if (first === null) {
      first = s.slice(start, end);
      continue;
    }
    if (end === start) break;
    if (headers.length === MAX_HEADERS) return { status: 431, reason: "too many header lines" };
    const h = parseHeaderLine(s, start, end);
    if (!Array.isArray(h)) return h;
    headers.push(h);
  }
  if (pos !== s.length) return bad("bytes after the end of the head");
  return { first, headers };
}

/** One `name: value` line between `start` and `end` of `s`. */
function parseHeaderLine(s: string, start: number, end: number): Header | HeadProblem {
  const c0 = s.charCodeAt(start);
  // RFC 9112 §5.2: obs-fold is refused outside message/http.
  if (c0 === 0x20 || c0 === 0x09) return bad("obsolete line folding in header");
  const colon = s.indexOf(":", start);
  if (colon < 0 || colon >= end) return bad("header line without a colon");
  if (colon === start) return bad("empty header name");
  for (let i = start; i < colon; i++) {
    const c = s.charCodeAt(i);
    if (TCHAR[c] === 1) continue;
    // RFC 9112 §5.1: whitespace between name and colon MUST be refused with 400.
    if (c === 0x20 || c === 0x09) return bad("header name contains a space");
    return bad("invalid character in header name");
  }
  let vs = colon + 1;
  let ve = end;
  while (vs < ve && (s.charCodeAt(vs) === 0x20 || s.charCodeAt(vs) === 0x09)) vs++;
  while (ve > vs && (s.charCodeAt(ve - 1) === 0x20 || s.charCodeAt(ve - 1) === 0x09)) ve--;
  for (let i = vs; i < ve; i++) if (isBadValueChar(s.charCodeAt(i))) return bad("control character in header value");
  return [s.slice(start, colon), s.slice(vs, ve)];
}

/** `s` from `at` to `end`: `HTTP/1.0` → 0, `HTTP/1.1` → 1, another `HTTP/d.d` → "other", anything else → null. */
function httpVersion(s: string, at: number, end: number): 0 | 1 | "other" | null {
  if (end - at !== 8 || s.length < end || !s.startsWith("HTTP/", at) || s[at + 6] !== ".") return null;
  const major = s.charCodeAt(at + 5) - 0x30;
  const minor = s.charCodeAt(at + 7) - 0x30;
  if (!(major >= 0 && major <= 9 && minor >= 0 && minor <= 9)) return null;
  if (major === 1 && (minor === 0 || minor === 1)) return minor;
  return "other";
}

/** Parses a complete request head (bytes up to and including the blank line). */
export function parseRequestHead(bytes: Uint8Array): RequestHead | HeadProblem {
  const head = parseHead(bytes);
  if ("status" in head) return head;
  const line = head.first;
  const sp1 = line.indexOf(" ");
  if (sp1 <= 0) return bad("malformed request line");
  const method = line.slice(0, sp1);
  if (!isToken(method)) return bad("invalid method");
  const sp2 = line.indexOf(" ", sp1 + 1);
  if (sp2 < 0 || sp2 === sp1 + 1) return bad("malformed request line");
  for (let i = sp1 + 1; i < sp2; i++) {
    const c = line.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return bad("control character in request target");
  }
  // Covers the HTTP/2 preface too: `PRI * HTTP/2.0` is a well-formed line of another version.
  const minor = httpVersion(line, sp2 + 1, line.length);
  if (minor === "other") return { status: 505, reason: "HTTP version not supported" };
  if (minor === null) return bad("malformed request line");
  return { method, target: line.slice(sp1 + 1, sp2), minor, headers: head.headers };
}

/** Parses a complete response head; a string says what is wrong. */
export function parseResponseHead(bytes: Uint8Array): ResponseHead | string {
  const head = parseHead(bytes);
  if ("status" in head) return head.reason;
  const line = head.first;
  const minor = httpVersion(line, 0, 8);
  if (minor === null) return "malformed status line";
  if (minor === "other") return "unsupported HTTP version in status line";
  // RFC 9112 §4: SP 3DIGIT, then SP and a reason that may be empty; the SP before an empty one is often missing.
  if (line.charCodeAt(8) !== 0x20 || (line.length > 12 && line.charCodeAt(12) !== 0x20)) return "malformed status line";
  let status = 0;
  for (let i = 9; i < 12; i++) {
    const d = line.charCodeAt(i) - 0x30;
    if (!(d >= 0 && d <= 9)) return "malformed status code";
    status = status * 10 + d;
  }
  if (status < 100) return "malformed status code";
  const reason = line.slice(13);
  for (let i = 0; i < reason.length; i++) if (isBadValueChar(reason.charCodeAt(i))) return "control character in reason phrase";
  return { minor, status, reason, headers: head.headers };
}

/** Header lines, each ended by CRLF, then the blank line. */
function headerText(headers: readonly Header[]): string {
  let s = "";
  // An empty value is written without the SP, so `Name:` round-trips and no line ends in whitespace.
  for (const [name, value] of headers) s += value === "" ? `${name}:\r\n` : `${name}: ${value}\r\n`;
  return s + "\r\n";
}

/** The wire form: "METHOD target HTTP/1.x\r\nName: value\r\n...\r\n". */
export function requestHeadBytes(h: RequestHead): Uint8Array {
  return latin1Bytes(`${h.method} ${h.target} HTTP/1.${h.minor}\r\n${headerText(h.headers)}`);
}

/** The wire form: "HTTP/1.x status reason\r\nName: value\r\n...\r\n". */
export function responseHeadBytes(h: ResponseHead): Uint8Array {
  return latin1Bytes(`HTTP/1.${h.minor} ${h.status} ${h.reason}\r\n${headerText(h.headers)}`);
}

/** Whether header name `a` equals `lower` (already lower-case), ignoring case; skips lower-casing on a length mismatch. */
function sameName(a: string, lower: string): boolean {
  return a.length === lower.length && (a === lower || a.toLowerCase() === lower);
}

/** First value of a header, names compared case-insensitively. */
export function header(headers: readonly Header[], name: string): string | undefined {
  const lower = name.toLowerCase();
  for (const h of headers) if (sameName(h[0], lower)) return h[1];
  return undefined;
}

/** All values of a header joined with ", " (for list headers), or undefined. */
export function headerList(headers: readonly Header[], name: string): string | undefined {
  const lower = name.toLowerCase();
  let out: string | undefined;
  for (const h of headers) if (sameName(h[0], lower)) out = out === undefined ? h[1] : `${out}, ${h[1]}`;
  return out;
}

/** Lower-cased comma-separated tokens of a list header such as Connection (all its lines). */
export function headerTokens(headers: readonly Header[], name: string): string[] {
  const lower = name.toLowerCase();
  const out: string[] = [];
  for (const h of headers) {
    if (!sameName(h[0], lower)) continue;
    // RFC 9110 §5.6.1: empty list elements are ignored.
    for (const part of h[1].split(",")) {
      const t = part.trim().toLowerCase();
      if (t !== "") out.push(t);
    }
  }
  return out;
}

/** Sets (replaces every line of) a header; removes it when value is null. Mutates `headers`. Throws on a name that is not a token or a value with a control character: these come from the proxy itself, and writing them would inject header lines. */
export function setHeader(headers: Header[], name: string, value: string | null): void {
  if (!isToken(name)) throw new TypeError("header name is not a token");
  if (value !== null) {
    for (let i = 0; i < value.length; i++) if (isBadValueChar(value.charCodeAt(i))) throw new TypeError("control character in header value");
  }
  const lower = name.toLowerCase();
  let at = -1;
  let w = 0;
  // Compacts in place; the new line takes the first old line's position so the order of the others stays.
  for (let r = 0; r < headers.length; r++) {
    const h = headers[r]!;
    if (sameName(h[0], lower)) {
      if (at < 0) at = w;
      continue;
    }
    headers[w++] = h;
  }
  headers.length = w;
  if (value === null) return;
  if (at < 0) headers.push([name, value]);
  else headers.splice(at, 0, [name, value]);
}

/** Gathers one response head across chunks (held between them, at most MAX_HEAD_BYTES). */
export class ResponseHeadReader {
  #held: Uint8Array | null = null;

  /**
   * Reads from `data` at `off`: the head (parsed, and its bytes) and the offset just after it;
   * null while more bytes are needed; a string when the head is too large or malformed.
   */
  read(data: Uint8Array, off: number): { head: ResponseHead; bytes: Uint8Array; next: number } | null | string {
    const prior = this.#held?.length ?? 0;
    const joined = prior ? join(this.#held!, data.subarray(off)) : data.subarray(off);
    const end = headEnd(joined, Math.max(0, prior - 3));
    if (end < 0) {
      if (joined.length > MAX_HEAD_BYTES) return `response head larger than ${MAX_HEAD_BYTES} bytes`;
      this.#held = joined.slice();
      return null;
    }
    this.#held = null;
    const bytes = joined.subarray(0, end);
    const head = parseResponseHead(bytes);
    if (typeof head === "string") return `response head malformed (${head})`;
    return { head, bytes, next: off + end - prior };
  }

  /** Forgets a partial head (a new exchange begins). */
  reset(): void {
    this.#held = null;
  }
}

function join(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
