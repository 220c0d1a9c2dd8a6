/**
 * Counters of every app: numbers only, no live sockets (those are in
 * lib/server/users.ts), so the API and, next, Prometheus can read them freely.
 * They outlive sessions and go with the app.
 */
import type { Counters } from "../net/endpoint.ts";

/** Traffic and refusals of one app. `connections`, `bytesIn` and `bytesOut` are kept by the relay as it moves bytes. */
export interface AppCounters extends Counters {
  /** Users refused by allowIPs/denyIPs. */
  denied: number;
  /** Users refused because the app was at maxConnections. */
  overLimit: number;
  /** UDP datagrams dropped: too large, no or a backed-up work connection, replies to peers that never sent. */
  dropped: number;
  /** Users refused because maxPendingUsers were already waiting for a work connection. */
  queueFull: number;
  /** UDP datagrams the kernel dropped at the app's public socket (its receive buffer was full); also in `dropped`. */
  kernelDropped: number;
  /** HTTP requests routed to the app (HTTP apps only). */
  requests: number;
  /** Users accepted since the app was first counted (TCP and HTTP: connections; UDP: new peers); kept across restarts (history.ts). */
  accepted: number;
  /** UDP datagrams relayed from peers to the app, and from the app back to peers. */
  datagramsIn: number;
  datagramsOut: number;
}

/** The counters of every app, by group and app name. */
export class Metrics {
  readonly #apps = new Map<string, AppCounters>();

  /** The counters of one app, created at zero on first use. */
  app(group: string, app: string): AppCounters {
    const key = `${group}/${app}`;
    let c = this.#apps.get(key);
    if (!c) this.#apps.set(key, (c = { connections: 0, bytesIn: 0, bytesOut: 0, denied: 0, overLimit: 0, dropped: 0, queueFull: 0, kernelDropped: 0, requests: 0, accepted: 0, datagramsIn: 0, datagramsOut: 0 }));
    return c;
  }

  /** The counters of one app, if it has any. */
  peek(group: string, app: string): AppCounters | undefined {
    return this.#apps.get(`${group}/${app}`);
  }

  /** Forgets the counters of one app, or of every app of `group`. */
  forget(group: string, app?: string): void {
    if (app !== undefined) this.#apps.delete(`${group}/${app}`);
    else for (const key of [...this.#apps.keys()]) if (key.startsWith(`${group}/`)) this.#apps.delete(key);
  }

  /** Every app's counters, as [group, app, counters]. */
  *entries(): Iterable<[string, string, AppCounters]> {
    for (const [key, c] of this.#apps) {
      const slash = key.indexOf("/");
      yield [key.slice(0, slash), key.slice(slash + 1), c];
    }
  }

  /** The apps of `group` that have counters. */
  appsOf(group: string): string[] {
    const prefix = `${group}/`;
    return [...this.#apps.keys()].filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length));
  }
}
