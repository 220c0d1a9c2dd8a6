/**
 * The server's view of the registry: every group in memory, read synchronously
 * where no wait is allowed (a login, the API's pages), and kept current by the
 * store's change announcements.
 */
import type { RegistryStore } from "./store.ts";
import type { GroupRecord, GroupSource, RegistryChange } from "./types.ts";

/** Groups by name, as last announced. */
export class RegistryView {
  readonly #groups = new Map<string, GroupRecord>();

  /** A view of `store`, loaded now and following its changes from then on. */
  static async of(store: RegistryStore): Promise<RegistryView> {
    const view = new RegistryView();
    for (const g of await store.list()) view.#groups.set(g.name, g);
    store.onChange((c) => view.apply(c));
    return view;
  }

  /** Applies one announced change. */
  apply(change: RegistryChange): void {
    if (change.kind === "deleted") this.#groups.delete(change.name);
    else this.#groups.set(change.group.name, change.group);
  }

  /** One group, or undefined. */
  get(name: string): GroupRecord | undefined {
    return this.#groups.get(name);
  }

  /** Every group, in name order. */
  list(): GroupRecord[] {
    return [...this.#groups.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Groups created by `source`. */
  countBy(source: GroupSource): number {
    let n = 0;
    for (const g of this.#groups.values()) if (g.source === source) n++;
    return n;
  }
}
