/**
 * Defaults of the config keys that the runtime modules also need, in one place that
 * imports nothing: the schemas read them here, and so do the modules that apply them.
 */

/** Exit code for a bad config file or bad flags. */
export const EXIT_CONFIG = 2;
/** Default failed logins from one address within the window that block it. */
export const LOGIN_FAILURE_LIMIT = 10;
/** Default window in seconds over which failed logins are counted. */
export const LOGIN_FAILURE_WINDOW_S = 60;
/** Default seconds an address stays blocked. */
export const LOGIN_BLOCK_S = 60;
/** Default seconds after which a silent peer's state is freed. */
export const UDP_IDLE_TIMEOUT_S = 60;
/** Default most public peers per app on the client; the least recently seen is evicted beyond it. */
export const UDP_MAX_PEERS = 1024;
/** Default receive buffer asked for each UDP socket, bytes: a burst of hundreds of datagrams fits (the usual system default, 208 KiB, overflowed at about 250). */
export const UDP_RECEIVE_BUFFER_BYTES = 4 << 20;
/** The ports apps may use when `allowPorts` is not set: every unprivileged port. */
export const DEFAULT_ALLOW_PORTS = "1024-65535";
/** Defaults for groups that the registration token creates (README, Security). */
export const REGISTRATION_MAX_GROUPS = 100;
export const REGISTRATION_MAX_APPS = 10;
/** Default seconds a vhost connection may take to send a request head: a slow sender (slowloris) is cut after it. */
export const VHOST_HEADER_TIMEOUT_S = 10;
/** Default seconds an idle keep-alive connection on a vhost port is kept (nginx's keepalive_timeout is 75). */
export const VHOST_IDLE_TIMEOUT_S = 60;
/** Default largest request head on a vhost port, bytes (nginx answers 431 past 8 KiB by default; 32 KiB leaves room for big cookies). */
export const VHOST_MAX_HEADER_BYTES = 32 * 1024;
/** Exchanges the request inspector keeps per inspected app (inspectRequests). */
export const INSPECT_REQUESTS = 200;
/** Bytes of each request and response body the inspector keeps (inspectBodyBytes). */
export const INSPECT_BODY_BYTES = 64 * 1024;
