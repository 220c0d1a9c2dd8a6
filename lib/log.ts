/** Leveled logging to stderr; callers pass fields, never secrets. */

/** Log levels, least to most severe. */
export type LogLevel = "debug" | "info" | "warn" | "error";
const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

let threshold = RANK[(process.env.WARREN_LOG as LogLevel) ?? "info"] ?? RANK.info;
// console.error, not process.stderr.write: the first use of process.stderr builds a Node stream that keeps
// about 650 KiB of code on the heap, which every garbage collection of a relaying process then pays for (lib/files.ts).
// With a single argument, console.error prints the line as it is (no % formatting).
let sink: (line: string) => void = (line) => console.error(line);

/** Sets the lowest level that is printed. */
export function setLogLevel(level: LogLevel): void {
  threshold = RANK[level];
}

/** Redirects log lines (tests capture them to check that no secret leaks); a new sink starts with fresh bursts. */
export function setLogSink(fn: (line: string) => void): void {
  sink = fn;
  bursts.clear();
}

function fmt(fields: Record<string, unknown>): string {
  let out = "";
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    const s = String(v);
    out += ` ${k}=${/[\s"=]/.test(s) ? JSON.stringify(s) : s}`;
  }
  return out;
}

/** Lines of one warning or error message printed per window; the rest are counted and reported when it ends. */
export const LOG_BURST = 20;
/** The window of LOG_BURST: a flood of bad connections (each one a warning) must not flood the log or the disk behind it. */
export const LOG_WINDOW_MS = 10_000;
/** Bursts (message, group and app) tracked at once; beyond it, a message's lines share one burst whatever their app. */
const MAX_TRACKED_MESSAGES = 1_000;
/** The rate limit in force: LOG_BURST per LOG_WINDOW_MS, lowered only by tests. */
export const logRate = { burst: LOG_BURST, windowMs: LOG_WINDOW_MS };

interface Burst {
  start: number;
  printed: number;
  suppressed: number;
}
const bursts = new Map<string, Burst>();

function line(level: LogLevel, text: string): string {
  return `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${text}`;
}

/** Forgets bursts whose window has ended with nothing held back (those with a pending report go when it is sent). */
function forgetEnded(now: number): void {
  for (const [key, b] of bursts) if (b.suppressed === 0 && now - b.start >= logRate.windowMs) bursts.delete(key);
}

/**
 * Whether a warning or error may be printed now; counts it when it may not, and reports the count once its window ends.
 * A message that names an app has a burst per group and app, so that one app's flood does not hide another's
 * diagnostics. Only those: app names come from the registry, while the group of a failed login is whatever a
 * stranger sent, and a spray of made-up names must not earn a burst each.
 */
function admit(level: LogLevel, msg: string, fields: Record<string, unknown>): boolean {
  const now = performance.now();
  let scope = fields.app === undefined ? "" : fmt({ group: fields.group, app: fields.app });
  let key = `${level} ${msg}${scope}`;
  let b = bursts.get(key);
  if (!b && bursts.size >= MAX_TRACKED_MESSAGES) {
    forgetEnded(now);
    if (bursts.size >= MAX_TRACKED_MESSAGES) {
      // Still full: this line joins its message's shared burst (messages are constant strings, so these are few).
      scope = "";
      key = `${level} ${msg}`;
      b = bursts.get(key);
    }
  }
  if (!b || now - b.start >= logRate.windowMs) {
    b = { start: now, printed: 0, suppressed: 0 };
    bursts.set(key, b);
  }
  if (b.printed < logRate.burst) {
    b.printed++;
    return true;
  }
  if (b.suppressed++ === 0) {
    const burst = b;
    const to = sink; // the report goes where the lines it counts would have gone
    // Unref'd: a pending report never keeps a stopping process alive.
    setTimeout(() => {
      to(line(level, `${burst.suppressed} more "${msg}" lines${scope ? ` for${scope}` : ""} in ${logRate.windowMs / 1000} s were not printed`));
      if (bursts.get(key) === burst) bursts.delete(key);
    }, burst.start + logRate.windowMs - now).unref();
  }
  return false;
}

function emit(level: LogLevel, msg: string, fields: Record<string, unknown>): void {
  if (RANK[level] < threshold) return;
  if (RANK[level] >= RANK.warn && !admit(level, msg, fields)) return;
  sink(line(level, `${msg}${fmt(fields)}`));
}

/** The logger: `log.info("message", { group, app })`. */
export const log = {
  debug: (msg: string, fields: Record<string, unknown> = {}) => emit("debug", msg, fields),
  info: (msg: string, fields: Record<string, unknown> = {}) => emit("info", msg, fields),
  warn: (msg: string, fields: Record<string, unknown> = {}) => emit("warn", msg, fields),
  error: (msg: string, fields: Record<string, unknown> = {}) => emit("error", msg, fields),
};
