/** Human output of the operator client: the `veer status` table and one-line summaries of a route. */
import { formatDuration } from '../config/duration.ts'
import type { ProxyView } from '../control/proxies.ts'
import type { AuditEntry } from '../control/store.ts'
import type { RouteView } from '../control/views.ts'

/** 1m25s, 40s, 750ms: whole seconds above ten seconds. */
export function left(ms: number): string {
  if (ms >= 10_000) ms = Math.round(ms / 1000) * 1000
  if (ms >= 60_000 && ms % 60_000 !== 0) {
    const m = Math.floor(ms / 60_000)
    return `${m}m${formatDuration(ms - m * 60_000)}`
  }
  return ms === 0 ? '0s' : formatDuration(ms)
}

function timeLeft(r: RouteView): string {
  const ro = r.rollout
  if (ro === null || ro.phase === 'completed' || ro.phase === 'aborted') return '-'
  if (ro.state === 'waiting-for-promote') return 'promote'
  if (ro.pauseLeftMs === null) return ro.state === 'paused' ? 'promote' : '-'
  if (ro.state === 'pausing') return left(ro.pauseLeftMs)
  return `${left(ro.pauseLeftMs)} ${ro.state === 'paused' ? '(paused)' : 'after sync'}`
}

/** Columns padded to their widest cell, the last one left as it is. */
function table(rows: readonly string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)))
  return rows
    .map((row) =>
      row
        .map((cell, i) => cell.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
}

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

/** A value in a history line: an upstream by its release, null as `-`. */
function brief(v: unknown): string {
  if (v === null || v === undefined) return '-'
  if (isRecord(v) && typeof v.release === 'string' && typeof v.url === 'string') return v.release
  return typeof v === 'object' ? JSON.stringify(v) : String(v)
}

/** `canary 40 → 0, step 2 → 2`: each setting the entry's `to` names, from its `from` (only those that changed). */
export function fromTo(from: unknown, to: unknown): string {
  if (!isRecord(to)) return to === null || to === undefined ? '' : brief(to)
  const before = isRecord(from) ? from : null
  const parts: string[] = []
  for (const [k, v] of Object.entries(to)) {
    if (before === null) parts.push(`${k} ${brief(v)}`)
    else if (brief(before[k]) !== brief(v)) parts.push(`${k} ${brief(before[k])} → ${brief(v)}`)
  }
  return parts.join(', ')
}

/** `veer history`: one line per audit entry, oldest first. */
export function historyTable(entries: readonly AuditEntry[]): string {
  if (entries.length === 0) return 'no audit entries match'
  const rows = [['TIME', 'WHO', 'ACTION', 'FROM → TO', 'WHY']]
  for (const e of entries) {
    const who = e.proxy === undefined ? e.who : `${e.who} (proxy ${e.proxy})`
    rows.push([e.time, who, e.action, fromTo(e.from, e.to) || '-', e.why ?? '-'])
  }
  return table(rows)
}

export function statusTable(routes: readonly RouteView[]): string {
  const rows = [
    [
      'ROUTE',
      'STABLE',
      'CANARY',
      'ROLLOUT',
      'STEP',
      'TIME LEFT',
      'ANALYSIS',
      'HARMED/SAVED',
      'PROXIES IN SYNC',
      'VERSION',
    ],
  ]
  const reasons: string[] = []
  for (const r of routes) {
    const ro = r.rollout
    const a = ro?.analysis ?? null
    rows.push([
      r.name,
      side(r.stable, r.weights.stable),
      side(r.canary, r.weights.canary),
      ro === null ? '-' : ro.state,
      ro === null || ro.phase === 'completed' || ro.phase === 'aborted' ? '-' : `${ro.step}/${ro.steps}`,
      timeLeft(r),
      a?.verdict ?? '-',
      a === null ? '-' : `${a.harmed}/${a.saved}`,
      `${r.proxies.inSync}/${r.proxies.live}`,
      String(r.version),
    ])
    // A running rollout's live verdict; an ended one's is in its last change (the audit, kept across restarts).
    const running = ro !== null && (ro.phase === 'progressing' || ro.phase === 'paused')
    if (running && a?.reason && a.verdict !== 'pass')
      reasons.push(`${r.name}: analysis ${a.verdict}: ${a.reason}`)
    reasons.push(...notes(r))
  }
  return [table(rows), ...reasons].join('\n')
}

/** `v2 20%`: a side's release and share; `-` for a route without a canary. */
function side(u: RouteView['stable'], weight: number): string {
  return u === null ? '-' : `${u.release} ${weight}%`
}

/**
 * The lines under the table for one route: its last change (who, what, why: an abort, a weight set by
 * hand, a release change, kept across restarts), proxies serving another release, and what to do next.
 */
export function notes(r: RouteView): string[] {
  const out: string[] = []
  const l = r.last
  if (l !== null) {
    const by = l.proxy === undefined ? l.who : `${l.who} (proxy ${l.proxy})`
    out.push(`${r.name}: last: ${l.action} by ${by} at ${l.time}${l.why === null ? '' : `: ${l.why}`}`)
  }
  const stale = r.proxies.stale
  if (stale.length > 0)
    out.push(
      `${r.name}: ${stale.length === 1 ? '1 live proxy serves' : `${stale.length} live proxies serve`} another release pair by its file (a stale config): ${stale.join(', ')}`,
    )
  if (r.next !== null) out.push(`${r.name}: next: ${r.next}`)
  return out
}

export function proxiesLine(proxies: readonly ProxyView[]): string {
  const live = proxies.filter((p) => p.live).length
  const refusing = proxies.filter((p) => p.lastError !== null).map((p) => p.id)
  const nack = refusing.length > 0 ? `; refusing the last revision: ${refusing.join(', ')}` : ''
  return `proxies: ${proxies.length} known, ${live} live${nack}`
}

/**
 * `shop: canary 25% (stable 75%), shadow 10%, step 2/4 pausing, 1m25s left, version 8`; after
 * promote-shadow `shop: canary 50% (stable 50%), canary from shadow v2, step 1/2 pausing, …`.
 */
export function summary(r: RouteView): string {
  const parts = [`${r.name}: canary ${r.weights.canary}% (stable ${r.weights.stable}%)`]
  // After promote-shadow the shadow is the canary and is not mirrored: its percent would only confuse.
  if (r.canaryFromShadow && r.canary) parts.push(`canary from shadow ${r.canary.release}`)
  // Only once control holds a shadow percent; before that each proxy mirrors as its file says.
  else if (r.shadow && r.shadow.percent !== null) parts.push(`shadow ${r.shadow.percent}%`)
  const ro = r.rollout
  if (ro !== null) {
    if (ro.phase === 'completed' || ro.phase === 'aborted') parts.push(`rollout ${ro.phase}`)
    else {
      const t = timeLeft(r)
      const when = t === '-' || t === 'promote' ? '' : ro.state === 'pausing' ? `, ${t} left` : `, ${t}`
      parts.push(`step ${ro.step}/${ro.steps} ${ro.state}${when}`)
    }
  }
  parts.push(`version ${r.version}`)
  return parts.join(', ')
}
