/**
 * GET /v1/audit's filters and paging as pure functions: the times and actions a query names, and the
 * page of entries it selects with the cursor to the next (older) page. `veer history` reads its flags
 * with the same parsers, so the API and the CLI accept the same values.
 */
import { parseDuration } from '../config/duration.ts'
import type { AuditEntry } from './store.ts'

export interface AuditQuery {
  /** At most this many entries in the page (the newest that match). */
  readonly limit: number
  readonly route: string | null
  /** Only entries with one of these actions; null or absent: every action. */
  readonly actions?: readonly string[] | null
  /** Epoch ms: only entries at or after it. */
  readonly since?: number | null
  /** Epoch ms: only entries before it (so `until` of one query and `since` of the next do not overlap). */
  readonly until?: number | null
  /** A cursor (`next` of an earlier page): only entries older than the oldest of that page. */
  readonly before?: number | null
}

export interface AuditPage {
  /** Entries in the whole log, as before filters and paging. */
  readonly total: number
  /** Oldest first. */
  readonly entries: AuditEntry[]
  /** The cursor for the page of older matching entries (`before=`), or null when there are none. */
  readonly next: string | null
}

export const TIME_HINT =
  'an RFC 3339 time such as 2025-06-01T12:00:00Z (in a URL, write a + offset as %2B) or a duration ago such as 90m or 2h'
export const ACTIONS_HINT = 'an action or a comma list of them, such as release-change,rollout-abort'

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|([+-])(\d{2}):(\d{2}))$/i

/**
 * Epoch ms of an RFC 3339 date-time (any offset, fractions beyond ms dropped), or of `now` minus a
 * duration (`90m`, `2h`, config/duration.ts); undefined for anything else, a bare number included.
 */
export function parseTime(text: string, now: number): number | undefined {
  const m = RFC3339.exec(text)
  if (m === null) {
    const ago = parseDuration(text)
    return ago === undefined ? undefined : now - ago
  }
  const [y, mo, d, h, mi, s] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number]
  const ms = m[7] === undefined ? 0 : Number(m[7].slice(1, 4).padEnd(3, '0'))
  const days = new Date(Date.UTC(y, mo, 0)).getUTCDate()
  // RFC 3339 §5.7: a leap second (60) is a valid time; it reads as the next minute's first second.
  if (mo < 1 || mo > 12 || d < 1 || d > days || h > 23 || mi > 59 || s > 60) return undefined
  let offset = 0
  if (m[9] !== undefined) {
    const oh = Number(m[10])
    const om = Number(m[11])
    if (oh > 23 || om > 59) return undefined
    offset = (m[9] === '-' ? -1 : 1) * (oh * 60 + om) * 60_000
  }
  // Date.UTC reads years 0..99 as 1900..1999; setUTCFullYear does not.
  const t = new Date(Date.UTC(2000, mo - 1, d, h, mi, s, ms))
  t.setUTCFullYear(y)
  return t.getTime() - offset
}

/** The action names of `set-weight` or `release-change,rollout-abort`, or undefined when one is not a name. */
export function parseActions(text: string): string[] | undefined {
  const names = text.split(',').map((a) => a.trim())
  if (names.some((a) => !/^[a-z][a-z0-9-]*$/.test(a))) return undefined
  return [...new Set(names)]
}

/**
 * The page `q` selects from `entries` (oldest first, as the store keeps them): the newest `q.limit`
 * entries that match, older than `q.before`, oldest first, and the cursor to the matching entries
 * older still. The cursor is the oldest returned entry's `seq`, which only grows.
 */
export function auditPage(entries: readonly AuditEntry[], total: number, q: AuditQuery): AuditPage {
  const actions = q.actions ? new Set(q.actions) : null
  const since = q.since ?? null
  const until = q.until ?? null
  const before = q.before ?? null
  const out: AuditEntry[] = []
  let more = false
  for (let i = entries.length - 1; i >= 0; i--) {
    const e = entries[i]!
    if (before !== null && e.seq >= before) continue
    if (q.route !== null && e.route !== q.route) continue
    if (actions !== null && !actions.has(e.action)) continue
    if (since !== null || until !== null) {
      const t = Date.parse(e.time)
      if ((since !== null && !(t >= since)) || (until !== null && !(t < until))) continue
    }
    if (out.length === q.limit) {
      more = true
      break
    }
    out.push(e)
  }
  out.reverse()
  return { total, entries: out, next: more ? String(out[0]!.seq) : null }
}
