/**
 * Memory back after load: one full garbage collection once a busy process has
 * gone quiet. JavaScriptCore collects by allocation, so a relay that stops
 * allocating keeps what its last busy seconds left behind (buffers of dead
 * sockets, their wrappers) until something allocates again; an idle server or
 * client then sits 10-20 MiB above its idle size for hours (bench/optimisations.md,
 * issue 21). Quiet is judged by the process's own CPU time, so nothing on the
 * data path needs to count for it.
 */

/** How often the process looks at its CPU time. */
export const QUIET_CHECK_MS = 2_000;
/** Below this share of one core over a check, the process is quiet (heartbeats and timers stay far under it). */
export const QUIET_CPU_SHARE = 0.02;
/** A busy spell must have used at least this much CPU to be worth a collection afterwards (ms). */
const BUSY_CPU_MS = 200;

/** Starts watching; the timer does not keep the process alive. Returns a function that stops it. */
export function collectWhenQuiet(collect: () => void = collectAll): () => void {
  let last = cpuMs();
  let busyMs = 0;
  const timer = setInterval(function checkQuiet() {
    const now = cpuMs();
    const used = now - last;
    last = now;
    if (used > QUIET_CHECK_MS * QUIET_CPU_SHARE) {
      busyMs += used;
      return;
    }
    if (busyMs < BUSY_CPU_MS) return;
    busyMs = 0;
    collect();
  }, QUIET_CHECK_MS);
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * A full collection, which also returns mimalloc's free pages. Not `Bun.shrink()` as well: it
 * gave 5 MiB more back on the server but dropped the JIT's code, and the next load paid for
 * compiling it again (tunnel CPU per connection 190 -> 277 us in bench/ab.ts, bench/optimisations.md).
 */
function collectAll(): void {
  Bun.gc(true);
}

/** CPU time (user + system) of this process so far, in ms. */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}
