/**
 * lib/files.ts: Warren's few files without node:fs. Modes are checked under an
 * explicit umask of 022, so a runner with a stricter one cannot hide a file
 * that was not made private; and the process's umask must be as it was after
 * every write, failed or not, even when writes overlap.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { privately, readText, tighten, writeNew } from "../lib/files.ts";

const tmp = mkdtempSync(join(tmpdir(), "warren-files-"));
const mode = (p: string) => (statSync(p).mode & 0o777).toString(8);
let saved = 0;

beforeAll(() => {
  saved = process.umask(0o022);
});
afterAll(() => {
  process.umask(saved);
  rmSync(tmp, { recursive: true, force: true });
});

describe("files", () => {
  test("writeNew private: the file 0600 in new folders 0700; otherwise the umask's 0644 and 0755; the umask is unchanged", async () => {
    await writeNew(join(tmp, "a", "b", "secret"), "s3cret\n", { private: true });
    expect([mode(join(tmp, "a")), mode(join(tmp, "a", "b")), mode(join(tmp, "a", "b", "secret"))]).toEqual(["700", "700", "600"]);
    await writeNew(join(tmp, "c", "public"), "hello\n", { private: false });
    expect([mode(join(tmp, "c")), mode(join(tmp, "c", "public"))]).toEqual(["755", "644"]);
    expect(process.umask()).toBe(0o022);
    expect(await readText(join(tmp, "a", "b", "secret"))).toBe("s3cret\n");
    expect(await readText(join(tmp, "missing"))).toBeNull();
  });

  test("overlapping writes each get their own mode, and the umask is restored after all of them", async () => {
    const writes = Array.from({ length: 20 }, (_, i) => writeNew(join(tmp, "many", `f${i}`), "x".repeat(10_000 * i), { private: i % 2 === 0 }));
    await Promise.all(writes);
    for (let i = 0; i < 20; i++) expect(`${i} ${mode(join(tmp, "many", `f${i}`))}`).toBe(`${i} ${i % 2 === 0 ? "600" : "644"}`);
    expect(process.umask()).toBe(0o022);
  });

  test("a write that fails rejects, leaves the umask as it was, and the next write still works", async () => {
    writeFileSync(join(tmp, "plain"), "a file, not a folder");
    await expect(writeNew(join(tmp, "plain", "under"), "x", { private: true })).rejects.toThrow();
    expect(process.umask()).toBe(0o022);
    await writeNew(join(tmp, "after"), "ok", { private: true });
    expect(mode(join(tmp, "after"))).toBe("600");
  });

  test("tighten makes a file others can read 0600 and says so; a private file is left alone", async () => {
    const f = join(tmp, "loose");
    writeFileSync(f, "tokens");
    chmodSync(f, 0o644);
    expect(await tighten(f)).toBe(true);
    expect(mode(f)).toBe("600");
    expect(await tighten(f)).toBe(false);
  });

  test("privately: files created inside are 0600, and the umask is back afterwards, also after a throw", () => {
    privately(() => writeFileSync(join(tmp, "inside"), "x"));
    expect(mode(join(tmp, "inside"))).toBe("600");
    expect(() =>
      privately(() => {
        throw new Error("boom");
      }),
    ).toThrow("boom");
    expect(process.umask()).toBe(0o022);
  });
});
