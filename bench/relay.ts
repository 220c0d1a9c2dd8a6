/**
 * The "bare Bun" baseline: a minimal TCP relay with correct backpressure and
 * nothing else (no protocol, no pool, no auth).
 * Usage: bun bench/relay.ts LISTEN_PORT:TARGET_PORT [...]   (127.0.0.1 only)
 */
import type { Socket } from "bun";

const HIGH_WATER = 256 * 1024;

interface Side {
  sock: Socket<Side> | null;
  other: Side | null;
  queue: Uint8Array[];
  queued: number;
  /** The socket paused because this side's queue is full. */
  blocked: Side | null;
  ended: boolean;
  finPending: boolean;
  closePending: boolean;
  closed: boolean;
}

const side = (): Side => ({ sock: null, other: null, queue: [], queued: 0, blocked: null, ended: false, finPending: false, closePending: false, closed: false });

function write(to: Side, chunk: Uint8Array, from: Side): void {
  if (to.closed) return;
  if (to.queued === 0 && to.sock) {
    const n = to.sock.write(chunk);
    if (n === chunk.length || n < 0) return;
    chunk = chunk.subarray(n);
  }
  to.queue.push(chunk);
  to.queued += chunk.length;
  if (to.queued > HIGH_WATER && !to.blocked) {
    to.blocked = from;
    from.sock?.pause();
  }
}

function flush(s: Side): void {
  const sock = s.sock!;
  while (s.queue.length) {
    const c = s.queue[0]!;
    const n = sock.write(c);
    if (n < 0) return;
    s.queued -= n;
    if (n < c.length) {
      s.queue[0] = c.subarray(n);
      return;
    }
    s.queue.shift();
  }
  if (s.blocked) {
    s.blocked.sock?.resume();
    s.blocked = null;
  }
  if (s.closePending) sock.end();
  else if (s.finPending) {
    s.finPending = false;
    sock.shutdown();
  }
}

function fin(s: Side): void {
  if (s.closed) return;
  if (s.queued === 0 && s.sock) s.sock.shutdown();
  else s.finPending = true;
}

function closed(s: Side): void {
  if (s.closed) return;
  s.closed = true;
  const o = s.other;
  if (o && !o.closed) {
    // Nothing more can flow: deliver what is queued toward the other side, then close it.
    if (o.queued === 0 && o.sock) o.sock.end();
    else if (o.sock) o.closePending = true;
    else o.closed = true;
  }
}

const handler = {
  open(sock: Socket<Side>) {
    const s = sock.data;
    s.sock = sock;
    if (s.closed) return void sock.end(); // the user left while we were dialing
    flush(s);
  },
  data(sock: Socket<Side>, chunk: Uint8Array) {
    const s = sock.data;
    if (s.other) write(s.other, chunk, s);
  },
  drain(sock: Socket<Side>) {
    flush(sock.data);
  },
  end(sock: Socket<Side>) {
    const s = sock.data;
    s.ended = true;
    if (s.other) fin(s.other);
  },
  close(sock: Socket<Side>) {
    if (sock.data) closed(sock.data);
  },
  connectError(sock: Socket<Side>) {
    if (sock.data) closed(sock.data);
  },
  error(sock: Socket<Side>) {
    sock.terminate();
  },
};

for (const spec of Bun.argv.slice(2)) {
  const [listen, target] = spec.split(":").map(Number) as [number, number];
  Bun.listen<Side>({
    hostname: "127.0.0.1",
    port: listen,
    allowHalfOpen: true,
    socket: {
      ...handler,
      open(sock) {
        const user = side();
        const up = side();
        user.other = up;
        up.other = user;
        sock.data = user;
        user.sock = sock;
        Bun.connect<Side>({ hostname: "127.0.0.1", port: target, allowHalfOpen: true, data: up, socket: handler }).catch(() => {});
      },
    },
  });
}
console.log(`relay ready ${Bun.argv.slice(2).join(" ")}`);
// A clean exit on SIGTERM, so that a CPU profile (WARREN_BENCH_PROF) is written.
process.on("SIGTERM", () => process.exit(0));
