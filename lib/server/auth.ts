/**
 * Who may log in, and which work connections belong to whom: the proofs of a
 * login and of a work hello, checked against the registry, counted by the
 * lockout. Each check returns a result that the control port turns into a refusal.
 */
import { ErrorCode, FrameType, loginProof, NAME_PATTERN, workProof, type DeclaredApp, type Message } from "../../protocol.ts";
import type { GroupRecord } from "../registry/types.ts";
import type { RegistryView } from "../registry/view.ts";
import { constantTimeEqual, generateToken } from "../secrets.ts";
import type { LoginGuard } from "../guard.ts";
import { log } from "../log.ts";
import type { Session } from "./session.ts";

/** The same sentence for a wrong token and an unknown group, so a stranger learns nothing. */
export const AUTH_FAILED = "authentication failed";
/** What a blocked address is told. */
export const BLOCKED = "too many failed logins from this address; try again later";
/** Most apps one login may declare: their statuses must fit in one LoginOk frame (64 KiB; see MAX_STATUS_ERROR_BYTES). */
export const MAX_DECLARED_APPS = 256;
/** Token used to compute a proof for unknown groups, so that both failures take the same time. */
const DUMMY_TOKEN = generateToken();

/** A refusal: the Error frame's code and message. */
export interface Refusal {
  readonly ok: false;
  readonly code: ErrorCode;
  readonly message: string;
}

/** Who is asking: the source address (for the lockout) and "ip:port" (for logs). */
export interface Caller {
  readonly ip: string;
  readonly addr: string;
}

type Login = Extract<Message, { type: FrameType.Login }>;
type WorkHello = Extract<Message, { type: FrameType.WorkHello }>;

const refuse = (code: ErrorCode, message: string): Refusal => ({ ok: false, code, message });

/** What is wrong with a list of declared apps (at a login or in a Declare frame), or null. */
export function declaredAppsProblem(apps: readonly DeclaredApp[]): string | null {
  // Bounded so that the answer (one status per declared app) always fits in a frame.
  if (apps.length > MAX_DECLARED_APPS) return `a login may declare at most ${MAX_DECLARED_APPS} apps`;
  if (apps.some((a) => !NAME_PATTERN.test(a.name))) return "app names must be 1-64 letters, digits, '_', '.' or '-'";
  return null;
}

/** Checks logins and work hellos. */
export class Auth {
  constructor(
    readonly registry: RegistryView,
    readonly guard: LoginGuard,
  ) {}

  /** A login answering challenge `nonce`: the group it proves, or why it is refused. `buffered`: bytes that came after it. */
  login(caller: Caller, nonce: Uint8Array, msg: Login, buffered: number): { ok: true; group: GroupRecord } | Refusal {
    // Checked again here: connections opened before the block must not keep guessing.
    if (this.guard.blocked(caller.ip)) return refuse(ErrorCode.Blocked, BLOCKED);
    const group = this.registry.get(msg.group);
    const expected = loginProof(group?.token ?? DUMMY_TOKEN, nonce, msg.group);
    if (!group || !constantTimeEqual(expected, msg.proof)) {
      log.warn("login failed", { group: msg.group, from: caller.addr, reason: group ? "wrong proof" : "unknown group" });
      this.guard.fail(caller.ip, "control port");
      return refuse(ErrorCode.AuthFailed, AUTH_FAILED);
    }
    // A correct token: not a failed login, and the client may retry (it is let in once the group is enabled).
    if (group.disabled) return refuse(ErrorCode.GroupDisabled, "the group is disabled on the server");
    if (buffered > 0) return refuse(ErrorCode.UnexpectedMessage, "data after login before the server answered");
    // Bounded so that the answer (one status per declared app) always fits in a frame.
    const bad = declaredAppsProblem(msg.apps);
    if (bad) return refuse(ErrorCode.MalformedFrame, bad);
    return { ok: true, group };
  }

  /** A work hello for `session` (undefined when its id is unknown): accepted, or why it is refused. */
  workHello(caller: Caller, session: Session | undefined, msg: WorkHello, buffered: number): { ok: true; session: Session } | Refusal {
    const expected = workProof(session?.group.token ?? DUMMY_TOKEN, msg.sessionId, msg.seq);
    if (this.guard.blocked(caller.ip)) return refuse(ErrorCode.Blocked, BLOCKED);
    if (!session || session.ended || !constantTimeEqual(expected, msg.proof)) {
      const live = !!session && !session.ended;
      log.warn("work connection refused", { from: caller.addr, reason: live ? "wrong proof" : "unknown or ended session" });
      // Only a wrong proof for a live session tries a token. A session that has just ended (a heartbeat
      // timeout, a takeover) still has its client's work connections in flight: counting them locked the
      // client's address (and everyone behind its NAT) out for loginBlockTime.
      if (live) this.guard.fail(caller.ip, "control port");
      return refuse(ErrorCode.AuthFailed, AUTH_FAILED);
    }
    // A valid proof seen before is a replay (or a very late duplicate): refused. Not counted as a failed
    // login: it guesses nothing, and a legitimate client's late hello must not lock out its address.
    if (!session.workSeqs.accept(msg.seq)) {
      log.warn("work connection refused", { from: caller.addr, reason: "sequence number already used or too old", group: session.group.name });
      return refuse(ErrorCode.AuthFailed, AUTH_FAILED);
    }
    if (buffered > 0) return refuse(ErrorCode.UnexpectedMessage, "data on a work connection before start");
    return { ok: true, session };
  }
}
