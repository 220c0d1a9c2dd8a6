/**
 * The target app for latency, setup and many-connection scenarios: a TCP
 * echo server on 127.0.0.1 with backpressure.
 * Usage: bun bench/echo.ts PORT [udp]
 * With "udp", it also echoes UDP datagrams on the same port number.
 */
import type { Socket } from "bun";

interface S {
  queue: Uint8Array[];
  ended: boolean;
}

const port = Number(Bun.argv[2]);
Bun.listen<S>({
  hostname: "127.0.0.1",
  port,
  allowHalfOpen: true,
  socket: {
    open(sock) {
      sock.data = { queue: [], ended: false };
    },
    data(sock, chunk) {
      const s = sock.data;
      if (s.queue.length) {
        s.queue.push(chunk);
        return;
      }
      const n = sock.write(chunk);
      if (n >= 0 && n < chunk.length) {
        s.queue.push(chunk.subarray(n));
        sock.pause();
      }
    },
    drain(sock) {
      const s = sock.data;
      while (s.queue.length) {
        const c = s.queue[0]!;
        const n = sock.write(c);
        if (n < 0) return;
        if (n < c.length) {
          s.queue[0] = c.subarray(n);
          return;
        }
        s.queue.shift();
      }
      if (s.ended) sock.end();
      else sock.resume();
    },
    end(sock) {
      sock.data.ended = true;
      if (sock.data.queue.length === 0) sock.end();
    },
    error(sock) {
      sock.terminate();
    },
  },
});
if (Bun.argv[3] === "udp") {
  await Bun.udpSocket({
    hostname: "127.0.0.1",
    port,
    binaryType: "uint8array",
    socket: {
      data(sock, payload, peerPort, peerAddr) {
        sock.send(payload, peerPort, peerAddr);
      },
    },
  });
}
console.log(`echo ready ${port}${Bun.argv[3] === "udp" ? " (tcp+udp)" : ""}`);
