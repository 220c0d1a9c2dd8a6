/**
 * Loading a config: the command line, reading and parsing TOML, validating against a
 * schema, and errors that name the file and the key (exit code EXIT_CONFIG).
 */
import * as v from "valibot";
import { WarrenError } from "../errors.ts";

/**
 * The command line of both executables: `--config FILE` (`-c FILE`, `--config=FILE`),
 * `--verify` (check the config and exit), `--help` (`-h`) and `--version` (`-V`). Throws on anything else. Hand-written rather than node:util's
 * parseArgs, which adds about 136 KiB to a heap the garbage collector scans on every
 * full collection for as long as the process relays (bench/optimisations.md).
 */
export function parseFlags(argv: readonly string[], commands: readonly string[] = []): { config?: string; help: boolean; version?: true; verify?: true; json?: true; command?: string } {
  const out: { config?: string; help: boolean; version?: true; verify?: true; json?: true; command?: string } = { help: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "-h" || arg === "--help") out.help = true;
    else if (arg === "-V" || arg === "--version") out.version = true;
    else if (arg === "--verify") out.verify = true;
    else if (arg === "--json" && commands.length) out.json = true;
    else if (i === 0 && commands.includes(arg)) out.command = arg;
    else if (arg === "-c" || arg === "--config") {
      const value = argv[++i];
      if (value === undefined || value.startsWith("-")) throw new Error(`option '${arg} FILE' needs a value`);
      out.config = value;
    } else if (arg.startsWith("--config=")) {
      out.config = arg.slice("--config=".length);
      if (!out.config) throw new Error("option '--config FILE' needs a value");
    } else if (arg.startsWith("-")) throw new Error(`unknown option '${arg}'`);
    else throw new Error(`unexpected argument '${arg}'`);
  }
  return out;
}

/** A config problem that names the file and the key (exit code EXIT_CONFIG). */
export class ConfigError extends WarrenError<"config"> {
  constructor(
    readonly file: string,
    readonly key: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super("config", key ? `${file}: ${key}: ${detail}` : `${file}: ${detail}`, key, options);
    this.name = "ConfigError";
  }
}

/** Formats a valibot issue path as a TOML key: `groups[0].apps[1].remotePort`. */
export function issueKey(issue: v.BaseIssue<unknown>): string {
  let key = "";
  for (const item of issue.path ?? []) {
    const k = (item as { key: unknown }).key;
    key += typeof k === "number" ? `[${k}]` : key ? `.${String(k)}` : String(k);
  }
  return key;
}

function describe(schema: v.GenericSchema, issue: v.BaseIssue<unknown>): string {
  // strictObject reports an unknown key as "expected never".
  if (issue.expected === "never") {
    const near = nearestKey(schema, issue);
    return near ? `unknown key (did you mean "${near}"?)` : "unknown key";
  }
  if (issue.received === "undefined") return "is required";
  return issue.message;
}

/** A schema with its wrappers (optional, pipe) taken off. */
type Node = { type?: string; wrapped?: Node; pipe?: Node[]; entries?: Record<string, Node>; item?: Node };

/** The known key closest to an unknown one (at most 2 edits, or one a prefix of the other), at the same level of the schema. */
function nearestKey(schema: v.GenericSchema, issue: v.BaseIssue<unknown>): string | null {
  const path = issue.path ?? [];
  const unwrap = (n: Node | undefined): Node | undefined => {
    while (n && (n.wrapped || (n.pipe && n.pipe[0] !== n))) n = n.wrapped ?? n.pipe![0];
    return n;
  };
  let node = unwrap(schema as Node);
  for (const item of path.slice(0, -1)) {
    const key = (item as { key: unknown }).key;
    node = unwrap(typeof key === "number" ? node?.item : node?.entries?.[String(key)]);
  }
  const wrong = String((path.at(-1) as { key: unknown } | undefined)?.key ?? "").toLowerCase();
  let best: string | null = null;
  let bestCost = 3;
  for (const known of Object.keys(node?.entries ?? {})) {
    const k = known.toLowerCase();
    const cost = wrong.length >= 4 && (k.startsWith(wrong) || wrong.startsWith(k)) ? 1 : editDistance(k, wrong);
    if (cost < bestCost) [best, bestCost] = [known, cost];
  }
  return best;
}

/** Levenshtein distance of two short strings. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/** Validates an already-parsed object against a schema; throws ConfigError naming the first bad key. */
export function validate<S extends v.GenericSchema>(schema: S, data: unknown, file: string): v.InferOutput<S> {
  const res = v.safeParse(schema, data);
  if (res.success) return res.output;
  const issue = res.issues[0];
  throw new ConfigError(file, issueKey(issue), describe(schema, issue));
}

/** Reads and validates a TOML file. */
export async function loadToml<S extends v.GenericSchema>(schema: S, file: string): Promise<v.InferOutput<S>> {
  let text: string;
  try {
    text = await Bun.file(file).text();
  } catch (err) {
    throw new ConfigError(file, "", `cannot read the file (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  let data: unknown;
  try {
    data = Bun.TOML.parse(text);
  } catch (err) {
    const detail = (err as Error).message.replace(/^TOML Parse error: /, "");
    const at = locateTomlError(text);
    if (!at) throw new ConfigError(file, "", `invalid TOML: ${detail}`);
    throw new ConfigError(file, at.key, `invalid TOML on line ${at.line}: ${detail}`);
  }
  return validate(schema, data, file);
}

/**
 * Finds the line and key of a TOML syntax error, which Bun reports without a
 * position: the error sits in the statement right after the longest prefix
 * of lines that parses. Keys are named like validation errors (`groups[1].token`).
 */
function locateTomlError(text: string): { line: number; key: string } | null {
  const lines = text.split(/\r?\n/);
  if (lines.length > 10_000) return null; // each probe parses a prefix: keep the worst case small
  let good = lines.length - 1;
  for (; good > 0; good--) {
    try {
      Bun.TOML.parse(lines.slice(0, good).join("\n"));
      break;
    } catch {
      // this prefix holds the error too
    }
  }
  const index = new Map<string, number>(); // [[array.table]] path -> index of its latest entry
  const tablePath = (raw: string) => {
    const segs = raw.split(".").map((s) => s.trim());
    return segs
      .map((s, i) => {
        const n = index.get(segs.slice(0, i + 1).join("."));
        return n === undefined ? s : `${s}[${n}]`;
      })
      .join(".");
  };
  let table = "";
  for (let i = 0; i <= good; i++) {
    const header = /^\s*(\[\[?)\s*([^[\]]+?)\s*\]/.exec(lines[i]!);
    if (header) {
      const raw = header[2]!;
      if (header[1] === "[[") {
        index.set(raw, (index.get(raw) ?? -1) + 1);
        for (const k of index.keys()) if (k.startsWith(raw + ".")) index.delete(k);
      }
      table = tablePath(raw);
    }
    if (i === good) {
      const key = header ? "" : /^\s*([^=#\s][^=#]*?)\s*=/.exec(lines[i]!)?.[1];
      return { line: i + 1, key: key ? (table ? `${table}.${key}` : key) : table };
    }
  }
  return null;
}

