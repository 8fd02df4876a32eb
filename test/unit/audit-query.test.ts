/** GET /v1/audit's filters and paging as pure functions (control/audit-query.ts). */
import { describe, expect, it } from 'vitest'
import { auditPage, parseActions, parseTime } from '../../control/audit-query.ts'
import type { AuditEntry } from '../../control/store.ts'

const NOW = Date.parse('2026-01-01T12:00:00Z')

describe('parseTime', () => {
  it.each([
    ['2026-01-01T10:00:00Z', Date.parse('2026-01-01T10:00:00Z')],
    ['2026-01-01T10:00:00.250Z', Date.parse('2026-01-01T10:00:00.250Z')],
    ['2026-01-01T12:00:00+02:00', Date.parse('2026-01-01T10:00:00Z')],
    ['2h', NOW - 7_200_000],
    ['90m', NOW - 5_400_000],
  ])('%s', (text, ms) => expect(parseTime(text, NOW)).toBe(ms))

  it.each(['30', '2026-13-01T00:00:00Z', '2026-02-30T00:00:00Z', 'yesterday', '2026-01-01'])(
    '%j is not a time',
    (text) => expect(parseTime(text, NOW)).toBeUndefined(),
  )
})

describe('parseActions', () => {
  it('reads one action or a comma list, once each, and refuses what is not an action name', () => {
    expect(parseActions('release-change, rollout-abort,release-change')).toEqual([
      'release-change',
      'rollout-abort',
    ])
    expect(parseActions('Bad!')).toBeUndefined()
    expect(parseActions('a,,b')).toBeUndefined()
  })
})

describe('auditPage', () => {
  const entries: AuditEntry[] = Array.from({ length: 7 }, (_, i) => ({
    seq: i + 1,
    time: new Date(NOW + i * 1000).toISOString(),
    who: 'alice',
    role: 'operator',
    action: i % 2 === 0 ? 'set-weight' : 'rollout-abort',
    route: i === 3 ? 'other' : 'shop',
    from: null,
    to: null,
    why: null,
    revision: i + 1,
  }))

  it('pages from the newest: each matching entry exactly once, oldest first in every page', () => {
    const seen: number[] = []
    let before: number | null = null
    for (let pages = 0; pages < 10; pages++) {
      const page = auditPage(entries, 7, { limit: 2, route: 'shop', before })
      seen.unshift(...page.entries.map((e) => e.seq))
      if (page.next === null) break
      before = Number(page.next)
    }
    expect(seen).toEqual([1, 2, 3, 5, 6, 7])
  })

  it('filters by action and by time: since at or after, until before', () => {
    const q = { limit: 100, route: 'shop' }
    expect(auditPage(entries, 7, { ...q, actions: ['rollout-abort'] }).entries.map((e) => e.seq)).toEqual([
      2, 6,
    ])
    const since = NOW + 2000
    const until = NOW + 5000
    expect(auditPage(entries, 7, { ...q, since, until }).entries.map((e) => e.seq)).toEqual([3, 5])
    expect(auditPage(entries, 7, { ...q, since, until }).next).toBeNull()
  })
})
