/** The server-wide settings a session, its pool and its apps read (the Hub holds them; tests lower some live). */
import type { Vhosts } from "./http/edge.ts";
import type { LiveUsers } from "./users.ts";

/** Settings of one server, read live (not copied), so a value a test lowers applies at once. */
export interface ServerSettings {
  readonly bindAddr: string;
  readonly poolSize: number;
  readonly userConnTimeoutMs: number;
  readonly maxPendingUsers: number;
  readonly udpIdleTimeoutMs: number;
  /** Receive buffer asked for each UDP socket (udpReceiveBuffer). */
  readonly udpReceiveBuffer: number;
  /** How long an unanswered OpenWork counts as in flight: WORK_REQUEST_TIMEOUT_MS, lowered only by tests. */
  readonly workRequestTimeoutMs: number;
  /** The live user connections of every TCP app. */
  readonly users: LiveUsers;
  /** The shared HTTP and HTTPS ports, when the server has them (http/edge.ts). */
  readonly vhosts: Vhosts | null;
}
