/**
 * The tunnels people use, as paths of the benchmark (issue 21): rathole and
 * frp, each configured as its own README configures it (token auth, default
 * transport), plus frp with `transport.tcpMux = false` on both sides.
 *
 *   rathole    -> rathole server (service bind_addr) -> rathole client -> target
 *   frp        -> frps (remotePort) -> frpc -> target; one TCP connection multiplexed (yamux)
 *   frp-nomux  -> as frp, with a TCP work connection per user connection
 *
 * Binaries are looked up on PATH, then in $WARREN_PEERS_BIN (default
 * /work/peers/bin); `peerMissing` says how to get them, and the bench skips
 * their rows. Versions are pinned: rathole 0.5.0, frp 0.70.1.
 */
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { freePort, run, spawnChild, stopChild, tail, tempDir, waitPort, type Child } from "./common.ts";
import type { PathOptions, Targets, Tunnel } from "./paths.ts";

/** Where the peers' binaries are looked for after PATH. */
export const PEERS_BIN = process.env.WARREN_PEERS_BIN || "/work/peers/bin";
/** The versions the comparison is pinned to (another version is run, but its version is recorded and flagged). */
export const PEER_VERSIONS = { rathole: "0.5.0", frp: "0.70.1" } as const;

/** How to get each peer when it is missing. */
export const PEER_INSTALL: Record<"rathole" | "frp", string> = {
  rathole: [
    "rathole not found on PATH or in $WARREN_PEERS_BIN (default /work/peers/bin).",
    "Install it with Cargo:",
    // cargo puts binaries in <root>/bin.
    basename(PEERS_BIN) === "bin"
      ? `  cargo install rathole --version ${PEER_VERSIONS.rathole} --root ${dirname(PEERS_BIN)}`
      : `  cargo install rathole --version ${PEER_VERSIONS.rathole} && cp ~/.cargo/bin/rathole ${PEERS_BIN}/`,
  ].join("\n"),
  frp: [
    "frps/frpc not found on PATH or in $WARREN_PEERS_BIN (default /work/peers/bin).",
    `Build them from a checkout of fatedier/frp (tag v${PEER_VERSIONS.frp}), outside this repository:`,
    `  cd <frp-src> && CGO_ENABLED=0 go build -tags "frps,noweb" -o ${PEERS_BIN}/frps ./cmd/frps`,
    `  cd <frp-src> && CGO_ENABLED=0 go build -tags "frpc,noweb" -o ${PEERS_BIN}/frpc ./cmd/frpc`,
    `  (optionally: git -C <frp-src> rev-parse HEAD > ${PEERS_BIN}/frp.commit, recorded in the results)`,
  ].join("\n"),
};

/** An executable on PATH or in PEERS_BIN, or null. */
export function findPeerBin(name: string): string | null {
  const onPath = Bun.which(name);
  if (onPath) return onPath;
  const p = join(PEERS_BIN, name);
  return existsSync(p) ? p : null;
}

/** Why a peer path cannot run here (with the install lines), or null when its binaries are there. */
export function peerMissing(path: string): string | null {
  if (path === "rathole") return findPeerBin("rathole") ? null : PEER_INSTALL.rathole;
  if (path === "frp" || path === "frp-nomux") return findPeerBin("frps") && findPeerBin("frpc") ? null : PEER_INSTALL.frp;
  return null;
}

/** The versions of the peers found (null when missing), for the results. */
export async function peerVersions(): Promise<Record<string, string | null>> {
  const version = async (bin: string | null, re: RegExp) => {
    if (!bin) return null;
    const r = await run([bin, "--version"], { timeoutMs: 5000, allowFail: true }).catch(() => null);
    return r ? (re.exec(r.stdout + r.stderr)?.[1] ?? null) : null;
  };
  const frps = findPeerBin("frps");
  const commit = frps ? join(dirname(frps), "frp.commit") : null;
  return {
    rathole: await version(findPeerBin("rathole"), /Build Version:\s*(\S+)/),
    frps: await version(frps, /^(\S+)/),
    frpc: await version(findPeerBin("frpc"), /^(\S+)/),
    frpCommit: commit && existsSync(commit) ? readFileSync(commit, "utf8").trim() : null,
  };
}

/** Resolves when `port` accepts; fails early, with the process's log, if `child` exits first. */
async function waitUp(child: Child, port: number, what: string, ms = 15_000): Promise<void> {
  let done = false;
  const exited = child.proc.exited.then((code) => {
    if (!done) throw new Error(`${what}: ${child.name} exited with code ${code} before listening on ${port}\n${tail(child.log, 8)}`);
  });
  try {
    await Promise.race([waitPort(port, ms, what), exited]);
  } finally {
    done = true;
  }
}

/** Public port per target; a UDP forward takes the same port number as its TCP one (iperf3 -u needs both). */
async function publicPorts(targets: Targets): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const n of Object.keys(targets)) out[n] = await freePort();
  return out;
}

/** A moment for UDP forwards to be bound: neither peer says when, and no TCP connect can tell. */
const UDP_SETTLE_MS = 300;

/** rathole as its README configures it: one token, default transport (TCP, nodelay on), a service per target. */
export async function rathole(targets: Targets, opts: PathOptions = {}): Promise<Tunnel> {
  const bin = findPeerBin("rathole");
  if (!bin) throw new Error(PEER_INSTALL.rathole);
  const dir = tempDir("warren-bench-rathole-");
  const [controlPort, entry] = [await freePort(), await publicPorts(targets)];
  const token = randomBytes(18).toString("hex");
  const udp = opts.udp ?? [];
  const q = JSON.stringify;
  // prettier-ignore
  writeFileSync(join(dir, "server.toml"), [
    `[server]`, `bind_addr = ${q(`127.0.0.1:${controlPort}`)}`, `default_token = ${q(token)}`,
    ...Object.keys(targets).flatMap((n) => [``, `[server.services.${n}]`, `bind_addr = ${q(`127.0.0.1:${entry[n]}`)}`]),
    ...udp.flatMap((n) => [``, `[server.services.${n}_udp]`, `type = "udp"`, `bind_addr = ${q(`127.0.0.1:${entry[n]}`)}`]),
    ``,
  ].join("\n"));
  // prettier-ignore
  writeFileSync(join(dir, "client.toml"), [
    `[client]`, `remote_addr = ${q(`127.0.0.1:${controlPort}`)}`, `default_token = ${q(token)}`,
    ...Object.entries(targets).flatMap(([n, t]) => [``, `[client.services.${n}]`, `local_addr = ${q(`127.0.0.1:${t}`)}`]),
    ...udp.flatMap((n) => [``, `[client.services.${n}_udp]`, `type = "udp"`, `local_addr = ${q(`127.0.0.1:${targets[n]}`)}`]),
    ``,
  ].join("\n"));
  // rathole logs every visitor at info; warn keeps its log writes out of the figures (as frp's below).
  const env = { RUST_LOG: "warn" };
  const children: Child[] = [];
  try {
    const server = spawnChild("rathole-server", [bin, "--server", join(dir, "server.toml")], { logFile: join(dir, "server.log"), env });
    children.push(server);
    await waitUp(server, controlPort, "rathole server");
    const client = spawnChild("rathole-client", [bin, "--client", join(dir, "client.toml")], { logFile: join(dir, "client.log"), env });
    children.push(client);
    // The server binds a service's port once the client's control channel for it is up.
    for (const n of Object.keys(targets)) await waitUp(client, entry[n]!, `rathole service ${n}`);
    if (udp.length) await Bun.sleep(UDP_SETTLE_MS);
  } catch (err) {
    await Promise.all(children.map((c) => stopChild(c)));
    throw new Error(`${(err as Error).message}\nrathole server log:\n${tail(join(dir, "server.log"), 8)}\nrathole client log:\n${tail(join(dir, "client.log"), 8)}`);
  }
  return { path: "rathole", entry, server: [children[0]!.pid], client: [children[1]!.pid], stop: () => Promise.all(children.map((c) => stopChild(c))).then(() => {}) };
}

/** frp as its README configures it: token auth, default transport (tcpMux on) or tcpMux off on both sides, a proxy per target. */
export async function frp(targets: Targets, opts: PathOptions & { mux: boolean }): Promise<Tunnel> {
  const [frps, frpc] = [findPeerBin("frps"), findPeerBin("frpc")];
  if (!frps || !frpc) throw new Error(PEER_INSTALL.frp);
  const dir = tempDir(opts.mux ? "warren-bench-frp-" : "warren-bench-frpnomux-");
  const [bindPort, entry] = [await freePort(), await publicPorts(targets)];
  const token = randomBytes(18).toString("hex");
  const udp = opts.udp ?? [];
  const q = JSON.stringify;
  const common = [`auth.method = "token"`, `auth.token = ${q(token)}`, `log.to = "console"`, `log.level = "warn"`, ...(opts.mux ? [] : [`transport.tcpMux = false`])];
  writeFileSync(join(dir, "frps.toml"), [`bindAddr = "127.0.0.1"`, `bindPort = ${bindPort}`, ...common, ``].join("\n"));
  const proxy = (name: string, type: string, n: string) => [``, `[[proxies]]`, `name = ${q(name)}`, `type = ${q(type)}`, `localIP = "127.0.0.1"`, `localPort = ${targets[n]}`, `remotePort = ${entry[n]}`];
  // prettier-ignore
  writeFileSync(join(dir, "frpc.toml"), [
    `serverAddr = "127.0.0.1"`, `serverPort = ${bindPort}`, `loginFailExit = true`, ...common,
    ...Object.keys(targets).flatMap((n) => proxy(n, "tcp", n)),
    ...udp.flatMap((n) => proxy(`${n}-udp`, "udp", n)),
    ``,
  ].join("\n"));
  const children: Child[] = [];
  try {
    const server = spawnChild("frps", [frps, "-c", join(dir, "frps.toml")], { logFile: join(dir, "frps.log") });
    children.push(server);
    await waitUp(server, bindPort, "frps");
    const client = spawnChild("frpc", [frpc, "-c", join(dir, "frpc.toml")], { logFile: join(dir, "frpc.log") });
    children.push(client);
    // frps opens a proxy's remotePort when frpc registers it.
    for (const n of Object.keys(targets)) await waitUp(client, entry[n]!, `frp proxy ${n}`);
    if (udp.length) await Bun.sleep(UDP_SETTLE_MS);
  } catch (err) {
    await Promise.all(children.map((c) => stopChild(c)));
    throw new Error(`${(err as Error).message}\nfrps log:\n${tail(join(dir, "frps.log"), 8)}\nfrpc log:\n${tail(join(dir, "frpc.log"), 8)}`);
  }
  return { path: opts.mux ? "frp" : "frp-nomux", entry, server: [children[0]!.pid], client: [children[1]!.pid], stop: () => Promise.all(children.map((c) => stopChild(c))).then(() => {}) };
}
