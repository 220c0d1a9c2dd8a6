/**
 * The live user connections of every app, so that a deleted app or group, or a
 * revoked token, can cut them, and the operator can list them and cut one.
 */
import type { Endpoint } from "../net/endpoint.ts";

/** One live user connection, as the API shows it. */
export interface ConnectionView {
  id: string;
  app: string;
  userAddr: string;
  /** Bytes from the user, and to the user. */
  bytesIn: number;
  bytesOut: number;
  since: string;
}

/** When a user came, and the id the API names it by. */
interface Entry {
  readonly id: number;
  readonly since: number;
}

/** User connections by group and app. */
export class LiveUsers {
  readonly #byApp = new Map<string, Map<Endpoint, Entry>>();
  #nextId = 1;

  /** Records a user of `group`/`app` until `delete`. */
  add(group: string, app: string, user: Endpoint): void {
    const key = `${group}/${app}`;
    let users = this.#byApp.get(key);
    if (!users) this.#byApp.set(key, (users = new Map()));
    users.set(user, { id: this.#nextId++, since: Date.now() });
  }

  /** Forgets a user that has closed. */
  delete(group: string, app: string, user: Endpoint): void {
    const key = `${group}/${app}`;
    const users = this.#byApp.get(key);
    if (!users) return;
    users.delete(user);
    if (users.size === 0) this.#byApp.delete(key);
  }

  #keys(group: string, app?: string): string[] {
    return app !== undefined ? [`${group}/${app}`] : [...this.#byApp.keys()].filter((k) => k.startsWith(`${group}/`));
  }

  /** Resets every user of one app, or of every app of `group`. */
  cut(group: string, app?: string): void {
    for (const key of this.#keys(group, app)) for (const user of [...(this.#byApp.get(key)?.keys() ?? [])]) user.reset();
  }

  /** Resets one user of `group` by its id; false when there is none. */
  cutOne(group: string, id: string): boolean {
    for (const key of this.#keys(group)) {
      for (const [user, e] of this.#byApp.get(key) ?? []) {
        if (String(e.id) !== id) continue;
        user.reset();
        return true;
      }
    }
    return false;
  }

  /** The live users of `group`, newest first, at most `limit`. */
  list(group: string, limit: number): ConnectionView[] {
    const out: (ConnectionView & { ms: number })[] = [];
    for (const key of this.#keys(group)) {
      const app = key.slice(group.length + 1);
      for (const [user, e] of this.#byApp.get(key) ?? []) {
        const addr = user.socket?.remoteAddress ?? "";
        out.push({ id: String(e.id), app, userAddr: addr, bytesIn: user.relayed, bytesOut: user.peer?.relayed ?? 0, since: new Date(e.since).toISOString(), ms: e.since });
      }
    }
    return out
      .sort((a, b) => b.ms - a.ms)
      .slice(0, limit)
      .map(({ ms: _, ...c }) => c);
  }

  /** How many users `group` has now. */
  count(group: string): number {
    let n = 0;
    for (const key of this.#keys(group)) n += this.#byApp.get(key)?.size ?? 0;
    return n;
  }

  /** Resets every user of every app. */
  cutAll(): void {
    for (const users of [...this.#byApp.values()]) for (const user of [...users.keys()]) user.reset();
  }
}
