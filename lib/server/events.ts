/**
 * Recent events of each group, for the operator: logins, takeovers, going
 * offline, failed logins with their source address, refusals with their
 * reason, and the administrator's actions. Bounded per group; repeats of the
 * same event within COALESCE_MS are counted on one entry, so a flood of
 * refusals costs one entry, not one per user.
 */

/** Most events kept per group (oldest dropped first). */
export const MAX_EVENTS_PER_GROUP = 100;
/** Repeats within this time become a count on the previous entry. */
export const COALESCE_MS = 10_000;

export type EventKind = "login" | "takeover" | "offline" | "login_failed" | "refused" | "kicked" | "disabled" | "enabled" | "token_changed" | "apps_changed";

/** One event, as the API shows it. */
export interface GroupEvent {
  at: string;
  kind: EventKind;
  message: string;
  addr?: string;
  app?: string;
  reason?: string;
  /** How many times it happened within COALESCE_MS of each other (absent: once). */
  count?: number;
}

type Stored = GroupEvent & { ms: number };

/** Events by group. */
export class GroupEvents {
  readonly #byGroup = new Map<string, Stored[]>();

  /** Records an event of `group` (`n` occurrences at once). */
  add(group: string, e: Omit<GroupEvent, "at" | "count">, n = 1, now = Date.now()): void {
    let list = this.#byGroup.get(group);
    if (!list) this.#byGroup.set(group, (list = []));
    const last = list.at(-1);
    if (last && now - last.ms < COALESCE_MS && last.kind === e.kind && last.app === e.app && last.reason === e.reason && last.addr === e.addr) {
      last.count = (last.count ?? 1) + n;
      last.ms = now;
      last.at = new Date(now).toISOString();
      return;
    }
    list.push({ ...e, at: new Date(now).toISOString(), ms: now, ...(n > 1 ? { count: n } : {}) });
    if (list.length > MAX_EVENTS_PER_GROUP) list.splice(0, list.length - MAX_EVENTS_PER_GROUP);
  }

  /** The events of `group`, oldest first (at most `limit`, the newest). */
  of(group: string, limit = MAX_EVENTS_PER_GROUP): GroupEvent[] {
    return (this.#byGroup.get(group) ?? []).slice(-limit).map(({ ms: _, ...e }) => ({ ...e }));
  }

  /** Forgets a deleted group's events. */
  forget(group: string): void {
    this.#byGroup.delete(group);
  }
}
