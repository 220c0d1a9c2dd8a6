/**
 * Which app answers a request on the vhost ports. Routes come from the
 * registry (every group's HTTP and HTTPS apps, online or not, so that a known
 * name whose group is offline gets "tunnel offline" rather than "unknown
 * host"); the apps an online session serves bind themselves here (apps/http.ts).
 * Order: the exact domain, then the most specific wildcard ("*.a.example.com"
 * before "*.example.com"), then the longest matching location.
 */
import type { Endpoint } from "../../net/endpoint.ts";
import type { AppCounters } from "../../metrics/counters.ts";
import { appDomains, appLocations } from "../../registry/domains.ts";
import type { AppRecord, GroupRecord } from "../../registry/types.ts";

/** An HTTP or HTTPS app being served by an online session: what a vhost connection needs of it. */
export interface HttpTarget {
  readonly group: string;
  readonly record: AppRecord;
  readonly stats: AppCounters;
  /** Null when a user at `addr` may be served now; otherwise the status and why (allowIPs/denyIPs: 403, maxConnections: 503). */
  admit(addr: string): { status: 403 | 503; reason: string } | null;
  /** Opens a stream to the local app for `user` (an endpoint whose transport is an Upstream); its close is counted. */
  open(user: Endpoint): void;
}

/** One route: a domain (and for HTTP a location) to a group's app. */
interface Route {
  readonly group: string;
  readonly app: string;
  readonly location: string;
}

/** What a request's host and path lead to. */
export type Lookup = { readonly kind: "unknown" } | { readonly kind: "offline"; readonly app: string } | { readonly kind: "app"; readonly target: HttpTarget };

/** Routes of one kind (HTTP by domain and location, HTTPS by domain): domain -> routes, longest location first. */
class Table {
  readonly #byDomain = new Map<string, Route[]>();

  add(domain: string, route: Route): void {
    const list = this.#byDomain.get(domain) ?? [];
    list.push(route);
    list.sort((a, b) => b.location.length - a.location.length);
    this.#byDomain.set(domain, list);
  }

  /** Drops `group`'s routes at `domain`. */
  remove(domain: string, group: string): void {
    const list = this.#byDomain.get(domain)?.filter((r) => r.group !== group);
    if (list?.length) this.#byDomain.set(domain, list);
    else this.#byDomain.delete(domain);
  }

  /** The route for `host` (lower-case, no port) and `path` (null: any): exact name first, then wildcards from the most specific. */
  find(host: string, path: string | null): Route | null {
    const exact = this.#match(this.#byDomain.get(host), path);
    if (exact) return exact;
    for (let dot = host.indexOf("."); dot >= 0; dot = host.indexOf(".", dot + 1)) {
      const hit = this.#match(this.#byDomain.get(`*${host.slice(dot)}`), path);
      if (hit) return hit;
    }
    return null;
  }

  #match(routes: Route[] | undefined, path: string | null): Route | null {
    if (!routes) return null;
    if (path === null) return routes[0] ?? null;
    for (const r of routes) if (path.startsWith(r.location)) return r;
    return null;
  }
}

/** The vhost routes of one server. */
export class VhostRouter {
  #http = new Table();
  #https = new Table();
  /** "group/app" -> the app its online session serves. */
  readonly #live = new Map<string, HttpTarget>();
  /** Group -> the domains its routes use in each table: a change re-routes that group alone. */
  #domains = new Map<string, { http: string[]; https: string[] }>();

  constructor(readonly subdomainHost: string | null) {}

  /** Builds the routes from every group (at start). */
  rebuild(groups: readonly GroupRecord[]): void {
    this.#http = new Table();
    this.#https = new Table();
    this.#domains = new Map();
    for (const g of groups) this.#add(g);
  }

  /**
   * After a registry change: the routes of group `name` become those of `group` (undefined: deleted). One group's
   * work, not every group's: rebuilding all routes at each change made creating N groups cost O(N²).
   */
  update(name: string, group: GroupRecord | undefined): void {
    const was = this.#domains.get(name);
    if (was) {
      for (const d of was.http) this.#http.remove(d, name);
      for (const d of was.https) this.#https.remove(d, name);
      this.#domains.delete(name);
    }
    if (group) this.#add(group);
  }

  #add(g: GroupRecord): void {
    const used = { http: [] as string[], https: [] as string[] };
    for (const a of g.apps) {
      if (a.type !== "http" && a.type !== "https") continue;
      for (const d of appDomains(a, this.subdomainHost)) {
        if (a.type === "https") {
          this.#https.add(d, { group: g.name, app: a.name, location: "" });
          used.https.push(d);
        } else {
          for (const location of appLocations(a)) this.#http.add(d, { group: g.name, app: a.name, location });
          used.http.push(d);
        }
      }
    }
    if (used.http.length || used.https.length) this.#domains.set(g.name, used);
  }

  /** An online session serves `target` from now on. */
  bind(target: HttpTarget): void {
    this.#live.set(`${target.group}/${target.record.name}`, target);
  }

  /** `target` is no longer served (only if it is still the one bound: a replacement may have bound already). */
  unbind(target: HttpTarget): void {
    const key = `${target.group}/${target.record.name}`;
    if (this.#live.get(key) === target) this.#live.delete(key);
  }

  /** The app `group`/`app` as its online session serves it (the inspector's replay); undefined while offline. */
  target(group: string, app: string): HttpTarget | undefined {
    return this.#live.get(`${group}/${app}`);
  }

  /** The HTTP app for a request's host (lower-case, without port) and path. */
  http(host: string, path: string): Lookup {
    return this.#resolve(this.#http.find(host, path));
  }

  /** The HTTPS (passthrough) app for a TLS server name. */
  https(serverName: string): Lookup {
    return this.#resolve(this.#https.find(serverName, ""));
  }

  /** Whether some HTTP app answers at `host` (any location): whether TLS may be ended for it. */
  hasHttp(host: string): boolean {
    return this.#http.find(host, null) !== null;
  }

  #resolve(route: Route | null): Lookup {
    if (!route) return { kind: "unknown" };
    const target = this.#live.get(`${route.group}/${route.app}`);
    return target ? { kind: "app", target } : { kind: "offline", app: route.app };
  }
}
