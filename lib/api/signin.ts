/**
 * Dashboard sign-in: a token (and, for a group's owner, the group's name)
 * traded for a cookie session. The cookie is HttpOnly, SameSite=Strict and
 * Secure under apiTls; every request that changes something must also carry
 * the session's CSRF token in a header, which a form on another site cannot
 * send. Sessions live in memory: a restart signs everyone out.
 */
import { Hono, type Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import * as v from "valibot";
import { generateToken, sameSecret } from "../secrets.ts";
import type { Hub } from "../server/hub.ts";
import { log } from "../log.ts";
import { parseBody } from "./body.ts";
import { HttpError } from "./errors.ts";
import type { ApiEnv, ApiSecrets } from "./auth.ts";

/** The session cookie's name. */
export const SESSION_COOKIE = "warren_session";
/** How long a dashboard session lasts after sign-in. */
export const SIGNIN_TTL_MS = 12 * 3600_000;
/** Most dashboard sessions at once (the oldest is signed out to make room). */
export const MAX_SIGNINS = 1000;

/** Who a dashboard session is. */
export interface SignIn {
  readonly role: "admin" | "owner";
  /** The group of an owner; null for the admin. */
  readonly group: string | null;
  readonly csrf: string;
  readonly expires: number;
}

/** Body of POST /ui/login. */
export const SignInBody = v.strictObject({
  token: v.pipe(v.string("must be a string"), v.minLength(1, "is required"), v.maxLength(256, "is too long")),
  group: v.optional(v.pipe(v.string("must be a string"), v.maxLength(64, "is too long"))),
});

/** The dashboard sessions of one server. */
export class SignIns {
  readonly #byId = new Map<string, SignIn>();

  /** A new session; its id goes in the cookie, never anywhere else. */
  create(role: SignIn["role"], group: string | null, now = Date.now()): [id: string, s: SignIn] {
    // A Map iterates in insertion order: the first entry is the oldest session.
    if (this.#byId.size >= MAX_SIGNINS) this.#byId.delete(this.#byId.keys().next().value!);
    const id = generateToken();
    const s: SignIn = { role, group, csrf: generateToken(), expires: now + SIGNIN_TTL_MS };
    this.#byId.set(id, s);
    return [id, s];
  }

  /** The live session with this id, if any. */
  get(id: string | undefined, now = Date.now()): SignIn | undefined {
    if (!id) return undefined;
    const s = this.#byId.get(id);
    if (s && s.expires <= now) {
      this.#byId.delete(id);
      return undefined;
    }
    return s;
  }

  /** Signs a session out. */
  delete(id: string | undefined): void {
    if (id) this.#byId.delete(id);
  }

  /** Signs out every owner of `group` but `keep` (its token changed, or it was deleted). */
  endGroup(group: string, keep?: string): void {
    for (const [id, s] of this.#byId) if (s.group === group && id !== keep) this.#byId.delete(id);
  }

  get size(): number {
    return this.#byId.size;
  }
}

/** The caller's dashboard session id, from its cookie. */
export function sessionId(c: Context): string | undefined {
  return getCookie(c, SESSION_COOKIE);
}

/** The sign-in routes under /ui: login, logout, and who is signed in. */
export function signinRoutes(hub: Hub, secrets: ApiSecrets, signins: SignIns, secureCookies: boolean, clientIp: (c: Context) => string): Hono<ApiEnv> {
  const ui = new Hono<ApiEnv>();
  const answer = (s: SignIn) => ({ role: s.role, group: s.group, csrf: s.csrf });

  ui.post("/login", async function signIn(c) {
    const ip = clientIp(c);
    // The same lockout as the control port and the bearer tokens: a guess here is a guess there.
    if (hub.guard.blocked(ip)) throw new HttpError(429, { error: "too many failed logins from this address; try again later" });
    const body = await parseBody(c, SignInBody);
    const group = body.group?.trim() ? hub.registry.get(body.group.trim()) : undefined;
    let role: SignIn["role"] | null = null;
    if (!body.group?.trim()) role = sameSecret(body.token, secrets.adminToken) ? "admin" : null;
    // An unknown group is checked against a token that cannot match, so both failures take the same time.
    else role = sameSecret(body.token, group?.token ?? `\0${secrets.adminToken}`) && group ? "owner" : null;
    if (!role) {
      hub.guard.fail(ip, "dashboard");
      log.warn("dashboard sign-in failed", { from: ip, group: body.group?.trim() || "(administrator)" });
      throw new HttpError(401, { error: body.group?.trim() ? "wrong group name or token" : "wrong administrator token (leave the group empty only for the admin token)" });
    }
    const [id, s] = signins.create(role, role === "owner" ? group!.name : null);
    setCookie(c, SESSION_COOKIE, id, { httpOnly: true, sameSite: "Strict", secure: secureCookies, path: "/", maxAge: SIGNIN_TTL_MS / 1000 });
    log.info("dashboard sign-in", { from: ip, as: role === "admin" ? "administrator" : `owner of ${s.group}` });
    return c.json(answer(s));
  });

  ui.post("/logout", function signOut(c) {
    signins.delete(sessionId(c));
    deleteCookie(c, SESSION_COOKIE, { path: "/", secure: secureCookies, httpOnly: true, sameSite: "Strict" });
    return c.body(null, 204);
  });

  ui.get("/me", function whoAmI(c) {
    const s = signins.get(sessionId(c));
    if (!s) throw new HttpError(401, { error: "not signed in" });
    return c.json(answer(s));
  });
  return ui;
}
