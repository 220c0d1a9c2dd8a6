/**
 * The paths under test. Each one forwards a set of named loopback targets
 * and tells the load generator which port to hit for each, and which
 * processes are the "server" and "client" side of the tunnel.
 *
 *   direct     load generator -> target
 *   warren     -> warren server (public port) -> warren client -> target
 *   bun-chain  -> bench/relay.ts -> bench/relay.ts -> target
 *   socat      -> socat -b 131072 -> socat -b 131072 -> target
 *   ssh        -> sshd (ssh -R listener) -> ssh client -> target
 *   rathole, frp, frp-nomux -> the tunnels people use (bench/peers.ts);
 *                 skipped with install instructions when their binaries are missing
 *   warren-tls -> Warren as above, with [tls] enabled (generated self-signed
 *                 certificate, client pins its fingerprint); not in ALL_PATHS,
 *                 used by the TLS-cost scenario only
 *
 * `opts.udp` names targets that are forwarded over UDP too, on the same
 * public port number as their TCP forward (iperf3 -u needs both: a TCP
 * control connection and UDP datagrams to the same port). Only direct,
 * warren, socat, rathole, frp and frp-nomux support it.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { frp, rathole } from "./peers.ts";
import { BENCH, BUN, freePort, have, ROOT, run, spawnChild, stopChild, tail, tempDir, until, waitPort, type Child } from "./common.ts";

export type PathName = "direct" | "warren" | "bun-chain" | "socat" | "ssh" | "rathole" | "frp" | "frp-nomux" | "warren-tls";
export const ALL_PATHS: readonly PathName[] = ["direct", "warren", "bun-chain", "socat", "ssh", "rathole", "frp", "frp-nomux"];
/** The tunnels people use (bench/peers.ts), compared with Warren by `--peers`. */
export const PEER_PATHS: readonly PathName[] = ["rathole", "frp", "frp-nomux"];
export const PATH_LABEL: Record<PathName, string> = {
  direct: "direct",
  warren: "Warren",
  "bun-chain": "bare Bun chain",
  socat: "socat chain",
  ssh: "ssh -R",
  rathole: "rathole",
  frp: "frp",
  "frp-nomux": "frp (tcpMux off)",
  "warren-tls": "Warren + TLS",
};

/** Options of a path: which targets to forward over UDP as well (same port number). */
export interface PathOptions {
  udp?: string[];
}

/** A running path. */
export interface Tunnel {
  readonly path: PathName;
  /** Port to connect to for each target name. */
  readonly entry: Record<string, number>;
  /** Root pids of the public-side processes (their trees are measured). */
  readonly server: number[];
  /** Root pids of the private-side processes. */
  readonly client: number[];
  /** Warren paths: the server's API port, admin token and control port (bench/dashboard-load.ts puts a dashboard on it). */
  readonly api?: { readonly port: number; readonly adminToken: string; readonly controlPort: number };
  stop(): Promise<void>;
}

/** Targets: name -> port of the app on 127.0.0.1. */
export type Targets = Record<string, number>;

const SOCAT_BUF = 131072;
/** WARREN_BENCH_PROF=dir writes a CPU profile (markdown) of every Bun tunnel process to dir when it exits. */
const PROF = process.env.WARREN_BENCH_PROF ? ["--cpu-prof-md", `--cpu-prof-dir=${process.env.WARREN_BENCH_PROF}`] : [];

async function direct(targets: Targets): Promise<Tunnel> {
  return { path: "direct", entry: { ...targets }, server: [], client: [], stop: async () => {} };
}

async function stopAllOf(children: Child[]): Promise<void> {
  await Promise.all(children.map((c) => stopChild(c)));
}

async function warren(targets: Targets, opts: PathOptions & { tls?: boolean } = {}): Promise<Tunnel> {
  const dir = tempDir("warren-bench-w-");
  const udp = opts.udp ?? [];
  const [controlPort, apiPort] = [await freePort(), await freePort()];
  const adminToken = randomBytes(18).toString("hex");
  const token = randomBytes(18).toString("hex");
  const names = Object.keys(targets);
  const publicPorts: Record<string, number> = {};
  for (const n of names) publicPorts[n] = await freePort();
  const serverToml = [
    `bindAddr = "127.0.0.1"`,
    `controlPort = ${controlPort}`,
    `apiHost = "127.0.0.1"`,
    `apiPort = ${apiPort}`,
    `adminToken = "${adminToken}"`,
    `dataDir = "${join(dir, "data")}"`,
    `logLevel = "info"`,
    ...(opts.tls ? [``, `[tls]`, `enabled = true`] : []),
    ``,
    `[[groups]]`,
    `name = "bench"`,
    `token = "${token}"`,
    ...names.flatMap((n) => [``, `[[groups.apps]]`, `name = "${n}"`, `remotePort = ${publicPorts[n]}`]),
    // TCP and UDP ports are separate namespaces: the UDP app takes the same port number as the TCP one.
    ...udp.flatMap((n) => [``, `[[groups.apps]]`, `name = "${n}-udp"`, `type = "udp"`, `remotePort = ${publicPorts[n]}`]),
  ].join("\n");
  const clientToml = (fingerprint?: string) =>
    [
      `serverAddr = "127.0.0.1"`,
      `serverPort = ${controlPort}`,
      `group = "bench"`,
      `token = "${token}"`,
      `logLevel = "info"`,
      ...(fingerprint ? [``, `[tls]`, `enabled = true`, `serverFingerprint = "${fingerprint}"`] : []),
      ...names.flatMap((n) => [``, `[[apps]]`, `name = "${n}"`, `localAddr = "127.0.0.1:${targets[n]}"`]),
      ...udp.flatMap((n) => [``, `[[apps]]`, `name = "${n}-udp"`, `type = "udp"`, `localAddr = "127.0.0.1:${targets[n]}"`]),
    ].join("\n");
  writeFileSync(join(dir, "server.toml"), serverToml + "\n");
  const serverLog = join(dir, "server.log");
  const server = spawnChild(opts.tls ? "warren-server-tls" : "warren-server", [BUN, ...PROF, join(ROOT, "server.ts"), "--config", join(dir, "server.toml")], { logFile: serverLog });
  const children = [server];
  let fingerprint: string | undefined;
  try {
    await waitPort(apiPort, 15_000, "warren server API");
    if (opts.tls) {
      // The server prints the fingerprint of its generated certificate at start; the client pins it.
      await until(() => !!(fingerprint = /SHA-256 fingerprint ([0-9a-f]{64})/.exec(readFileSync(serverLog, "utf8"))?.[1]), 10_000, "the TLS fingerprint line of the warren server");
    }
    writeFileSync(join(dir, "client.toml"), clientToml(fingerprint) + "\n");
    const client = spawnChild("warren-client", [BUN, ...PROF, join(ROOT, "client.ts"), "--config", join(dir, "client.toml")], { logFile: join(dir, "client.log") });
    children.push(client);
    await until(
      async () => {
        const res = await fetch(`http://127.0.0.1:${apiPort}/api/groups/bench`, { headers: { authorization: `Bearer ${adminToken}` } }).catch(() => null);
        if (!res?.ok) return false;
        const g = (await res.json()) as { online: boolean; apps: { online: boolean }[] };
        return g.online && g.apps.every((a) => a.online);
      },
      15_000,
      "the warren client to come online",
    );
    for (const n of names) await waitPort(publicPorts[n]!, 5000, `warren public port of ${n}`);
    // Let the client fill the server's pool of idle work connections.
    await Bun.sleep(300);
  } catch (err) {
    await stopAllOf(children);
    throw new Error(`${(err as Error).message}\nserver log:\n${tail(join(dir, "server.log"))}\nclient log:\n${tail(join(dir, "client.log"))}`);
  }
  return { path: opts.tls ? "warren-tls" : "warren", entry: publicPorts, server: [server.pid], client: [children[1]!.pid], api: { port: apiPort, adminToken, controlPort }, stop: () => stopAllOf(children) };
}

async function bunChain(targets: Targets): Promise<Tunnel> {
  const dir = tempDir("warren-bench-b-");
  const names = Object.keys(targets);
  const hop2: Record<string, number> = {};
  const entry: Record<string, number> = {};
  for (const n of names) [hop2[n], entry[n]] = [await freePort(), await freePort()];
  const relay = join(BENCH, "relay.ts");
  const client = spawnChild("bun-relay-2", [BUN, ...PROF, relay, ...names.map((n) => `${hop2[n]}:${targets[n]}`)], { logFile: join(dir, "relay2.log") });
  const server = spawnChild("bun-relay-1", [BUN, ...PROF, relay, ...names.map((n) => `${entry[n]}:${hop2[n]}`)], { logFile: join(dir, "relay1.log") });
  const children = [server, client];
  try {
    for (const n of names) await waitPort(hop2[n]!, 10_000, "bun relay 2");
    for (const n of names) await waitPort(entry[n]!, 10_000, "bun relay 1");
  } catch (err) {
    await stopAllOf(children);
    throw err;
  }
  return { path: "bun-chain", entry, server: [server.pid], client: [client.pid], stop: () => stopAllOf(children) };
}

async function socat(targets: Targets, opts: PathOptions = {}): Promise<Tunnel> {
  if (!have("socat")) throw new Error("socat is not installed");
  const dir = tempDir("warren-bench-s-");
  const entry: Record<string, number> = {};
  const servers: Child[] = [];
  const clients: Child[] = [];
  const listen = (port: number) => `TCP-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr,backlog=4096`;
  for (const [n, target] of Object.entries(targets)) {
    const [mid, pub] = [await freePort(), await freePort()];
    entry[n] = pub;
    clients.push(spawnChild(`socat-2-${n}`, ["socat", "-b", String(SOCAT_BUF), listen(mid), `TCP:127.0.0.1:${target}`], { logFile: join(dir, `socat2-${n}.log`) }));
    servers.push(spawnChild(`socat-1-${n}`, ["socat", "-b", String(SOCAT_BUF), listen(pub), `TCP:127.0.0.1:${mid}`], { logFile: join(dir, `socat1-${n}.log`) }));
    if (opts.udp?.includes(n)) {
      // One forked child per peer, which exits after 60 s without traffic (-T 60).
      const udpListen = (port: number) => `UDP-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr`;
      clients.push(spawnChild(`socat-2u-${n}`, ["socat", "-T", "60", udpListen(mid), `UDP:127.0.0.1:${target}`], { logFile: join(dir, `socat2u-${n}.log`) }));
      servers.push(spawnChild(`socat-1u-${n}`, ["socat", "-T", "60", udpListen(pub), `UDP:127.0.0.1:${mid}`], { logFile: join(dir, `socat1u-${n}.log`) }));
    }
    try {
      await waitPort(mid, 10_000, "socat hop 2");
      await waitPort(pub, 10_000, "socat hop 1");
    } catch (err) {
      await stopAllOf([...servers, ...clients]);
      throw err;
    }
  }
  return { path: "socat", entry, server: servers.map((c) => c.pid), client: clients.map((c) => c.pid), stop: () => stopAllOf([...servers, ...clients]) };
}

/** What the ssh path found about itself (cipher, version), for the report. */
export const sshInfo: { cipher?: string; version?: string; error?: string } = {};

async function ssh(targets: Targets): Promise<Tunnel> {
  const sshd = "/usr/sbin/sshd";
  if (!have(sshd) || !have("ssh") || !have("ssh-keygen")) throw new Error("openssh-server/openssh-client are not installed");
  if (process.getuid?.() !== 0) throw new Error("sshd must run as root for this setup (it logs in as root with a throwaway key)");
  const dir = tempDir("warren-bench-ssh-");
  await run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", join(dir, "host_ed25519")], { timeoutMs: 10_000 });
  await run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", join(dir, "id_ed25519")], { timeoutMs: 10_000 });
  writeFileSync(join(dir, "authorized_keys"), await Bun.file(join(dir, "id_ed25519.pub")).text(), { mode: 0o600 });
  // sshd's privilege-separation directory; the Debian package creates it only when the service starts.
  if (!existsSync("/run/sshd")) mkdirSync("/run/sshd", { mode: 0o755 });
  const port = await freePort();
  writeFileSync(
    join(dir, "sshd_config"),
    [
      `Port ${port}`,
      `ListenAddress 127.0.0.1`,
      `HostKey ${join(dir, "host_ed25519")}`,
      `PidFile ${join(dir, "sshd.pid")}`,
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      `StrictModes no`,
      `PermitRootLogin prohibit-password`,
      `PubkeyAuthentication yes`,
      `PasswordAuthentication no`,
      `KbdInteractiveAuthentication no`,
      `UsePAM no`,
      `AllowTcpForwarding yes`,
      `GatewayPorts no`,
      `X11Forwarding no`,
      `PrintMotd no`,
      `UseDNS no`,
      `MaxStartups 100`,
      `LogLevel ERROR`,
      ``,
    ].join("\n"),
  );
  const children: Child[] = [];
  const server = spawnChild("sshd", [sshd, "-D", "-e", "-f", join(dir, "sshd_config")], { logFile: join(dir, "sshd.log") });
  children.push(server);
  // prettier-ignore
  const base = [
    "-F", "/dev/null",
    "-i", join(dir, "id_ed25519"),
    "-o", "IdentitiesOnly=yes",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "BatchMode=yes",
    "-p", String(port),
  ];
  const common = [...base, "-o", "LogLevel=ERROR"];
  const entry: Record<string, number> = {};
  for (const n of Object.keys(targets)) entry[n] = await freePort();
  try {
    await waitPort(port, 10_000, "sshd");
    if (!sshInfo.cipher) {
      const probe = await run(["ssh", ...base, "-v", "root@127.0.0.1", "true"], { timeoutMs: 15_000, allowFail: true });
      sshInfo.cipher = /kex: server->client cipher: (\S+)/.exec(probe.stderr)?.[1];
      sshInfo.version = /^(OpenSSH_\S+)/m.exec(probe.stderr)?.[1]?.replace(/,$/, "");
      if (probe.code !== 0) throw new Error(`ssh login as root failed: ${probe.stderr.trim().split("\n").slice(-3).join(" | ")}`);
    }
    const fwd = Object.entries(targets).flatMap(([n, t]) => ["-R", `127.0.0.1:${entry[n]}:127.0.0.1:${t}`]);
    const client = spawnChild("ssh", ["ssh", ...common, "-N", "-T", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=0", ...fwd, "root@127.0.0.1"], { logFile: join(dir, "ssh.log") });
    children.push(client);
    for (const n of Object.keys(targets)) await waitPort(entry[n]!, 15_000, `ssh -R port of ${n}`);
  } catch (err) {
    await stopAllOf(children);
    sshInfo.error = (err as Error).message;
    throw new Error(`${(err as Error).message}\nsshd log:\n${tail(join(dir, "sshd.log"))}\nssh log:\n${tail(join(dir, "ssh.log"))}`);
  }
  return { path: "ssh", entry, server: [server.pid], client: [children[1]!.pid], stop: () => stopAllOf(children) };
}

/** Paths that can forward UDP (`opts.udp`). */
export const UDP_PATHS: readonly PathName[] = ["direct", "warren", "warren-tls", "socat", "rathole", "frp", "frp-nomux"];

/** Starts one path forwarding `targets`. */
export function startPath(path: PathName, targets: Targets, opts: PathOptions = {}): Promise<Tunnel> {
  if (opts.udp?.length && !UDP_PATHS.includes(path)) throw new Error(`${path} cannot forward UDP`);
  switch (path) {
    case "direct":
      return direct(targets);
    case "warren":
      return warren(targets, opts);
    case "warren-tls":
      return warren(targets, { ...opts, tls: true });
    case "bun-chain":
      return bunChain(targets);
    case "socat":
      return socat(targets, opts);
    case "ssh":
      return ssh(targets);
    case "rathole":
      return rathole(targets, opts);
    case "frp":
      return frp(targets, { ...opts, mux: true });
    case "frp-nomux":
      return frp(targets, { ...opts, mux: false });
  }
}
