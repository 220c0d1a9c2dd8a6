/**
 * Control-plane load: many Warren clients in one process (real Connector
 * instances from lib/client/connector.ts), each logging in as its own group.
 * Usage: bun bench/control-driver.ts '{"port":7000,"groups":1000,"apps":5,"tokenPrefix":"...","localPort":1}'
 * Prints `ONLINE {"online":N,"ms":T}` once every group is online (or at the deadline).
 */
import { validate } from "../lib/config/load.ts";
import { ClientConfigSchema } from "../lib/config/schema.ts";
import { Connector } from "../lib/client/connector.ts";
import { setLogLevel } from "../lib/log.ts";

const opts = JSON.parse(Bun.argv[2] ?? "{}") as { port: number; groups: number; apps: number; tokenPrefix: string; localPort: number; deadlineMs?: number };
const print = console.log.bind(console);
// Each Connector prints one line per app; 5,000 lines would only measure the terminal.
console.log = () => {};
setLogLevel("warn");

const connectors: Connector[] = [];
let online = 0;
const t0 = performance.now();
let reported = false;
const report = (partial: boolean) => {
  if (reported) return;
  reported = true;
  print(`ONLINE ${JSON.stringify({ online, of: opts.groups, ms: performance.now() - t0, partial })}`);
};
for (let i = 0; i < opts.groups; i++) {
  const group = groupName(i);
  const config = validate(
    ClientConfigSchema,
    {
      serverAddr: "127.0.0.1",
      serverPort: opts.port,
      group,
      token: `${opts.tokenPrefix}${i}`,
      logLevel: "warn",
      apps: Array.from({ length: opts.apps }, (_, k) => ({ name: `app${k}`, localAddr: `127.0.0.1:${opts.localPort}` })),
    },
    "driver",
  );
  const c = new Connector(config);
  let seen = false;
  c.on("online", () => {
    if (seen) return;
    seen = true;
    if (++online === opts.groups) report(false);
  });
  connectors.push(c);
  c.start();
}
setTimeout(() => report(true), opts.deadlineMs ?? 60_000).unref();

export function groupName(i: number): string {
  return `g${String(i).padStart(5, "0")}`;
}

const stop = () => {
  for (const c of connectors) c.stop();
  setTimeout(() => process.exit(0), 200);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
