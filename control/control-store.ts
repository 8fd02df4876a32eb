/**
 * What the engine and main.ts need of a store: the state dir (store.ts) and etcd (etcd-store.ts) both
 * give it, with the same guarantee: a change is acknowledged only once it and its audit entries are
 * durable, and a failed write (StoreWriteError: 503 with Retry-After) leaves nothing behind.
 */
import type { AuditPage, AuditQuery } from './audit-query.ts'
import { ApiError } from './errors.ts'
import type { AuditDraft, AuditEntry, ControlState, RouteRecord, StoreObserver } from './store.ts'

/**
 * What binds a leader's write to its lead (etcd): the election key and its create revision. A write
 * that carries it fails, writing nothing, once the key is gone (the lease ran out) or is another's.
 */
export interface Fence {
  readonly key: string
  readonly createRevision: number
}

/** A change written by another replica, seen on the store's watch: its audit entry and the route after it. */
export type RemoteEntry = AuditEntry & { readonly record?: RouteRecord | null }

/** A fenced write refused: this replica does not lead (any more); nothing was written. */
export class NotLeaderError extends Error {
  constructor(why: string) {
    super(`not the leader: ${why}; nothing was written`)
  }
}

/**
 * A write refused because another replica changed the state first (etcd: a failed compare); the
 * store has caught up with that change, so the engine decides the command again (an If-Match the
 * change made stale is then a 412). Past its tries (engine.ts DECIDE_TRIES), this answers: 412.
 */
export class StaleStateError extends ApiError {
  constructor() {
    super(
      'version_mismatch',
      'the state in etcd changed since this control read it (another writer); GET the route and retry with its ETag',
    )
  }
}

export interface ControlStore {
  /** The state every acknowledged change left (etcd: and every change seen on its watch). */
  readonly state: ControlState
  /** Make `next` and its audit entries durable, as one change; `now`: the entries' time. */
  commit(
    next: ControlState,
    drafts: readonly AuditDraft[],
    now?: number,
    fence?: Fence | null,
  ): Promise<AuditEntry[]>
  /**
   * Resolve once `state` holds every change the store had when called (etcd: a quorum read, then the
   * watch brings what it named; StoreWriteError when that cannot be done in time). Absent: always so.
   */
  current?(): Promise<void>
  /** Append audit entries that change no state (refused calls). */
  append(drafts: readonly AuditDraft[]): Promise<AuditEntry[]>
  /** The route's newest versioned audit entry among those kept in memory, or null. */
  lastChange(route: string): AuditEntry | null
  /** A page of the audit kept in memory. */
  audit(query: AuditQuery): AuditPage
  close(): Promise<void>
  /** Told of every audit write, its latency and every failed write (control's metrics). */
  observer: StoreObserver | null
  /** Told of changes other replicas wrote (etcd's watch); never called for this replica's own. */
  remote: ((entries: readonly RemoteEntry[], revision: number) => void) | null
}
