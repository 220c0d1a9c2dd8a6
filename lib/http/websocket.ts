/**
 * Counts WebSocket frames (RFC 6455 §5.2) in a byte stream as it passes, for
 * the inspector: only the frame headers are read, to know where each frame
 * ends; payloads are skipped, never kept or unmasked. Pure and bounded: at
 * most 14 header bytes are held between chunks.
 */
export class WsFrames {
  /** Header bytes of the frame being read (2 to 14). */
  #head: number[] = [];
  /** Payload bytes of the current frame still to skip. */
  #skip = 0;

  /** Reads `chunk`; returns how many frames began in it. */
  feed(chunk: Uint8Array): number {
    let frames = 0;
    let i = 0;
    while (i < chunk.length) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, chunk.length - i);
        this.#skip -= n;
        i += n;
        continue;
      }
      this.#head.push(chunk[i++]!);
      const need = headerLength(this.#head);
      if (this.#head.length < need) continue;
      this.#skip = payloadLength(this.#head);
      this.#head = [];
      frames++;
    }
    return frames;
  }
}

/** Bytes of a frame header, from what has been read of it (at least the first two bytes decide it). */
function headerLength(h: number[]): number {
  if (h.length < 2) return 2;
  const len7 = h[1]! & 0x7f;
  const masked = (h[1]! & 0x80) !== 0;
  return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (masked ? 4 : 0);
}

/** The payload length a complete header names. */
function payloadLength(h: number[]): number {
  const len7 = h[1]! & 0x7f;
  if (len7 < 126) return len7;
  if (len7 === 126) return (h[2]! << 8) | h[3]!;
  // 64-bit length: beyond 2^53 cannot be a real frame; counting stays approximate rather than throwing.
  let n = 0;
  for (let k = 2; k < 10; k++) n = n * 256 + h[k]!;
  return n;
}
