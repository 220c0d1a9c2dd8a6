/** Small byte helpers shared by the relay and the HTTP proxy. */

/** `a` then `b` in one new buffer. */
export function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
