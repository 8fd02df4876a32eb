/**
 * Refused calls (401, 403, 429) are audited, but aggregated so that no client can grow the audit
 * without bound: per key (the client's address, its token and the endpoint) the first refusal of an
 * interval is written at once, the rest are only counted, and when the interval ends one entry with
 * `count` stands for them. A client looping on forbidden writes adds at most two lines per interval.
 * Past `maxKeys` keys in one interval (an address spray) further refusals share one overflow key.
 * A write that fails (a full disk) loses no refusal: it is counted, and the count kept until an
 * interval's end can write it.
 */
import type { AuditDraft } from './store.ts'

const OVERFLOW = '*'

interface Held {
  readonly draft: AuditDraft
  since: string
  count: number
}

export class Denials {
  readonly #write: (draft: AuditDraft) => Promise<void>
  readonly #maxKeys: number
  #open = new Map<string, Held>()
  readonly #timer: NodeJS.Timeout

  /** `write` appends one audit entry (fsynced); `intervalMs` is how long one entry stands for its key. */
  constructor(write: (draft: AuditDraft) => Promise<void>, intervalMs: number, maxKeys = 1000) {
    this.#write = write
    this.#maxKeys = maxKeys
    this.#timer = setInterval(() => void this.flush().catch(() => {}), intervalMs)
    this.#timer.unref()
  }

  /**
   * Audit one refusal: written now when it is its key's first this interval, else counted. Rejects when
   * that write failed; the refusal is then counted, for the interval's end to write.
   */
  async note(key: string, draft: AuditDraft): Promise<void> {
    let k = key
    if (!this.#open.has(k) && this.#open.size >= this.#maxKeys) k = OVERFLOW
    const held = this.#open.get(k)
    if (held !== undefined) {
      held.count++
      return
    }
    const first =
      k === OVERFLOW ? { ...draft, who: OVERFLOW, why: `${draft.why} (and other clients)` } : draft
    const h: Held = { draft: first, since: new Date().toISOString(), count: 0 }
    this.#open.set(k, h)
    try {
      await this.#write(first)
    } catch (err) {
      h.count++
      // The interval may have ended while the write waited: keep the count in the open one.
      this.#keep(k, h)
      throw err
    }
  }

  /** Put `h` back among the open keys, or add its count to the one there now. */
  #keep(k: string, h: Held): void {
    const now = this.#open.get(k)
    if (now === h) return
    if (now === undefined) this.#open.set(k, h)
    else {
      now.count += h.count
      now.since = h.since
    }
  }

  /**
   * End the interval: one entry for each key with refusals beyond its first, with their `count`. One
   * that cannot be written is kept, with its count, for the next interval (the first failure rejects).
   */
  async flush(): Promise<void> {
    const open = this.#open
    this.#open = new Map()
    let failed: { err: unknown } | null = null
    for (const [k, h] of open) {
      if (h.count === 0) continue
      try {
        await this.#write({
          ...h.draft,
          count: h.count,
          why: `${h.draft.why} (${h.count} more since ${h.since})`,
        })
      } catch (err) {
        failed ??= { err }
        this.#keep(k, h)
      }
    }
    if (failed !== null) throw failed.err
  }

  /** Stop the interval timer and write what is counted (shutdown). */
  close(): Promise<void> {
    clearInterval(this.#timer)
    return this.flush()
  }
}
