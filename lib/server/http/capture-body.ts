/**
 * Where the inspector keeps captured bodies: copied, as they pass, into
 * fixed-size blocks that a server-wide pool hands out and takes back when a
 * capture leaves its ring.
 *
 * Why blocks, measured with bench/inspect.ts at 64 KiB bodies: keeping each
 * part in fresh memory (a copy, or a view that pins the relay's read) cost
 * 17-22 % of the requests per second, and most of it was not the copying: a
 * full ring pins 200 x 128 KiB, so every new read of the relay lands in cold
 * memory the allocator had to find (and the kernel to fault in). With a ring
 * of 8 the same capture cost 6 %. Blocks are reused, so the relay's reads go
 * back to the allocator at once and a capture writes into memory that is
 * already there.
 */

/** Bytes per block: a 64 KiB body takes 16; a 100-byte body wastes at most one block's rest. */
export const CAPTURE_BLOCK_BYTES = 4096;
/** Blocks carved from one allocation. */
const SLAB_BLOCKS = 64;
/** Free blocks the pool keeps for reuse (16 MiB); more are left to the garbage collector. */
export const CAPTURE_FREE_BLOCKS_MAX = 4096;

/** Blocks for captured bodies, reused (one per server: every inspector shares it). */
export class BlockPool {
  readonly #free: Uint8Array[] = [];

  constructor(readonly maxFree = CAPTURE_FREE_BLOCKS_MAX) {}

  /** Free blocks held now. */
  get free(): number {
    return this.#free.length;
  }

  take(): Uint8Array {
    const b = this.#free.pop();
    if (b) return b;
    // A slab at a time: one allocation for SLAB_BLOCKS blocks; the rest wait in the free list.
    const slab = new Uint8Array(CAPTURE_BLOCK_BYTES * SLAB_BLOCKS);
    for (let i = SLAB_BLOCKS - 1; i > 0; i--) this.give(slab.subarray(i * CAPTURE_BLOCK_BYTES, (i + 1) * CAPTURE_BLOCK_BYTES));
    return slab.subarray(0, CAPTURE_BLOCK_BYTES);
  }

  give(block: Uint8Array): void {
    if (this.#free.length < this.maxFree) this.#free.push(block);
  }
}

/** The first `limit` bytes of a body's payload as it passes (chunk framing left out, so a replay can send it with a length), and its whole size. */
export class BodyTap {
  #blocks: Uint8Array[] = [];
  /** Bytes used in the last block. */
  #fill = CAPTURE_BLOCK_BYTES;
  #kept = 0;
  #released = false;
  size = 0;

  constructor(
    private readonly limit: number,
    private readonly pool: BlockPool,
    /** Told of the memory taken (a block at a time). */
    private readonly grow: (n: number) => void,
  ) {}

  get truncated(): boolean {
    return this.size > this.#kept;
  }

  get kept(): number {
    return this.#kept;
  }

  /** Memory held for the kept bytes: whole blocks. What the metrics and the ring's release count. */
  get held(): number {
    return this.#blocks.length * CAPTURE_BLOCK_BYTES;
  }

  /** Counts `chunk` and copies what fits (the relay's buffers are never retained). */
  add(chunk: Uint8Array): void {
    this.size += chunk.length;
    if (this.#released) return;
    let off = 0;
    let want = Math.min(chunk.length, this.limit - this.#kept);
    while (want > 0) {
      if (this.#fill === CAPTURE_BLOCK_BYTES) {
        this.#blocks.push(this.pool.take());
        this.#fill = 0;
        this.grow(CAPTURE_BLOCK_BYTES);
      }
      const n = Math.min(want, CAPTURE_BLOCK_BYTES - this.#fill);
      this.#blocks[this.#blocks.length - 1]!.set(chunk.subarray(off, off + n), this.#fill);
      this.#fill += n;
      this.#kept += n;
      off += n;
      want -= n;
    }
  }

  /** The kept bytes, in one new buffer of their own (readers get a copy: the blocks are reused once released). */
  bytes(): Uint8Array {
    const out = new Uint8Array(this.#kept);
    let off = 0;
    for (const b of this.#blocks) {
      const n = Math.min(CAPTURE_BLOCK_BYTES, this.#kept - off);
      out.set(n === CAPTURE_BLOCK_BYTES ? b : b.subarray(0, n), off);
      off += n;
    }
    return out;
  }

  /** Gives the blocks back (the capture left its ring); from now on bytes are counted, not kept. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    for (const b of this.#blocks) this.pool.give(b);
    this.#blocks = [];
    this.#fill = CAPTURE_BLOCK_BYTES;
    this.#kept = 0;
  }
}
