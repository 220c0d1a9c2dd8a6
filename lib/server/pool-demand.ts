/**
 * How many idle work connections a session keeps: a quiet group QUIET_POOL, a
 * busy one up to poolSize (issue 21: 8 idle connections per group whether or
 * not anyone used them capped a server at about 1,400 groups on 20,000
 * descriptors), and every group together within a share of the process's
 * descriptors (the idle-work budget).
 */
import { sockets } from "../net/sockets.ts";

/**
 * Idle work connections a group with no recent users keeps warm: its next user is
 * served at once, and 5,000 quiet groups hold 5,000 of them, not 40,000.
 */
export const QUIET_POOL = 1;
/**
 * Stream starts are counted in windows this long; a session's target follows the busier of
 * the current and the last window, so it falls back to QUIET_POOL 10-20 s after the last
 * user (the idle ones above it then close once unused for IDLE_WORK_TIMEOUT_MS).
 */
export const POOL_WINDOW_MS = 10_000;
/**
 * Share of the descriptors that busy sockets and app listeners leave free which the idle work
 * connections of all groups together may hold (pooled and asked for): the rest stays for users
 * and their streams. Two thirds: under a 20,000 file limit, 5,000 quiet groups of one app hold
 * 10,000 busy descriptors (listener and control each) and keep their 5,000 warm connections,
 * with 4,900 left for users. A group's own users are served beyond it (each waiting user asks for one).
 */
export const IDLE_WORK_SHARE = 2 / 3;

/**
 * Idle work connections of every session in this process: pooled, and asked for but not yet
 * arrived. Process-wide on purpose, like `sockets`: descriptors are a resource of the process.
 * `limit` is a fixed ceiling under the share, held here so a test can lower it (as it lowers
 * `sockets.max`) instead of opening thousands of sockets; not a config key.
 */
export const idleWork = { pooled: 0, requested: 0, limit: Infinity };

/** Listeners and UDP sockets of the apps served in this process: descriptors that `sockets.open` does not count. */
export const appSockets = { open: 0 };

/** How many more idle work connections the process may ask for or keep now (negative: over its budget). */
export function idleWorkRoom(): number {
  const busy = sockets.open + appSockets.open - idleWork.pooled;
  const budget = Math.min(idleWork.limit, Math.floor((sockets.max - busy) * IDLE_WORK_SHARE));
  return budget - idleWork.pooled - idleWork.requested;
}

/** One session's stream starts, by window: how many idle work connections its load needs. */
export class PoolDemand {
  #windowStart: number;
  #starts = 0;
  #lastStarts = 0;

  constructor(now = performance.now()) {
    this.#windowStart = now;
  }

  /** A user's stream is starting. */
  started(now: number): void {
    this.#roll(now);
    this.#starts++;
  }

  /**
   * Idle connections to keep: the most stream starts of the current or the last window, at
   * least QUIET_POOL, at most poolSize. Starts, not streams open: a long-lived stream needs
   * no spare once it has begun, and a burst of N users wants N warm connections.
   */
  target(poolSize: number, now: number): number {
    this.#roll(now);
    return Math.min(poolSize, Math.max(QUIET_POOL, this.#starts, this.#lastStarts));
  }

  #roll(now: number): void {
    const age = now - this.#windowStart;
    if (age < POOL_WINDOW_MS) return;
    this.#lastStarts = age < 2 * POOL_WINDOW_MS ? this.#starts : 0;
    this.#starts = 0;
    this.#windowStart = now;
  }
}
