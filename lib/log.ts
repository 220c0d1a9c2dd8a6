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

/** Redirects log lines (tests capture them to check that no secret leaks). */
export function setLogSink(fn: (line: string) => void): void {
  sink = fn;
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

function emit(level: LogLevel, msg: string, fields: Record<string, unknown>): void {
  if (RANK[level] < threshold) return;
  sink(`${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${msg}${fmt(fields)}`);
}

/** The logger: `log.info("message", { group, app })`. */
export const log = {
  debug: (msg: string, fields: Record<string, unknown> = {}) => emit("debug", msg, fields),
  info: (msg: string, fields: Record<string, unknown> = {}) => emit("info", msg, fields),
  warn: (msg: string, fields: Record<string, unknown> = {}) => emit("warn", msg, fields),
  error: (msg: string, fields: Record<string, unknown> = {}) => emit("error", msg, fields),
};
