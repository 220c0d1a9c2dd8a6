/**
 * The few pieces of DER (ITU-T X.690) and PEM that a self-signed certificate needs:
 * enough to write one, and to read the DER back out of PEM for its fingerprint.
 * Kept here rather than in a certificate library, which cost a TLS server about
 * 12 MiB of memory for three uses (bench/optimisations.md, issue 21).
 */

/** Universal and context-specific tags used by X.509. */
export const TAG = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  oid: 0x06,
  utf8String: 0x0c,
  utcTime: 0x17,
  generalizedTime: 0x18,
  sequence: 0x30,
  set: 0x31,
} as const;

/** A tag-length-value of `tag` around the concatenated `parts`. */
export function tlv(tag: number, ...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const length = parts.reduce((n, p) => n + p.length, 0);
  const head = length < 0x80 ? [tag, length] : [tag, 0x80 | lengthBytes(length).length, ...lengthBytes(length)];
  const out = new Uint8Array(head.length + length);
  out.set(head);
  let at = head.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Big-endian bytes of a length of 128 or more (the long form). */
function lengthBytes(n: number): number[] {
  const out: number[] = [];
  for (; n > 0; n = Math.floor(n / 256)) out.unshift(n & 0xff);
  return out;
}

/** SEQUENCE of the parts. */
export const seq = (...parts: Uint8Array[]) => tlv(TAG.sequence, ...parts);

/** An INTEGER from unsigned big-endian bytes: leading zeros dropped, one 0x00 kept in front of a set top bit (DER's minimal form). */
export function uint(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const body = bytes.subarray(i);
  return body[0]! & 0x80 ? tlv(TAG.integer, Uint8Array.of(0), body) : tlv(TAG.integer, body);
}

/** An OBJECT IDENTIFIER from its dotted form ("1.2.840.10045.4.3.2"). */
export function oid(dotted: string): Uint8Array<ArrayBuffer> {
  const arcs = dotted.split(".").map(Number);
  const out = [40 * arcs[0]! + arcs[1]!];
  for (const arc of arcs.slice(2)) {
    const base128 = [arc & 0x7f];
    for (let n = Math.floor(arc / 128); n > 0; n = Math.floor(n / 128)) base128.unshift(0x80 | (n & 0x7f));
    out.push(...base128);
  }
  return tlv(TAG.oid, Uint8Array.from(out));
}

/** A time as X.509 wants it (RFC 5280 4.1.2.5): UTCTime through 2049, GeneralizedTime from 2050, to the second, in UTC. */
export function time(d: Date): Uint8Array<ArrayBuffer> {
  const iso = d.toISOString(); // 2026-12-05T11:22:01.123Z
  const digits = iso.slice(0, 19).replace(/[-T:]/g, "") + "Z"; // 20261205112201Z
  const year = d.getUTCFullYear();
  return year < 2050 ? tlv(TAG.utcTime, ascii(digits.slice(2))) : tlv(TAG.generalizedTime, ascii(digits));
}

/** Bytes of an ASCII text. */
export const ascii = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

/** A PEM block of `label` around DER bytes, in lines of 64 characters (RFC 7468). */
export function toPem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString("base64");
  return `-----BEGIN ${label}-----\n${b64.replace(/.{1,64}/g, "$&\n")}-----END ${label}-----\n`;
}

/** The DER bytes of the first PEM block of `label` in a text; null when there is none. */
export function fromPem(text: string, label: string): Uint8Array<ArrayBuffer> | null {
  const m = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`).exec(text);
  if (!m) return null;
  const der = Buffer.from(m[1]!.replace(/\s+/g, ""), "base64");
  return der.length ? new Uint8Array(der) : null;
}
