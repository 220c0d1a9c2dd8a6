/**
 * The vhost router kept up to date one group at a time (VhostRouter.update): after any sequence of
 * creations, edits and deletions it routes every host and path exactly as a router built afresh from the
 * same groups would. Seeded, so a failure replays.
 */
import { describe, expect, test } from "bun:test";
import { VhostRouter } from "../lib/server/http/router.ts";
import { appDomains, appLocations } from "../lib/registry/domains.ts";
import type { AppRecord, GroupRecord } from "../lib/registry/types.ts";

const SEED = Number(process.env.ROUTER_SEED ?? 20261205);
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => ((x ^= x << 13), (x ^= x >>> 17), (x ^= x << 5), (x >>> 0) / 2 ** 32);
}

const DOMAINS = ["a.example.com", "b.example.com", "*.example.com", "*.b.example.com", "shop.test", "*.test"];
const LOCATIONS = ["/", "/api", "/api/v2", "/static"];
const HOSTS = ["a.example.com", "b.example.com", "x.b.example.com", "z.example.com", "shop.test", "q.test", "none.org", "grafana.tun.test", "app1.tun.test"];
const PATHS = ["/", "/api", "/api/v2/x", "/static/y", "/other"];

function app(name: string, r: () => number, i: number): AppRecord {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
  const type = r() < 0.8 ? "http" : "https";
  return {
    name,
    type,
    remotePort: 0,
    requestedPort: 0,
    allowIPs: [],
    denyIPs: [],
    maxConnections: 0,
    ...(r() < 0.4 ? { subdomain: pick(["grafana", "app1", `g${i}`]) } : {}),
    customDomains: Array.from({ length: 1 + Math.floor(r() * 2) }, () => pick(DOMAINS)),
    ...(type === "http" && r() < 0.5 ? { locations: [pick(LOCATIONS), pick(LOCATIONS)] } : {}),
  } as AppRecord;
}

function group(name: string, r: () => number, i: number): GroupRecord {
  return { name, apps: Array.from({ length: 1 + Math.floor(r() * 3) }, (_, k) => app(`app${k}`, r, i)) } as unknown as GroupRecord;
}

/** The (table, domain, location) keys a group claims; null when it claims one twice. The registry refuses such clashes (409), so the test never makes them. */
function claims(g: GroupRecord): string[] | null {
  const out = new Set<string>();
  for (const a of g.apps) {
    for (const d of appDomains(a, "tun.test")) {
      for (const loc of a.type === "https" ? [""] : appLocations(a)) {
        const k = `${a.type} ${d} ${loc}`;
        if (out.has(k)) return null;
        out.add(k);
      }
    }
  }
  return [...out];
}

/** Every lookup the two routers can be asked, as text (which group/app answers, or unknown). */
function answers(router: VhostRouter): string[] {
  const out: string[] = [];
  const show = (l: ReturnType<VhostRouter["http"]>) => (l.kind === "offline" ? `offline:${l.app}` : l.kind);
  for (const h of HOSTS) {
    out.push(`https ${h} ${show(router.https(h))} ${router.hasHttp(h)}`);
    for (const p of PATHS) out.push(`http ${h}${p} ${show(router.http(h, p))}`);
  }
  return out;
}

describe("VhostRouter.update", () => {
  test("after 2,000 random creations, edits and deletions, routes equal those built afresh from the same groups", () => {
    const r = rng(SEED);
    const live = new VhostRouter("tun.test");
    const groups = new Map<string, GroupRecord>();
    let checked = 0;
    let skipped = 0;
    for (let step = 0; step < 2000; step++) {
      const name = `g${Math.floor(r() * 12)}`;
      if (groups.has(name) && r() < 0.3) {
        groups.delete(name);
        live.update(name, undefined);
      } else {
        const g = group(name, r, step);
        const mine = claims(g);
        const others = new Set([...groups.values()].filter((o) => o.name !== name).flatMap((o) => claims(o)!));
        if (!mine || mine.some((k) => others.has(k))) skipped++;
        else {
          // Apps named after their group, so a lookup shows which group it reached.
          const named = { ...g, apps: g.apps.map((a) => ({ ...a, name: `${name}.${a.name}` })) } as unknown as GroupRecord;
          groups.set(name, named);
          live.update(name, named);
        }
      }
      if (step % 50 === 49) {
        const fresh = new VhostRouter("tun.test");
        fresh.rebuild([...groups.values()]);
        expect(answers(live), `step ${step} (ROUTER_SEED=${SEED})`).toEqual(answers(fresh));
        checked++;
      }
    }
    expect(checked).toBe(40);
    // Most steps change something (a clash is skipped, as the registry would refuse it).
    expect(skipped).toBeLessThan(1600);
    // The routes are not empty: some hosts answer (the comparison would pass trivially otherwise).
    expect(answers(live).filter((a) => a.includes("offline:")).length).toBeGreaterThan(0);
  });
});
