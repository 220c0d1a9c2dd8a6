/** lib/quiet-gc.ts: one collection after a busy spell once the process goes quiet, none while idle. */
import { expect, test } from "bun:test";
import { collectWhenQuiet, QUIET_CHECK_MS } from "../lib/quiet-gc.ts";

/** Keeps this process's CPU busy for about `ms` of wall time (bounded). */
function burn(ms: number): void {
  const end = performance.now() + ms;
  let x = 0;
  for (let i = 0; i < 1e9 && performance.now() < end; i++) x += Math.sqrt(i);
  expect(x).toBeGreaterThan(0);
}

test("a busy spell then quiet gives one collection; staying quiet gives no more", async () => {
  let collections = 0;
  let collected!: () => void;
  const first = new Promise<void>((resolve) => (collected = resolve));
  const stop = collectWhenQuiet(() => {
    collections++;
    collected();
  });
  try {
    // Quiet from the start: nothing to give back, so no collection in the first checks.
    await Bun.sleep(QUIET_CHECK_MS * 1.5);
    expect(collections).toBe(0);
    burn(QUIET_CHECK_MS * 0.6);
    const timeout = Bun.sleep(QUIET_CHECK_MS * 4).then(() => "no collection within four checks of the load's end");
    expect(await Promise.race([first.then(() => "collected"), timeout])).toBe("collected");
    await Bun.sleep(QUIET_CHECK_MS * 2.5);
    expect(collections).toBe(1);
  } finally {
    stop();
  }
}, 30_000);
