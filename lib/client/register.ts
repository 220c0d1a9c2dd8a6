/** Self-registration: a client with `apiUrl` and `registrationToken` creates its group before its first login. */
import type { ClientConfig } from "../config/schema.ts";
import { log } from "../log.ts";

/**
 * Registers the group and its apps with `POST /api/groups`. True when there is nothing more
 * to do (registered, already known, refused for good, or nothing to register); false when
 * the attempt failed in a way that a retry may fix (the server unreachable, busy or failing).
 */
export async function register(config: ClientConfig, timeoutMs: number): Promise<boolean> {
  const { apiUrl, registrationToken, group } = config;
  if (!apiUrl || !registrationToken) return true;
  const url = new URL("/api/groups", apiUrl);
  try {
    const res = await fetch(url, {
      method: "POST",
      headers: { authorization: `Bearer ${registrationToken}`, "content-type": "application/json" },
      body: JSON.stringify({ name: group, token: config.token, apps: config.apps.map(({ localAddr: _l, proxyProtocol: _p, ...a }) => a) }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const body = (await res.json().catch(() => ({}))) as { error?: string };
    if (res.status === 201) log.info("group registered with the server", { group });
    else if (res.status === 409 && /already exists/.test(body.error ?? "")) log.debug("group already registered", { group });
    else if (res.status >= 500 || res.status === 429) {
      log.warn("self-registration failed; will retry", { group, status: res.status, error: body.error });
      return false;
    } else log.error("self-registration refused; logging in anyway", { group, status: res.status, error: body.error });
    // Registered, known, or refused for good (a wrong registrationToken, a bad app): do not ask again.
    return true;
  } catch (err) {
    log.warn("self-registration failed; will retry", { url: url.origin, error: (err as Error).message });
    return false;
  }
}
