/**
 * What the engine and main.ts need of a store: the state dir (store.ts) and etcd (etcd-store.ts) both
 * give it, with the same guarantee: a change is acknowledged only once it and its audit entries are
 * durable, and a failed write (StoreWriteError: 503 with Retry-After) leaves nothing behind.
 */
import type { AuditPage, AuditQuery } from './audit-query.ts'
import type { AuditDraft, AuditEntry, ControlState, StoreObserver } from './store.ts'

export interface ControlStore {
  /** The state every acknowledged change left (etcd: and every change seen on its watch). */
  readonly state: ControlState
  /** Make `next` and its audit entries durable, as one change; `now`: the entries' time. */
  commit(next: ControlState, drafts: readonly AuditDraft[], now?: number): Promise<AuditEntry[]>
  /** Append audit entries that change no state (refused calls). */
  append(drafts: readonly AuditDraft[]): Promise<AuditEntry[]>
  /** The route's newest versioned audit entry among those kept in memory, or null. */
  lastChange(route: string): AuditEntry | null
  /** A page of the audit kept in memory. */
  audit(query: AuditQuery): AuditPage
  close(): Promise<void>
  /** Told of every audit write, its latency and every failed write (control's metrics). */
  observer: StoreObserver | null
}
