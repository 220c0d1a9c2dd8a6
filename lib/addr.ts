/**
 * Address parsing shared by the config schemas and the runtime: pure functions, no state.
 * Our own rather than ipaddr.js, whose CommonJS loading cost each process about 3 MiB
 * (bench/optimisations.md, issue 21); stricter too: IPv4 is four decimal parts without
 * leading zeros ("010" is octal to some parsers, decimal to others), and zone ids
 * ("fe80::1%eth0") are refused.
 */

/** An IPv4 address as 4 bytes or an IPv6 address as 16, in network order. */
export type IpBytes = Uint8Array;

/** A network: its address bytes and how many leading bits of them count. */
export interface Cidr {
  readonly bytes: IpBytes;
  readonly bits: number;
}

const V4_PART = /^(0|[1-9]\d{0,2})$/;
const V6_WORD = /^[0-9a-f]{1,4}$/i;
/** Longest text form of an IPv6 address ("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"). */
const V6_MAX_CHARS = 45;
/** The ::ffff:0:0/96 prefix of IPv4-mapped IPv6 addresses (RFC 4291 2.5.5.2). */
const MAPPED_PREFIX = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/** Dotted-quad IPv4: four decimal parts of 0-255 without leading zeros. */
function parseV4(s: string): IpBytes | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!V4_PART.test(parts[i]!)) return null;
    const n = Number(parts[i]);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

/** IPv6 text (RFC 4291 2.2): eight words of 1-4 hex digits, at most one "::", optionally a dotted IPv4 tail. */
function parseV6(s: string): IpBytes | null {
  if (s.length < 2 || s.length > V6_MAX_CHARS) return null;
  let text = s;
  let tail: IpBytes | null = null;
  const lastColon = s.lastIndexOf(":");
  if (lastColon < 0) return null;
  if (s.includes(".", lastColon)) {
    tail = parseV4(s.slice(lastColon + 1));
    if (!tail) return null;
    text = s.slice(0, lastColon + 1) + "0:0"; // the tail stands for the last two words
  }
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const words = (h: string) => (h === "" ? [] : h.split(":"));
  const head = words(halves[0]!);
  const rest = halves.length === 2 ? words(halves[1]!) : [];
  // "::" stands for at least one zero word.
  if (halves.length === 2 ? head.length + rest.length > 7 : head.length !== 8) return null;
  const out = new Uint8Array(16);
  const put = (list: string[], at: number): boolean => {
    for (let i = 0; i < list.length; i++) {
      if (!V6_WORD.test(list[i]!)) return false;
      const w = parseInt(list[i]!, 16);
      out[at + 2 * i] = w >> 8;
      out[at + 2 * i + 1] = w & 0xff;
    }
    return true;
  };
  if (!put(head, 0) || !put(rest, 16 - 2 * rest.length)) return null;
  if (tail) out.set(tail, 12);
  return out;
}

/** Whether 16 bytes are an IPv4-mapped IPv6 address. */
function isMapped(b: IpBytes): boolean {
  return b.length === 16 && MAPPED_PREFIX.every((x, i) => b[i] === x);
}

/**
 * Parses an IPv4 or IPv6 address; null when it is not one. An IPv4-mapped IPv6 address
 * (::ffff:192.0.2.7, how a dual-stack listener reports an IPv4 user) comes back as its IPv4.
 */
export function parseIp(s: string): IpBytes | null {
  const b = s.includes(":") ? parseV6(s) : parseV4(s);
  return b && isMapped(b) ? b.slice(12) : b;
}

/**
 * Parses an address or CIDR ("10.0.0.0/8", "::1", "192.168.1.7"); null when malformed. An IPv4-mapped
 * network of /96 or longer is the IPv4 network it maps, so that it matches the users it names.
 */
export function parseCidr(s: string): Cidr | null {
  const slash = s.indexOf("/");
  const raw = slash < 0 ? s : s.slice(0, slash);
  const b = raw.includes(":") ? parseV6(raw) : parseV4(raw);
  if (!b) return null;
  let bits = b.length * 8;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^(0|[1-9]\d{0,2})$/.test(p) || Number(p) > bits) return null;
    bits = Number(p);
  }
  return isMapped(b) && bits >= 96 ? { bytes: b.slice(12), bits: bits - 96 } : { bytes: b, bits };
}

/** Whether `addr` (from parseIp) lies in `net`; IPv4 and IPv6 never match each other. */
export function cidrContains(net: Cidr, addr: IpBytes): boolean {
  if (net.bytes.length !== addr.length) return false;
  const whole = net.bits >> 3;
  for (let i = 0; i < whole; i++) if (net.bytes[i] !== addr[i]) return false;
  const rest = net.bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (net.bytes[whole]! & mask) === (addr[whole]! & mask);
}

/** An address's text: dotted IPv4, or IPv6 in RFC 5952's form (lower case, the longest run of two or more zero words as "::", the first of equal runs). */
export function formatIp(b: IpBytes): string {
  if (b.length === 4) return b.join(".");
  const words = Array.from({ length: 8 }, (_, i) => (b[2 * i]! << 8) | b[2 * i + 1]!);
  let [best, bestLen] = [-1, 1];
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(":");
  return best < 0 ? hex(words) : `${hex(words.slice(0, best))}::${hex(words.slice(best + bestLen))}`;
}

/** Parses "host:port" or "[v6]:port"; null when malformed. */
export function parseHostPort(s: string): { host: string; port: number } | null {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(s);
  if (!m) return null;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  return { host: (m[1] ?? m[2])!, port };
}
