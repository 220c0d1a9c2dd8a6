/**
 * What the server changes in a request head on its way to the app and in a
 * response head on its way back: hop-by-hop headers, X-Forwarded-*, the
 * app's hostHeaderRewrite and header tables, and Basic authentication at the
 * edge (checked in constant time; the credentials never reach the app).
 */
import { headerTokens, setHeader, type Header, type RequestHead, type ResponseHead } from "../../http/head.ts";
import type { AppRecord } from "../../registry/types.ts";
import { sameSecret } from "../../secrets.ts";

/** Headers that describe one hop (RFC 9110 §7.6.1), beside those the Connection header names. */
const HOP_BY_HOP = ["keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization"];

/** Removes the hop-by-hop headers; `keep` names Connection options that go on (upgrade). */
function dropHopByHop(headers: Header[], keep: readonly string[]): void {
  const listed = headerTokens(headers, "connection").filter((t) => !keep.includes(t) && t !== "close" && t !== "keep-alive");
  for (const name of [...HOP_BY_HOP, ...listed]) setHeader(headers, name, null);
}

/** Whether an Authorization header carries the app's httpUser and httpPassword. */
export function authorized(value: string | undefined, app: AppRecord): boolean {
  const m = value ? /^basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(value) : null;
  const given = m ? Buffer.from(m[1]!, "base64").toString("utf8") : "";
  // Both compared whatever the first gives, so the time says nothing about which was wrong.
  const colon = given.indexOf(":");
  const userOk = sameSecret(colon >= 0 ? given.slice(0, colon) : "", app.httpUser);
  const passOk = sameSecret(colon >= 0 ? given.slice(colon + 1) : "", app.httpPassword);
  return userOk && passOk;
}

/** The request head as the app gets it. */
export function rewriteRequest(head: RequestHead, app: AppRecord, ctx: { authority: string; secure: boolean; userAddr: string }): RequestHead {
  const headers = head.headers;
  dropHopByHop(headers, ["upgrade"]);
  if (app.httpUser !== undefined) setHeader(headers, "authorization", null);
  const forwarded = headers.filter(([k]) => k.toLowerCase() === "x-forwarded-for").map(([, v]) => v);
  setHeader(headers, "x-forwarded-for", [...forwarded, ctx.userAddr].join(", "));
  setHeader(headers, "x-forwarded-proto", ctx.secure ? "https" : "http");
  setHeader(headers, "x-forwarded-host", ctx.authority);
  setHeader(headers, "host", app.hostHeaderRewrite ?? ctx.authority);
  for (const [k, v] of Object.entries(app.requestHeaders?.set ?? {})) setHeader(headers, k, v);
  return head;
}

/** The response head as the user gets it; `close` when the connection ends after it. */
export function rewriteResponse(head: ResponseHead, app: AppRecord, close: boolean): ResponseHead {
  const headers = head.headers;
  dropHopByHop(headers, []);
  setHeader(headers, "connection", close ? "close" : null);
  for (const [k, v] of Object.entries(app.responseHeaders?.set ?? {})) setHeader(headers, k, v);
  return head;
}
