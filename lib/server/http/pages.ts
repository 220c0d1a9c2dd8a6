/**
 * The responses the vhost ports give themselves: unknown host, tunnel offline,
 * bad request and the rest. Each is a small complete HTTP/1.1 response that
 * closes the connection, names the problem, and says nothing internal (no
 * group, no address, no stack): only what the user sent, HTML-escaped.
 */

const REASONS: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  408: "Request Timeout",
  431: "Request Header Fields Too Large",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  505: "HTTP Version Not Supported",
};

/** Escapes text for HTML: a Host header is the user's, and may hold anything the parser let through. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A complete response with a short HTML page; the connection closes after it. */
export function errorResponse(status: number, message: string, extraHeaders: readonly [string, string][] = []): Uint8Array {
  const reason = REASONS[status] ?? "Error";
  const body = `<!doctype html>\n<html><head><meta charset="utf-8"><title>${status} ${reason}</title></head>\n<body><h1>${status} ${reason}</h1>\n<p>${escapeHtml(message)}</p>\n<hr><p>warren</p></body></html>\n`;
  const bytes = Buffer.from(body, "utf8");
  let head = `HTTP/1.1 ${status} ${reason}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: ${bytes.length}\r\ncache-control: no-store\r\nx-content-type-options: nosniff\r\nconnection: close\r\n`;
  for (const [k, v] of extraHeaders) head += `${k}: ${v}\r\n`;
  return Buffer.concat([Buffer.from(head + "\r\n", "latin1"), bytes]);
}
