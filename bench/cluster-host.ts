/**
 * Preload for the cluster benchmark (bench/cluster.ts): bench/loadgen.ts and
 * bench/relay.ts connect to 127.0.0.1 only, but the nodes of a cluster on one
 * machine listen on distinct loopback addresses (127.0.0.11, .12, ...). With
 * WARREN_BENCH_HOST=127.0.0.12, every Bun.connect to 127.0.0.1 goes to that
 * address instead; nothing else changes, so the measuring code is the same as
 * the single-server benchmarks'.
 *
 *   WARREN_BENCH_HOST=127.0.0.12 bun --preload ./bench/cluster-host.ts bench/loadgen.ts latency '{...}'
 */
const host = process.env.WARREN_BENCH_HOST;
if (host) {
  const connect = Bun.connect;
  (Bun as { connect: typeof Bun.connect }).connect = ((opts: Parameters<typeof Bun.connect>[0]) =>
    connect((opts as { hostname?: string }).hostname === "127.0.0.1" ? ({ ...opts, hostname: host } as typeof opts) : opts)) as typeof Bun.connect;
}
