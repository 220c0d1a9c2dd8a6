/**
 * Domains of HTTP and HTTPS apps: which names an app answers at, and who may
 * claim them. A domain belongs to one group (a tenant's name is not served by
 * another's app); within the group, an HTTP app owns a domain with a location,
 * an HTTPS app (routed by TLS SNI, which has no path) the domain alone.
 */
import { RegistryError, servedByDomain, type AppRecord } from "./types.ts";

/** The domains in play, as a store knows them. */
export interface DomainSpace {
  /** The server's subdomainHost: `subdomain = "x"` is served at "x.<subdomainHost>"; null when not set. */
  readonly subdomainHost: string | null;
  /** The group whose apps claim `domain` (lower-case, "*." for wildcards), if any. */
  domainOwner(domain: string): string | undefined;
}

/** The domains an app answers at, lower-case: its subdomain under `subdomainHost`, then its customDomains. */
export function appDomains(a: Pick<AppRecord, "type" | "subdomain" | "customDomains">, subdomainHost: string | null): string[] {
  if (!servedByDomain(a.type)) return [];
  const out: string[] = [];
  if (a.subdomain !== undefined && subdomainHost) out.push(`${a.subdomain}.${subdomainHost}`.toLowerCase());
  for (const d of a.customDomains ?? []) out.push(d.toLowerCase());
  return out;
}

/** The path prefixes an HTTP app answers under. */
export function appLocations(a: Pick<AppRecord, "locations">): readonly string[] {
  return a.locations?.length ? a.locations : ["/"];
}

/** Checks the domains of a group's apps: none claimed by another group, none twice in this one, subdomains only with a subdomainHost. */
export function checkDomains(space: DomainSpace, group: string, apps: readonly Pick<AppRecord, "name" | "type" | "subdomain" | "customDomains" | "locations">[]): RegistryError | null {
  const mine = new Map<string, string>(); // "kind domain location" -> app name
  for (const [i, a] of apps.entries()) {
    if (!servedByDomain(a.type)) continue;
    if (a.subdomain !== undefined && !space.subdomainHost) {
      return new RegistryError("no_subdomain_host", `the server has no subdomainHost, so app "${a.name}" cannot be served at a subdomain; give it customDomains instead`, `apps[${i}].subdomain`);
    }
    for (const d of appDomains(a, space.subdomainHost)) {
      const key = a.subdomain !== undefined && d === `${a.subdomain}.${space.subdomainHost}`.toLowerCase() ? `apps[${i}].subdomain` : `apps[${i}].customDomains`;
      const owner = space.domainOwner(d);
      // Another tenant's name: which group holds it is not for this caller to learn.
      if (owner !== undefined && owner !== group) return new RegistryError("domain_taken", `domain ${d} is taken by another group`, key);
      const paths = a.type === "http" ? appLocations(a) : [""];
      for (const p of paths) {
        const k = `${a.type} ${d} ${p}`;
        const other = mine.get(k);
        if (other !== undefined) {
          return new RegistryError("domain_taken", `domain ${d}${p ? ` with location ${p}` : ""} is claimed by both "${other}" and "${a.name}"`, key);
        }
        mine.set(k, a.name);
      }
    }
  }
  return null;
}
