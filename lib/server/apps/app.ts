/**
 * The public side of an app: what the session opens for each app it serves.
 * One kind per file (tcp.ts, udp.ts), chosen by the app's type in OPENERS:
 * a new kind of app is a new file and one line there, not a branch in the session.
 */
import type { FrameReader } from "../../../protocol.ts";
import type { AppCounters } from "../../metrics/counters.ts";
import type { Endpoint } from "../../net/endpoint.ts";
import type { AppRecord } from "../../registry/types.ts";
import type { ServerSettings } from "../settings.ts";
import type { Throttle } from "../../net/throttle.ts";

/** What a public app needs from the session that serves it. */
export interface AppHost {
  /** The group's name, for logs and counters. */
  readonly groupName: string;
  /** The server's settings (address, UDP timeouts and buffers, the live users). */
  readonly settings: ServerSettings;
  /** The group's bandwidth budgets, each way, that every app's own budget draws on too (null: no group limit). */
  readonly groupLimit: { readonly up: Throttle | null; readonly down: Throttle | null };
  /** The counters of one of the group's apps. */
  stats(app: string): AppCounters;
  /** A TCP user passed the app's own checks: find it a work connection. */
  acceptUser(user: Endpoint, app: string): void;
  /** An app that keeps a work connection for good (UDP) needs one. */
  wantWork(app: PublicApp): void;
}

/** An app served at a public port. */
export interface PublicApp {
  readonly record: AppRecord;
  /** The address users reach it at, when bindAddr names one (not a wildcard); otherwise it is looked up per user. */
  readonly publicAddr?: string;
  /** The bandwidth limit of bytes toward users (the work connection's side of each stream spends it), if any. */
  readonly downLimit?: Throttle | null;
  /** For an app that keeps a work connection for good (UDP; the session asks for one as soon as it serves the app): takes `work` once its StartWork has gone out. */
  bindWork?(work: Endpoint, reader: FrameReader): void;
  /** A UDP app: datagrams of peers another node of a cluster received come on `ep` (frames after `first`), replies go back on it. */
  relay?(ep: Endpoint, first: Uint8Array): void;
  /** Applies a changed record in place (access lists, limits) without closing the port; false when it needs reopening (another port or type). */
  update(rec: AppRecord): boolean;
  /** Stops accepting; established streams go on until they end. */
  close(): void;
}

/** Opens an app's public port; a string says why it cannot be served. */
export type OpenApp = (rec: AppRecord, host: AppHost) => PublicApp | string | Promise<PublicApp | string>;
