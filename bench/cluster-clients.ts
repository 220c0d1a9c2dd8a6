/**
 * Many Warren clients in one process for the cluster benchmark
 * (bench/cluster.ts): one real Connector (lib/client/connector.ts) per group,
 * each with the cluster's `servers` list, as a client.toml would give it.
 *
 *   bun bench/cluster-clients.ts '{"servers":["127.0.0.11:7000","127.0.0.12:7000"],
 *     "prefix":"g","tokenPrefix":"t-","from":0,"count":200,
 *     "apps":[{"name":"echo","localAddr":"127.0.0.1:9000"}],
 *     "heartbeatInterval":0.5,"heartbeatTimeout":3,"events":true}'
 *
 * Group i is `${prefix}${i padded to 5 digits}` with token `${tokenPrefix}${i}`.
 * Prints (stdout):
 *   EVENT online GROUP SERVER EPOCH_MS     each login (with `events`)
 *   EVENT offline GROUP EPOCH_MS REASON    each loss (with `events`)
 *   PROGRESS {...}                          once a second
 *   ALL {...}                               once every group has been online once
 * With `origin`, it also serves a tiny HTTP app on 127.0.0.1:origin (the target of
 * the scale scenario's HTTP apps). Stops on SIGTERM or after `deadlineMs`.
 */
import { validate } from "../lib/config/load.ts";
import { ClientConfigSchema } from "../lib/config/schema.ts";
import { Connector } from "../lib/client/connector.ts";
import { setLogLevel } from "../lib/log.ts";

interface Opts {
  servers: string[];
  prefix: string;
  tokenPrefix: string;
  from: number;
  count: number;
  apps: { name: string; type?: string; localAddr: string }[];
  heartbeatInterval?: number;
  heartbeatTimeout?: number;
  events?: boolean;
  origin?: number;
  /** Connectors started per second (0: all at once). */
  startRate?: number;
  deadlineMs?: number;
}

const opts = JSON.parse(Bun.argv[2] ?? "{}") as Opts;
const print = console.log.bind(console);
// A Connector prints nothing itself, but keep stray console.log output out of the parsed lines.
console.log = () => {};
setLogLevel("warn");

if (opts.origin) {
  Bun.serve({ hostname: "127.0.0.1", port: opts.origin, fetch: (req) => new Response(`origin ${new URL(req.url).pathname} host ${req.headers.get("host")}\n`) });
}

export const groupName = (prefix: string, i: number) => `${prefix}${String(i).padStart(5, "0")}`;

/** The server a connector talks to now, as "host:port" (read loosely: the getter's shape has changed before). */
function serverOf(c: Connector): string {
  const s = (c as unknown as { server: unknown }).server;
  if (typeof s === "string") return s;
  if (s && typeof s === "object" && "host" in s && "port" in s) return `${(s as { host: string }).host}:${(s as { port: number }).port}`;
  return "?";
}

const connectors: Connector[] = [];
let online = 0;
let everOnline = 0;
let fatal = 0;
const t0 = performance.now();
let all = false;

function make(i: number): Connector {
  const group = groupName(opts.prefix, i);
  const config = validate(
    ClientConfigSchema,
    {
      servers: opts.servers,
      group,
      token: `${opts.tokenPrefix}${i}`,
      logLevel: "warn",
      heartbeatInterval: opts.heartbeatInterval ?? 10,
      heartbeatTimeout: opts.heartbeatTimeout ?? 30,
      apps: opts.apps,
    },
    "cluster-clients",
  );
  const c = new Connector(config);
  let seen = false;
  c.on("online", () => {
    online++;
    if (!seen) {
      seen = true;
      everOnline++;
    }
    if (opts.events) print(`EVENT online ${group} ${serverOf(c)} ${Date.now()}`);
    if (!all && everOnline === opts.count) {
      all = true;
      print(`ALL ${JSON.stringify({ ms: performance.now() - t0, online, of: opts.count })}`);
    }
  });
  c.on("offline", (reason) => {
    online--;
    if (opts.events) print(`EVENT offline ${group} ${Date.now()} ${reason.replace(/\s+/g, "_")}`);
  });
  c.on("fatal", (reason) => {
    fatal++;
    print(`FATAL ${group} ${reason}`);
  });
  return c;
}

const rate = opts.startRate ?? 0;
for (let k = 0; k < opts.count; k++) {
  const c = make(opts.from + k);
  connectors.push(c);
  c.start();
  // Bounded pacing: at most `rate` starts per second.
  if (rate > 0 && k % Math.max(1, Math.round(rate / 20)) === 0) await Bun.sleep(50);
}

const progress = setInterval(() => {
  const servers: Record<string, number> = {};
  for (const c of connectors) if (c.online) servers[serverOf(c)] = (servers[serverOf(c)] ?? 0) + 1;
  print(`PROGRESS ${JSON.stringify({ ms: Math.round(performance.now() - t0), online, everOnline, fatal, servers })}`);
}, 1000);

const stop = () => {
  clearInterval(progress);
  for (const c of connectors) c.stop();
  setTimeout(() => process.exit(0), 300);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
setTimeout(stop, opts.deadlineMs ?? 15 * 60_000).unref();
