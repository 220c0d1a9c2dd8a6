/** Access control: login lockout per source address, and per-app IP allow and deny lists. */
import { cidrContains, formatIp, parseCidr, parseIp, type Cidr } from "./addr.ts";
import { LOGIN_BLOCK_S, LOGIN_FAILURE_LIMIT, LOGIN_FAILURE_WINDOW_S } from "./config/defaults.ts";
import { log } from "./log.ts";

/** Addresses tracked at once; the stalest is forgotten beyond it, so a spray of sources cannot exhaust memory. */
export const MAX_TRACKED_ADDRESSES = 65_536;
/** Oldest records looked at for one that is not blocked when one must be forgotten: a spray of new sources must not lift blocks. */
const EVICTION_SCAN = 64;
/** IPv6 prefix length counted as one source: a single host or subscriber gets a whole /64, and would otherwise have 2^64 addresses to fail from. */
export const IPV6_SOURCE_PREFIX = 64;

/** The key one source's failures count under: an IPv4 address (mapped IPv6 ones included), or an IPv6 /64. */
export function sourceKey(address: string): string {
  const a = parseIp(address); // maps ::ffff:1.2.3.4 to 1.2.3.4
  if (!a) return address; // not an address (cannot happen for a socket's peer): counted as it is
  if (a.length === 4) return formatIp(a);
  const words = Array.from({ length: IPV6_SOURCE_PREFIX / 16 }, (_, i) => ((a[2 * i]! << 8) | a[2 * i + 1]!).toString(16));
  return `${words.join(":")}::/${IPV6_SOURCE_PREFIX}`;
}

/** Times are performance.now() (monotonic): a wall-clock step neither lifts a block nor stretches one. */
interface Record {
  failures: number[];
  blockedUntil: number;
}

/** Counts failed logins per source address and blocks an address that fails too often. */
export class LoginGuard {
  #by = new Map<string, Record>();

  constructor(
    private readonly limit = LOGIN_FAILURE_LIMIT,
    private readonly windowMs = LOGIN_FAILURE_WINDOW_S * 1000,
    private readonly blockMs = LOGIN_BLOCK_S * 1000,
  ) {}

  /** Addresses tracked now; never more than MAX_TRACKED_ADDRESSES. */
  get tracked(): number {
    return this.#by.size;
  }

  /** Whether logins from `address` (its IPv6 /64) are refused now. */
  blocked(address: string, now = performance.now()): boolean {
    const r = this.#by.get(sourceKey(address));
    return !!r && r.blockedUntil > now;
  }

  /** Records a failed login; blocks the address (its IPv6 /64) at the limit (logged once per block). */
  fail(address: string, where: string, now = performance.now()): void {
    const key = sourceKey(address);
    let r = this.#by.get(key);
    if (r) this.#by.delete(key); // re-insert: Map order is recency order
    else r = { failures: [], blockedUntil: 0 };
    this.#by.set(key, r);
    if (this.#by.size > MAX_TRACKED_ADDRESSES) this.#forgetOne(now);
    r.failures = r.failures.filter((t) => t > now - this.windowMs);
    r.failures.push(now);
    if (r.failures.length >= this.limit && r.blockedUntil <= now) {
      r.blockedUntil = now + this.blockMs;
      r.failures = [];
      log.warn("address blocked after repeated failed logins", { from: key, failures: this.limit, where, blockedForS: this.blockMs / 1000 });
    }
  }

  /** Forgets the stalest record that is not blocked among the oldest EVICTION_SCAN, or the stalest of all. */
  #forgetOne(now: number): void {
    let n = 0;
    for (const [key, r] of this.#by) {
      if (r.blockedUntil <= now) return void this.#by.delete(key);
      if (++n >= EVICTION_SCAN) break;
    }
    this.#by.delete(this.#by.keys().next().value!);
  }
}

/** An app's allow and deny lists: deny wins; an empty allow list allows everyone not denied. */
export class AccessList {
  readonly #allow: Cidr[];
  readonly #deny: Cidr[];

  constructor(allow: readonly string[] = [], deny: readonly string[] = []) {
    this.#allow = allow.map((s) => parseCidr(s)!).filter(Boolean);
    this.#deny = deny.map((s) => parseCidr(s)!).filter(Boolean);
  }

  /** Whether the list restricts anything. */
  get empty(): boolean {
    return this.#allow.length === 0 && this.#deny.length === 0;
  }

  /** Whether a user from `address` may connect. */
  allows(address: string): boolean {
    if (this.empty) return true;
    const a = parseIp(address); // maps ::ffff:1.2.3.4 to 1.2.3.4
    if (!a) return false;
    const hit = (list: Cidr[]) => list.some((net) => cidrContains(net, a));
    if (hit(this.#deny)) return false;
    return this.#allow.length === 0 || hit(this.#allow);
  }
}

/** Sequence numbers a session remembers behind the highest it has accepted; older ones are refused. Far beyond the work connections a client has in flight (MAX_WORK_DIALS). */
export const SEQ_WINDOW = 4096;

/**
 * Accepts each work-connection sequence number at most once, so a recorded
 * work hello cannot be replayed. Numbers may arrive out of order within
 * SEQ_WINDOW of the highest one accepted; memory is one bit per number in the window.
 */
export class SeqWindow {
  /** Bit i set: `top - i` was accepted. */
  readonly #bits = new Uint32Array(SEQ_WINDOW / 32);
  #top = -1;

  /** Records `seq` and says whether it was new and inside the window. */
  accept(seq: number): boolean {
    if (seq > this.#top) {
      this.#shift(seq - this.#top);
      this.#top = seq;
      this.#bits[0]! |= 1;
      return true;
    }
    const back = this.#top - seq;
    if (back >= SEQ_WINDOW) return false;
    const word = back >>> 5;
    const bit = 1 << (back & 31);
    if (this.#bits[word]! & bit) return false;
    this.#bits[word]! |= bit;
    return true;
  }

  /** Moves every remembered number `n` places back (older), dropping those that leave the window. */
  #shift(n: number): void {
    const bits = this.#bits;
    if (n >= SEQ_WINDOW) {
      bits.fill(0);
      return;
    }
    const words = n >>> 5;
    const rest = n & 31;
    for (let i = bits.length - 1; i >= 0; i--) {
      const from = i - words;
      const hi = from >= 0 ? bits[from]! : 0;
      const lo = from - 1 >= 0 ? bits[from - 1]! : 0;
      bits[i] = rest === 0 ? hi : ((hi << rest) | (lo >>> (32 - rest))) >>> 0;
    }
  }
}
