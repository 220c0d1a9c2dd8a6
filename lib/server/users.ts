/** The live user connections of every TCP app, so that a deleted app or group, or a revoked token, can cut them. */
import type { Endpoint } from "../net/endpoint.ts";

/** User connections by group and app. */
export class LiveUsers {
  readonly #byApp = new Map<string, Set<Endpoint>>();

  /** Records a user of `group`/`app` until `delete`. */
  add(group: string, app: string, user: Endpoint): void {
    const key = `${group}/${app}`;
    let set = this.#byApp.get(key);
    if (!set) this.#byApp.set(key, (set = new Set()));
    set.add(user);
  }

  /** Forgets a user that has closed. */
  delete(group: string, app: string, user: Endpoint): void {
    const key = `${group}/${app}`;
    const set = this.#byApp.get(key);
    if (!set) return;
    set.delete(user);
    if (set.size === 0) this.#byApp.delete(key);
  }

  /** Resets every user of one app, or of every app of `group`. */
  cut(group: string, app?: string): void {
    const keys = app !== undefined ? [`${group}/${app}`] : [...this.#byApp.keys()].filter((k) => k.startsWith(`${group}/`));
    for (const key of keys) for (const user of [...(this.#byApp.get(key) ?? [])]) user.reset();
  }

  /** Resets every user of every app. */
  cutAll(): void {
    for (const set of [...this.#byApp.values()]) for (const user of [...set]) user.reset();
  }
}
