/** Address parsing shared by the config schemas and the runtime: pure functions, no state. */
import ipaddr from "ipaddr.js";

/** Parses an address or CIDR ("10.0.0.0/8", "::1", "192.168.1.7"); null when malformed. */
export function parseCidr(s: string): [ipaddr.IPv4 | ipaddr.IPv6, number] | null {
  try {
    if (s.includes("/")) return ipaddr.parseCIDR(s);
    const a = ipaddr.parse(s);
    return [a, a.kind() === "ipv4" ? 32 : 128];
  } catch {
    return null;
  }
}

/** Parses "host:port" or "[v6]:port"; null when malformed. */
export function parseHostPort(s: string): { host: string; port: number } | null {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(s);
  if (!m) return null;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  return { host: (m[1] ?? m[2])!, port };
}
