// The targets, checked against one run's medians (~100 B answers, req/s): printed as measured
// value and pass/miss, never asserted. CPU µs/req, steadier than req/s on a noisy machine, goes in the
// note of each line, as does the canary+sticky variant where the target speaks of sticky routing.
import type { Medians, SubjectResult } from './results.ts'

export interface TargetCheck {
  target: string
  goal: string
  /** the measured figure, formatted; '—' when a subject it needs did not run */
  measured: string
  /** null: informational line, or not measurable in this run */
  pass: boolean | null
  note: string
}

const times = (x: number) => `${x.toFixed(2)}×`
const pct = (x: number) => `${x < 0 ? '−' : ''}${Math.abs(x * 100).toFixed(1)}%`
const ms = (x: number) => `${x < 0 ? '−' : '+'}${Math.abs(x).toFixed(2)} ms`
const finite = (...xs: number[]) => xs.every((x) => Number.isFinite(x) && x > 0)

export function checkTargets(subjects: readonly SubjectResult[], rate: number): TargetCheck[] {
  const m = (name: string): Medians | null => subjects.find((s) => s.name === name)?.medians ?? null
  const veer = m('veer')
  const sticky = m('veer-canary-sticky')
  const out: TargetCheck[] = []

  const ratio = (other: string, min: number) => {
    const o = m(other)
    const target = `veer / ${other} req/s`
    const goal = `≥ ${times(min)}`
    if (veer === null || o === null || !finite(veer.rpsSmall, o.rpsSmall)) {
      out.push({ target, goal, measured: '—', pass: null, note: `needs veer and ${other}` })
      return
    }
    const r = veer.rpsSmall / o.rpsSmall
    const notes: string[] = []
    if (sticky !== null && finite(sticky.rpsSmall)) {
      const rs = sticky.rpsSmall / o.rpsSmall
      notes.push(`with canary+sticky ${times(rs)} (${rs >= min ? 'pass' : 'miss'})`)
    }
    if (finite(veer.cpuUsPerReq, o.cpuUsPerReq)) {
      notes.push(`by CPU µs/req ${times(o.cpuUsPerReq / veer.cpuUsPerReq)}`)
    }
    out.push({ target, goal, measured: times(r), pass: r >= min, note: notes.join('; ') })
  }

  const cost = (name: string, label: string, max: number, extra = '') => {
    const s = m(name)
    const target = `${label}: throughput cost vs veer`
    const goal = `≤ ${pct(max)}`
    if (veer === null || s === null || !finite(veer.rpsSmall, s.rpsSmall)) {
      out.push({ target, goal, measured: '—', pass: null, note: `needs veer and ${name}` })
      return
    }
    const c = 1 - s.rpsSmall / veer.rpsSmall
    const notes = finite(veer.cpuUsPerReq, s.cpuUsPerReq)
      ? [`CPU µs/req ${pct(s.cpuUsPerReq / veer.cpuUsPerReq - 1)}`]
      : []
    if (extra !== '') notes.push(extra)
    out.push({ target, goal, measured: pct(c), pass: c <= max, note: notes.join('; ') })
  }

  ratio('http-proxy-3', 1.6)
  ratio('fastify-http-proxy', 1.4)
  ratio('undici-minimal', 0.9)
  cost('veer-canary-sticky', '20% canary + sticky hashing', 0.05)
  cost('veer-tracing', 'tracing at 1% sampling', 0.1)
  cost('veer-shadow', '100% shadow', 0.4, mirroredShare(subjects))

  const direct = m('direct')
  {
    const target = `p99 added vs direct at ${rate.toLocaleString('en-US')} req/s`
    const goal = '≤ +1.00 ms'
    if (veer === null || direct === null || Number.isNaN(veer.p99Ms) || Number.isNaN(direct.p99Ms)) {
      out.push({ target, goal, measured: '—', pass: null, note: 'needs veer and direct' })
    } else {
      const added = veer.p99Ms - direct.p99Ms
      const note =
        sticky !== null && !Number.isNaN(sticky.p99Ms)
          ? `with canary+sticky ${ms(sticky.p99Ms - direct.p99Ms)}; p50 added ${ms(veer.p50Ms - direct.p50Ms)}`
          : `p50 added ${ms(veer.p50Ms - direct.p50Ms)}`
      out.push({ target, goal, measured: ms(added), pass: added <= 1, note })
    }
  }

  // Informational: how far from the C reference, and what the access log costs.
  const nginx = m('nginx')
  if (veer !== null && nginx !== null && finite(veer.rpsSmall, nginx.rpsSmall)) {
    out.push({
      target: 'veer / nginx req/s',
      goal: '(info)',
      measured: times(veer.rpsSmall / nginx.rpsSmall),
      pass: null,
      note: finite(veer.cpuUsPerReq, nginx.cpuUsPerReq)
        ? `CPU µs/req: veer ${veer.cpuUsPerReq.toFixed(1)}, nginx ${nginx.cpuUsPerReq.toFixed(1)} (${times(veer.cpuUsPerReq / nginx.cpuUsPerReq)})`
        : '',
    })
  }
  const nolog = m('veer-nolog')
  if (veer !== null && nolog !== null && finite(veer.rpsSmall, nolog.rpsSmall)) {
    out.push({
      target: 'access log: throughput cost (veer vs veer-nolog)',
      goal: '(info)',
      measured: pct(1 - veer.rpsSmall / nolog.rpsSmall),
      pass: null,
      note: finite(veer.cpuUsPerReq, nolog.cpuUsPerReq)
        ? `CPU µs/req ${pct(veer.cpuUsPerReq / nolog.cpuUsPerReq - 1)}`
        : '',
    })
  }
  return out
}

/** How much of the traffic the shadow really got: veer drops (never queues) past its shadow limits. */
function mirroredShare(subjects: readonly SubjectResult[]): string {
  let sent = 0
  let dropped = 0
  for (const r of subjects.find((s) => s.name === 'veer-shadow')?.rounds ?? []) {
    sent += r.observed?.['shadow sent'] ?? 0
    dropped += r.observed?.['shadow dropped'] ?? 0
  }
  if (sent + dropped === 0) return ''
  const share = `mirrored ${pct(sent / (sent + dropped))} of requests`
  if (dropped === 0) return `${share} (none dropped)`
  return (
    `${share} (${dropped.toLocaleString('en-US')} dropped at the shadow pool’s limits), so this is the ` +
    'cost of that share, not of a full 100%'
  )
}
