/**
 * The socket handler shared by every socket of one listener or dialer, and the
 * process's cap on open sockets. Bun's listener spins at 100 % CPU when accept()
 * fails with EMFILE (BUN-NOTES.md), so accepted sockets beyond the cap are closed
 * at once. The count is process-wide state on purpose: descriptors are a resource
 * of the process, shared by every listener and dialer in it.
 */
import type { SocketHandler } from "bun";
import { log } from "../log.ts";
import { Endpoint, type Sock } from "./endpoint.ts";

/** Idle time before TCP keepalive probes on control and work connections (both sides): a pooled connection whose path died is found. */
export const KEEPALIVE_MS = 30_000;
/** Descriptors kept free for the registry, the API, UDP sockets and outgoing dials. */
export const FD_RESERVE = 64;
/** Least number of sockets allowed whatever the file limit says. */
const MIN_SOCKETS = 32;

/** The soft limit on open files (Linux /proc), or 1024 where it cannot be read. Bun's file API, not node:fs: see lib/files.ts. */
async function fileLimit(): Promise<number> {
  const text = await Bun.file("/proc/self/limits")
    .text()
    .catch(() => ""); // not Linux
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(text);
  if (m) return m[1] === "unlimited" ? 1 << 20 : Number(m[1]);
  return 1024;
}

/** Open TCP sockets of this process and the most it accepts (the soft file limit less FD_RESERVE). */
export const sockets = { open: 0, max: Math.max(MIN_SOCKETS, (await fileLimit()) - FD_RESERVE), refused: 0 };
let lastRefusalLog = 0;

/** Checks a TLS peer once its handshake is done; returns why it is refused, or null. */
export type TlsVerifier = (socket: Sock, authorizationError: Error | null) => string | null;

/**
 * A socket handler shared by every socket of one listener or dialer.
 * `create` makes the Endpoint for an accepted socket; dialed sockets carry
 * theirs in `data` already. With `verify` (TLS dialers), `onOpen` waits for
 * the handshake and a verified peer: in Bun `open` fires before the TLS
 * handshake, and nothing may be sent before the server is verified.
 * `connectFailed` hears why a dial failed, just before its endpoint closes.
 */
export function relayHandler(create?: (socket: Sock) => Endpoint, verify?: TlsVerifier, connectFailed?: (ep: Endpoint, error: Error) => void): SocketHandler<Endpoint> {
  return {
    open(socket) {
      if (!socket.data && sockets.open >= sockets.max) {
        sockets.refused++;
        if (Date.now() - lastRefusalLog > 5_000) {
          lastRefusalLog = Date.now();
          log.error("relay: the most sockets this process may hold are open (file limit less FD_RESERVE); refusing new connections", { open: sockets.open, reserve: FD_RESERVE, refused: sockets.refused });
        }
        return socket.terminate();
      }
      const ep = socket.data ?? create!(socket);
      socket.data = ep;
      ep.counted = true;
      sockets.open++;
      if (ep.closed) {
        // Abandoned before it opened (a connect timeout fired).
        socket.end();
        return;
      }
      ep.attach(socket);
      if (!verify) ep.onOpen?.(ep);
    },
    handshake: verify
      ? (socket, _success, authorizationError) => {
          const ep = socket.data;
          const refused = verify(socket, authorizationError);
          if (refused) {
            ep.onTlsError?.(ep, refused);
            socket.terminate();
          } else if (!ep.closed) ep.onOpen?.(ep);
        }
      : undefined,
    data(socket, chunk) {
      Endpoint.events.data(socket.data, chunk);
    },
    drain(socket) {
      Endpoint.events.drain(socket.data);
    },
    end(socket) {
      Endpoint.events.end(socket.data);
    },
    close(socket, err) {
      const ep = socket.data;
      if (!ep) return;
      if (ep.counted) {
        ep.counted = false;
        sockets.open--;
      }
      // An error here is a reset (ECONNRESET and the like): pass it on as one.
      Endpoint.events.closed(ep, !!err);
    },
    error(socket, err) {
      // A handler threw (a bug): never leave the connection half-handled.
      log.error("relay: handler error", { error: err?.message ?? String(err) });
      socket.terminate();
    },
    connectError(socket, error) {
      if (!socket.data) return;
      // Told before the close, so the owner can say why (refused, no such name) when it sees the close.
      connectFailed?.(socket.data, error);
      Endpoint.events.closed(socket.data, false);
    },
  };
}
