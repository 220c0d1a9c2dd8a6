/** The logger's rate limit: a flood of one warning prints LOG_BURST lines per window and one count. */
import { afterEach, beforeEach, expect, test } from "bun:test";
import { log, LOG_BURST, LOG_WINDOW_MS, logRate, setLogLevel, setLogSink } from "../lib/log.ts";

let lines: string[] = [];
let waiters: { match: RegExp; resolve: (line: string) => void }[] = [];

beforeEach(() => {
  lines = [];
  waiters = [];
  setLogLevel("info");
  setLogSink((l) => {
    lines.push(l);
    for (const w of waiters.filter((w) => w.match.test(l))) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(l);
    }
  });
});

afterEach(() => {
  logRate.burst = LOG_BURST;
  logRate.windowMs = LOG_WINDOW_MS;
  setLogLevel("warn");
  setLogSink((l) => process.stderr.write(l + "\n"));
});

/** Resolves with the next log line that matches. */
function next(match: RegExp): Promise<string> {
  return new Promise((resolve) => waiters.push({ match, resolve }));
}

test("the defaults: 20 lines of one message per 10 s", () => {
  expect(LOG_BURST).toBe(20);
  expect(LOG_WINDOW_MS).toBe(10_000);
});

test("a flood of one warning prints the first LOG_BURST lines, then how many were not printed once the window ends", async () => {
  logRate.windowMs = 200; // the default, 10 s, is too long for a unit test
  const report = next(/more "login failed" lines/);
  for (let i = 0; i < 1000; i++) log.warn("login failed", { from: `127.0.0.${i % 250}` });
  expect(lines.length).toBe(LOG_BURST);
  expect(lines.every((l) => l.includes("WARN  login failed from=127.0.0."))).toBe(true);
  expect(await report).toContain(`${1000 - LOG_BURST} more "login failed" lines in 0.2 s were not printed`);
  // A new window: printed again.
  log.warn("login failed", { from: "127.0.0.1" });
  expect(lines.at(-1)).toContain("login failed from=127.0.0.1");
});

test("each message has its own burst and report; info lines are never limited", async () => {
  logRate.windowMs = 100;
  const reports = Promise.all([next(/more "bad datagram frame from client" lines/), next(/more "relay failed" lines/)]);
  for (let i = 0; i < 50; i++) {
    log.warn("bad datagram frame from client");
    log.error("relay failed");
    log.info("app online", { app: `a${i}` });
  }
  expect(lines.filter((l) => l.includes("bad datagram frame")).length).toBe(LOG_BURST);
  expect(lines.filter((l) => l.includes("ERROR relay failed")).length).toBe(LOG_BURST);
  expect(lines.filter((l) => l.includes("app online")).length).toBe(50);
  const [warn, error] = await reports;
  expect(warn).toContain(`WARN  ${50 - LOG_BURST} more`);
  expect(error).toContain(`ERROR ${50 - LOG_BURST} more`);
});

test("bursts are per group and app too: one app's flood does not hide another app's lines, and its report names it", async () => {
  logRate.windowMs = 100;
  const report = next(/more "app cannot be served" lines for group=g app=noisy/);
  for (let i = 0; i < 40; i++) log.warn("app cannot be served", { group: "g", app: "noisy", reason: `port ${i}` });
  log.warn("app cannot be served", { group: "g", app: "quiet", reason: "port 1" });
  expect(lines.filter((l) => l.includes("app=noisy")).length).toBe(LOG_BURST);
  expect(lines.at(-1)).toContain("app=quiet");
  expect(await report).toContain(`${40 - LOG_BURST} more "app cannot be served" lines for group=g app=noisy in 0.1 s were not printed`);
});

test("a spray of made-up group names in failed logins shares one burst; a spray of app names falls back to one once MAX_TRACKED_MESSAGES are tracked", () => {
  for (let i = 0; i < 2000; i++) log.warn("login failed", { group: `guess-${i}`, from: "192.0.2.1:1", reason: "unknown group" });
  expect(lines.filter((l) => l.includes("login failed")).length).toBe(LOG_BURST);
  // App names come from the registry, but even many of them cannot grow the tracking without bound.
  for (let i = 0; i < 3000; i++) log.warn("app cannot be served", { group: "g", app: `a${i}` });
  const printed = lines.filter((l) => l.includes("app cannot be served")).length;
  // One line for each of the first apps tracked (the login burst holds one place), then the shared burst's.
  expect(printed).toBe(1000 - 1 + LOG_BURST);
});

test("a message that stays under the burst is printed in full and leaves no report", async () => {
  logRate.windowMs = 50;
  for (let i = 0; i < LOG_BURST; i++) log.warn("heartbeat timeout; dropping session", { n: i });
  expect(lines.length).toBe(LOG_BURST);
  // Nothing was held back, so nothing is reported when the window ends: wait past it to show that.
  await new Promise((r) => setTimeout(r, 120));
  expect(lines.length).toBe(LOG_BURST);
});
