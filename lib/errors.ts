/**
 * The one error type of Warren: a code, a message a person can act on, the config
 * key or API field it concerns (`path`), and its `cause`. It is turned into an exit
 * code, a log line or an HTTP response only at the edge (server.ts, client.ts, the
 * API's onError). The wire has its own result type (protocol.ts's ProtocolError),
 * since a decoder returns results rather than throwing.
 */
export class WarrenError<C extends string = string> extends Error {
  constructor(
    readonly code: C,
    message: string,
    readonly path?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "WarrenError";
  }
}
