/** Secrets: generating tokens, and comparing secrets in constant time. */
import { randomBytes } from "../protocol.ts";

/** Random bytes of a generated token (group or admin): 192 bits, 32 base64url characters. */
const GENERATED_TOKEN_BYTES = 24;

/** A new random token, for a group created or changed without one and for a generated admin token. */
export function generateToken(): string {
  return Buffer.from(randomBytes(GENERATED_TOKEN_BYTES)).toString("base64url");
}

/**
 * Whether two byte strings are equal, in a time that does not depend on where they differ (proofs, tokens).
 * Written here rather than taken from node:crypto, which costs every process 6 MiB of memory.
 */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** Whether a secret given by a caller is `expected` (never true when none is set), in constant time. */
export function sameSecret(given: string, expected: string | undefined): boolean {
  if (!expected) return false;
  return constantTimeEqual(Buffer.from(given), Buffer.from(expected));
}
