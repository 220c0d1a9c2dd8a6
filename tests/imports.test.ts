/**
 * The server's and the client's processes load neither node:fs nor process.stderr/stdout:
 * each keeps about 650 KiB of code on the JavaScript heap, and every garbage collection
 * of a relaying process pays for a larger heap (lib/files.ts). This walks the static
 * imports from server.ts and client.ts; a dynamic import() (lib/files.ts's rare chmod,
 * the API on its first request) is allowed.
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

/**
 * What each process must not load at start (issue 21, bench/optimisations.md): the client none of the
 * server's weight, the server not its API until a request asks for it, and neither a certificate
 * library or a CommonJS address parser (both replaced by own code).
 */
const NOT_AT_START: Record<string, RegExp[]> = {
  "client.ts": [/^hono(\/|$)/, /^bun:sqlite$/, /^lib\/config\/schema\.ts$/, /^lib\/(api|dashboard|server|registry|cluster)\//, /^@peculiar\//, /^reflect-metadata$/, /^ipaddr\.js$/, /^(node:)?tls$/],
  "server.ts": [/^hono(\/|$)/, /^lib\/(api|dashboard)\//, /^@peculiar\//, /^reflect-metadata$/, /^ipaddr\.js$/],
};

for (const [entry, forbidden] of Object.entries(NOT_AT_START)) {
  test(`${entry}: loads none of ${forbidden.length} heavy or foreign modules at start`, () => {
    const loaded = new Set<string>();
    for (const [file, specs] of graph(entry)) {
      loaded.add(file.slice(ROOT.length + 1));
      for (const s of specs) if (!s.startsWith(".")) loaded.add(s);
    }
    expect(loaded.has("lib/config/defaults.ts")).toBe(true); // the walk reached the config
    expect([...loaded].filter((m) => forbidden.some((re) => re.test(m)))).toEqual([]);
  });
}
