/**
 * Where groups are kept: a store behind one asynchronous interface, so that a
 * store on another machine (PostgreSQL, for several servers as one) is a new
 * file beside sqlite.ts. Each change is announced once stored; the server's
 * view of the registry (view.ts) and its sessions react to the announcements.
 */
import type { HistoryStore } from "../metrics/history.ts";
import type { AppInput, GroupLimitsInput, GroupRecord, GroupSource, RegistryChange, RegistryError, RegistryResult } from "./types.ts";

/** A group as server.toml's `[[groups]]` gives it. */
export type ConfigGroup = { readonly name: string; readonly token: string; readonly apps: readonly AppInput[] } & GroupLimitsInput;

/** A listener of a store's changes; the change's writer waits for it (a route answers once sessions have applied it). */
export type ChangeListener = (change: RegistryChange) => void | Promise<void>;

/**
 * A registry store. A store whose database is on another machine (postgres.ts)
 * throws a RegistryError with code `unavailable` from a write it could not
 * make (the database is down or did not answer in time); `list` answers from
 * memory and never throws.
 */
export interface RegistryStore {
  /** Every group, in name order: what a view starts from. */
  list(): Promise<GroupRecord[]>;
  /** Registers a new group; fails when the name or a port is taken. */
  create(name: string, token: string, source: GroupSource, apps: readonly AppInput[], limits?: GroupLimitsInput): Promise<RegistryResult>;
  /** Replaces a group's apps (and its limits, when given); apps that asked for port 0 keep the port they had. */
  update(name: string, apps: readonly AppInput[], limits?: GroupLimitsInput): Promise<RegistryResult>;
  /** Replaces a group's token; false when there is no such group. */
  setToken(name: string, token: string): Promise<boolean>;
  /** Removes a group; false when it did not exist. */
  delete(name: string): Promise<boolean>;
  /** Makes the `config` groups equal to server.toml's; one error per group that could not be applied, its path naming the key. */
  syncConfig(groups: readonly ConfigGroup[]): Promise<RegistryError[]>;
  /** Where the traffic history is kept (in the same database, or the node's own file: postgres.ts). */
  history(): HistoryStore;
  /** Enables or disables a group (a disabled group may not log in); null when there is no such group. */
  setDisabled(name: string, disabled: boolean): Promise<GroupRecord | null>;
  /** Calls `listener` after every change, in order. */
  onChange(listener: ChangeListener): void;
  /** Releases the store. */
  close(): void;
}

/** The listeners of one store: each change is delivered to all, in order, and awaited. */
export class ChangeFeed {
  readonly #listeners: ChangeListener[] = [];

  /** Adds a listener. */
  add(listener: ChangeListener): void {
    this.#listeners.push(listener);
  }

  /** Delivers a change; resolves once every listener is done with it. */
  async emit(change: RegistryChange): Promise<void> {
    for (const l of this.#listeners) await l(change);
  }
}
