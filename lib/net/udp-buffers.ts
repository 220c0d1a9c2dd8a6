/**
 * UDP receive buffers, and what the kernel drops when one is full. Bun's UDP
 * socket takes no buffer size (checked on Bun 1.4.5: Bun.udpSocket has no such
 * option; node:dgram's recvBufferSize works but is another, slower socket), so
 * SO_RCVBUF is set with setsockopt through bun:ffi on the socket's descriptor.
 * The kernel counts the datagrams it drops per socket in /proc/net/udp and
 * udp6; one sampler reads them for every watched socket.
 */
import { log } from "../log.ts";

/** How often the kernel's drop counters are read while a UDP socket is watched. */
export const KERNEL_DROPS_SAMPLE_MS = 1_000;

type Libc = { setsockopt(fd: number, level: number, name: number, value: unknown, len: number): number; getsockopt(fd: number, level: number, name: number, value: unknown, len: unknown): number };
let libc: { symbols: Libc; ptr: (a: ArrayBufferView) => unknown } | string | null = null;

/** libc's setsockopt and getsockopt, loaded on first use; a string says why they cannot be. */
async function loadLibc(): Promise<typeof libc> {
  if (libc) return libc;
  try {
    const { dlopen, FFIType, ptr } = await import("bun:ffi");
    const lib = dlopen("libc.so.6", {
      setsockopt: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
      getsockopt: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
    });
    libc = { symbols: lib.symbols as unknown as Libc, ptr: ptr as (a: ArrayBufferView) => unknown };
  } catch (err) {
    libc = `setsockopt is not available here (${(err as Error).message})`;
  }
  return libc;
}

const SOL_SOCKET = 1;
const SO_RCVBUF = 8;

/**
 * Asks for a receive buffer of `bytes` on socket `fd` (0: leave the system's default). Resolves
 * to the size the kernel now holds for it (Linux doubles the request, capped by
 * net.core.rmem_max), or to a sentence saying why it could not be set.
 */
export async function setReceiveBuffer(fd: number, bytes: number): Promise<number | string> {
  const c = await loadLibc();
  if (typeof c === "string") return c;
  const { symbols, ptr } = c!;
  if (bytes > 0 && symbols.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, ptr(new Int32Array([bytes])), 4) !== 0) return `setsockopt(SO_RCVBUF, ${bytes}) failed`;
  const value = new Int32Array(1);
  if (symbols.getsockopt(fd, SOL_SOCKET, SO_RCVBUF, ptr(value), ptr(new Uint32Array([4]))) !== 0) return "getsockopt(SO_RCVBUF) failed";
  return value[0]!;
}

/** Sets the buffer and logs what came of it: once per reason, so thousands of peers do not flood the log. */
export async function tuneReceiveBuffer(fd: number, bytes: number, fields: Record<string, unknown>): Promise<void> {
  if (bytes <= 0) return;
  const got = await setReceiveBuffer(fd, bytes);
  if (typeof got === "string") {
    if (!warned.has(got)) log.warn("cannot set a UDP receive buffer; the system default stays", { ...fields, reason: got });
    warned.add(got);
  } else if (got < bytes && !warned.has("capped")) {
    warned.add("capped");
    // Linux reports twice what it grants for data: less than asked means net.core.rmem_max capped it.
    log.info("UDP receive buffer smaller than udpReceiveBuffer: raise net.core.rmem_max for more", { ...fields, asked: bytes, granted: got });
  }
}
const warned = new Set<string>();

/** Per socket (its inode): the drop count last seen and whom to tell of new drops. */
const watched = new Map<string, { last: number; told: (drops: number) => void }>();
let sampler: Timer | null = null;

/**
 * Calls `told(n)` when the kernel has dropped `n` more datagrams at the UDP socket `fd`, counted
 * from its creation: call it as soon as the socket exists. Returns the function that stops it.
 * The socket is matched by inode, not port: a port number may be shared (IPv4 and IPv6, a server's
 * and a client's sockets in one process), and a fresh socket's count starts at 0, so no reading
 * taken while a burst is under way can hide part of it.
 */
export function watchKernelDrops(fd: number, told: (drops: number) => void): () => void {
  const entry = { last: 0, told };
  let inode = "";
  let stopped = false;
  const start = (): void => {
    inode = inodeOf(fd);
    if (stopped || !inode) return; // stopped first (its socket closed), or not Linux: no per-socket counters
    watched.set(inode, entry);
    sampler ??= setInterval(() => void sample(), KERNEL_DROPS_SAMPLE_MS);
    sampler.unref();
  };
  // node:fs only when a UDP socket asks for it: the processes do not load it at start (tests/imports.test.ts).
  if (readlink) start();
  else
    void import("node:fs").then(
      (fs) => ((readlink = fs.readlinkSync), start()),
      () => {},
    );
  return () => {
    stopped = true;
    if (inode && watched.get(inode) === entry) watched.delete(inode);
    if (watched.size === 0 && sampler) {
      clearInterval(sampler);
      sampler = null;
    }
  };
}

let readlink: ((path: string) => string) | null = null;

/** The inode of socket `fd` ("socket:[123]" in /proc/self/fd), or "" where there is none to read. */
function inodeOf(fd: number): string {
  try {
    return /^socket:\[(\d+)\]$/.exec(readlink!(`/proc/self/fd/${fd}`))?.[1] ?? "";
  } catch {
    return "";
  }
}

/** Reads the kernel's per-socket drop counters (Linux: the last column of /proc/net/udp and udp6, by inode). */
async function sample(): Promise<void> {
  const totals = new Map<string, number>();
  for (const file of ["/proc/net/udp", "/proc/net/udp6"]) {
    const text = await Bun.file(file)
      .text()
      .catch(() => ""); // not Linux, or no IPv6
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length >= 13 && watched.has(cols[9]!)) totals.set(cols[9]!, Number(cols.at(-1)));
    }
  }
  for (const [inode, w] of watched) {
    const total = totals.get(inode);
    if (total === undefined || total <= w.last) continue;
    const n = total - w.last;
    w.last = total;
    w.told(n);
  }
}
