/**
 * Where one request on a vhost port goes: its Host (or absolute-form target)
 * and path to an app through the router, then the app's own checks (allowIPs
 * and denyIPs, maxConnections, Basic auth). A refusal names the status and
 * the sentence of the server's own page; refusals by the app's checks are
 * counted on its stats.
 */
import { header, type RequestHead } from "../../http/head.ts";
import { log } from "../../log.ts";
import { hostOf } from "./input.ts";
import { authorized } from "./rewrite.ts";
import type { HttpTarget, VhostRouter } from "./router.ts";

/** Why a request is answered by the server itself. */
export interface Refusal {
  readonly status: number;
  readonly message: string;
  readonly headers?: [string, string][];
}

/** The app a request goes to and the authority the user named, or why it is refused. `head.target` loses an absolute form's scheme and host. */
export function routeRequest(head: RequestHead, router: VhostRouter, userAddr: string, fields: () => Record<string, unknown>): { target: HttpTarget; authority: string } | Refusal {
  const refuse = (status: number, message: string, headers?: [string, string][]): Refusal => ({ status, message, headers });
  const hosts = head.headers.filter(([k]) => k.length === 4 && k.toLowerCase() === "host");
  if (hosts.length > 1) return refuse(400, "the request has more than one Host header");
  let authority = hosts[0]?.[1];
  // Absolute form ("GET http://host/path"), as a client talking to a proxy sends: the target's host wins (RFC 9112 §3.2.2).
  const abs = /^https?:\/\/([^/?#]*)([^#]*)$/i.exec(head.target);
  if (abs) {
    authority = abs[1];
    head.target = abs[2] || "/";
  }
  if (head.method === "CONNECT") return refuse(501, "CONNECT is not served here: this port serves web apps by domain");
  if (!authority) return refuse(400, "the request has no Host header: this port serves apps by domain");
  const host = hostOf(authority);
  if (!host) return refuse(400, "the Host header is not a host name");
  const path = head.target === "*" ? "/" : head.target;
  const found = router.http(host, path);
  if (found.kind === "unknown") return refuse(404, `No app is served at ${host}.`);
  if (found.kind === "offline") return refuse(502, `The tunnel for ${host} is offline: its client is not connected.`);
  const target = found.target;
  const refusal = target.admit(userAddr);
  if (refusal) {
    if (refusal.status === 403) target.stats.denied++;
    else target.stats.overLimit++;
    log.debug("vhost: request refused", { ...fields(), host, status: refusal.status, reason: refusal.reason });
    return refuse(refusal.status, refusal.status === 403 ? "Your address may not reach this app." : "The app is serving as many connections as it may; try again later.");
  }
  if (target.record.httpUser !== undefined && !authorized(header(head.headers, "authorization"), target.record)) {
    return refuse(401, "This app needs a user name and password.", [["www-authenticate", 'Basic realm="warren", charset="UTF-8"']]);
  }
  return { target, authority };
}
