/**
 * The server's and the client's processes load neither node:fs nor process.stderr/stdout:
 * each keeps about 650 KiB of code on the JavaScript heap, and every garbage collection
 * of a relaying process pays for a larger heap (lib/files.ts). This walks the static
 * imports from server.ts and client.ts; a dynamic import() (lib/files.ts's rare chmod,
 * the certificate library) is allowed.
 */
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

const ROOT = join(import.meta.dir, "..");
const FORBIDDEN = /^(node:)?fs(\/promises)?$/;

/** Every module reachable by static imports from `entry`, with the specifiers each one names. */
function graph(entry: string): Map<string, string[]> {
  const seen = new Map<string, string[]>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    const src = readFileSync(file, "utf8");
    // `import ... from "x"` and `export ... from "x"`, but not `import type`.
    const specs = [...src.matchAll(/^\s*(?:import|export)\s+(?!type\b)[^;]*?\bfrom\s+"([^"]+)"/gm)].map((m) => m[1]!);
    specs.push(...[...src.matchAll(/^\s*import\s+"([^"]+)"/gm)].map((m) => m[1]!));
    seen.set(file, specs);
    for (const s of specs) if (s.startsWith(".")) visit(resolve(dirname(file), s));
  };
  visit(join(ROOT, entry));
  return seen;
}

for (const entry of ["server.ts", "client.ts"]) {
  test(`${entry}: no node:fs in its static imports, and no process.stderr or process.stdout`, () => {
    const modules = graph(entry);
    expect(modules.size).toBeGreaterThan(5);
    const offending: string[] = [];
    for (const [file, specs] of modules) {
      const name = file.slice(ROOT.length + 1);
      for (const s of specs) if (FORBIDDEN.test(s)) offending.push(`${name} imports ${s}`);
      const code = readFileSync(file, "utf8").replace(/\/\/.*$|\/\*[\s\S]*?\*\//gm, "");
      if (/process\.std(err|out)\b/.test(code)) offending.push(`${name} uses process.stderr/stdout`);
    }
    expect(offending).toEqual([]);
  });
}
