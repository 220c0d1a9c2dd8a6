/**
 * lib/addr.ts against ipaddr.js (a dev dependency kept as the reference): the same bytes for
 * every written form of seeded random addresses, the same answers for networks, and the
 * forms we refuse on purpose (leading zeros, zone ids, short IPv4).
 */
import { describe, expect, test } from "bun:test";
import ipaddr from "ipaddr.js";
import { cidrContains, formatIp, parseCidr, parseIp } from "../lib/addr.ts";
import { AccessList, sourceKey } from "../lib/guard.ts";

/** A seeded generator, so a failure names an input that can be replayed. */
function lcg(seed: number): () => number {
  let x = seed;
  return () => ((x = (x * 1103515245 + 12345) >>> 0) >>> 16) & 0xffff;
}
const ROUNDS = 3000;

describe("parseIp and formatIp", () => {
  test("IPv6 in every written form gives ipaddr.js's bytes, and text in RFC 5952's form (3,000 seeded addresses)", () => {
    const rnd = lcg(7);
    for (let i = 0; i < ROUNDS; i++) {
      const words = Array.from({ length: 8 }, () => (rnd() % 3 === 0 ? 0 : rnd()));
      const ref = ipaddr.fromByteArray(words.flatMap((w) => [w >> 8, w & 0xff])) as ipaddr.IPv6;
      const expected = ref.isIPv4MappedAddress() ? ref.toIPv4Address().toByteArray() : ref.toByteArray();
      for (const form of [ref.toString(), ref.toNormalizedString(), ref.toNormalizedString().split(":").map((w) => w.padStart(4, "0")).join(":"), ref.toNormalizedString().toUpperCase()]) {
        const got = parseIp(form);
        expect(got && [...got]).toEqual(expected);
      }
      if (!ref.isIPv4MappedAddress()) expect(formatIp(parseIp(ref.toString())!)).toBe(ref.toRFC5952String());
    }
  });

  test("IPv4, plain and mapped (both spellings), is 4 bytes and dotted text", () => {
    const rnd = lcg(11);
    for (let i = 0; i < ROUNDS; i++) {
      const b = [rnd() & 0xff, rnd() & 0xff, rnd() & 0xff, rnd() & 0xff];
      const dotted = b.join(".");
      const mappedHex = `::ffff:${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
      for (const form of [dotted, `::ffff:${dotted}`, `::FFFF:${dotted}`, mappedHex]) expect([...parseIp(form)!]).toEqual(b);
      expect(formatIp(parseIp(dotted)!)).toBe(dotted);
    }
  });

  test("an IPv4 tail on other IPv6 prefixes stays IPv6", () => {
    expect(formatIp(parseIp("64:ff9b::192.0.2.33")!)).toBe("64:ff9b::c000:221");
    expect(formatIp(parseIp("::1.2.3.4")!)).toBe("::102:304");
    expect(formatIp(parseIp("1:2:3:4:5:6:1.2.3.4")!)).toBe("1:2:3:4:5:6:102:304");
  });

  test("not addresses: each of these is null", () => {
    for (const s of [
      "", "1.2.3", "1.2.3.4.5", "256.1.1.1", "010.0.0.1", "01.2.3.4", "1.2.3.-4", "0x7f.0.0.1", "2130706433", " 1.2.3.4", "1.2.3.4 ",
      ":", ":::", "1::2::3", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", ":1:2:3:4:5:6:7", "1:2:3:4:5:6:7:", "12345::", "g::1",
      "fe80::1%eth0", "::ffff:010.0.0.1", "1:2:3:4:5:6:7:1.2.3.4", "1.2.3.4::", "::1.2.3", "[::1]", "1:2:3:4:5:6:7:8::",
    ]) {
      expect({ s, got: parseIp(s) }).toEqual({ s, got: null });
    }
    expect(formatIp(parseIp("1:2:3:4:5:6:7::")!)).toBe("1:2:3:4:5:6:7:0"); // "::" may stand for one zero word
  });
});

describe("parseCidr and cidrContains", () => {
  test("membership agrees with ipaddr.js for seeded networks and addresses of both families", () => {
    const rnd = lcg(23);
    for (let i = 0; i < ROUNDS; i++) {
      const v6 = i % 2 === 1;
      const n = v6 ? 16 : 4;
      const base = Array.from({ length: n }, () => rnd() & 0xff);
      // Near the network half the time, so both answers come up.
      const addr = base.map((x, j) => (j >= n - 1 - (rnd() % 3) && rnd() % 2 ? rnd() & 0xff : x));
      const bits = rnd() % (n * 8 + 1);
      const net = ipaddr.fromByteArray(base);
      const cidr = `${net.toString()}/${bits}`;
      const mine = parseCidr(cidr);
      expect(mine).not.toBeNull();
      const a = ipaddr.fromByteArray(addr);
      const ours = parseIp(a.toString());
      const reference = a.kind() === net.kind() && a.match(ipaddr.parseCIDR(cidr));
      // A mapped address or network is IPv4 to us: compare only where both sides are the family ipaddr.js sees.
      if (ours!.length === n && mine!.bytes.length === n) expect({ cidr, a: a.toString(), in: cidrContains(mine!, ours!) }).toEqual({ cidr, a: a.toString(), in: reference });
    }
  });

  test("a single address is a full-length network; malformed prefixes are refused", () => {
    expect(parseCidr("192.0.2.7")).toEqual({ bytes: Uint8Array.of(192, 0, 2, 7), bits: 32 });
    expect(parseCidr("::1")!.bits).toBe(128);
    for (const s of ["10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/08", "10.0.0.0/-1", "10.0.0.0/8/8", "/8", "10.0.0/8"]) expect({ s, got: parseCidr(s) }).toEqual({ s, got: null });
  });

  test("an IPv4-mapped network of /96 or longer matches the IPv4 users it names", () => {
    expect(parseCidr("::ffff:127.0.0.3")).toEqual({ bytes: Uint8Array.of(127, 0, 0, 3), bits: 32 });
    expect(parseCidr("::ffff:10.0.0.0/104")).toEqual({ bytes: Uint8Array.of(10, 0, 0, 0), bits: 8 });
    const list = new AccessList([], ["::ffff:127.0.0.3"]);
    expect(list.allows("127.0.0.3")).toBe(false);
    expect(list.allows("::ffff:127.0.0.3")).toBe(false);
    expect(list.allows("127.0.0.4")).toBe(true);
  });
});

describe("guard", () => {
  test("AccessList: deny wins, allow narrows, families apart, garbage refused", () => {
    const l = new AccessList(["10.0.0.0/8", "2001:db8::/32"], ["10.9.0.0/16"]);
    expect(l.allows("10.1.2.3")).toBe(true);
    expect(l.allows("::ffff:10.1.2.3")).toBe(true);
    expect(l.allows("10.9.2.3")).toBe(false);
    expect(l.allows("11.0.0.1")).toBe(false);
    expect(l.allows("2001:db8:ffff::1")).toBe(true);
    expect(l.allows("2001:db9::1")).toBe(false);
    expect(l.allows("not an address")).toBe(false);
    expect(new AccessList().allows("anything")).toBe(true);
  });

  test("sourceKey: IPv4 as is, IPv6 by its /64 (as it was keyed with ipaddr.js)", () => {
    expect(sourceKey("2001:db8:1:2:aaaa::1")).toBe("2001:db8:1:2::/64");
    expect(sourceKey("2001:0db8:0000:0002::1")).toBe("2001:db8:0:2::/64");
    expect(sourceKey("::ffff:192.0.2.7")).toBe("192.0.2.7");
    expect(sourceKey("not an address")).toBe("not an address");
  });
});
