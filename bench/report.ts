// Markdown rendering of a benchmark report, one section per upstream: CPU µs/req first, ratios paired
// within rounds with their min–max, the issue's goals and their verdicts, per-round figures, notes.
import { machineLine } from './machine.ts'
import { PUBLISHED, paired, spread } from './paired.ts'
import type { Report, RoundResult, Settings, SubjectResult, UpstreamRun } from './results.ts'
import { FLOOR, GOAL_SUBJECT, GOAL_UPSTREAM, type TargetCheck } from './targets.ts'

export const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '—')
export const ms = (n: number) => (Number.isNaN(n) ? '—' : Number.isFinite(n) ? n.toFixed(2) : '∞')
export const fixed = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '—')
export const ratio = (a: number, b: number | undefined) =>
  b !== undefined && Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : '—'

export function row(cells: readonly string[]): string {
  return `| ${cells.join(' | ')} |`
}

/** `median× (min–max)` of `subject ÷ other` paired per round, or '—' (`1.00×` for the subject itself). */
export function pairedCell<R extends { round: number }>(
  s: { rounds: readonly R[] },
  other: { rounds: readonly R[] } | undefined,
  f: (r: R) => number,
): string {
  if (other === undefined || other === s) return other === s ? '1.00×' : '—'
  const x = spread(paired(s.rounds, other.rounds, f))
  if (x.n === 0) return '—'
  return x.n === 1
    ? `${x.median.toFixed(2)}×`
    : `${x.median.toFixed(2)}× (${x.min.toFixed(2)}–${x.max.toFixed(2)})`
}

/** `median (min–max)` of one subject's figures over its rounds; the median alone from fewer than 2. */
export function spreadCell(values: readonly number[], fmt: (x: number) => string): string {
  const x = spread(values)
  return x.n < 2 ? fmt(x.median) : `${fmt(x.median)} (${fmt(x.min)}–${fmt(x.max)})`
}

/** What the heading says of a run shorter than a published one (paired.ts PUBLISHED), or ''. */
export function roughNote(settings: { quick: boolean; publishable: boolean }): string {
  if (settings.quick) return ' (--quick smoke run: figures are rough)'
  if (settings.publishable) return ''
  const p = PUBLISHED
  return ` (shorter than a published run — ${p.rounds} rounds, ${p.warmupSeconds} s warm-ups, ${p.phaseSeconds} s phases: figures are rough)`
}

function mainTable(run: UpstreamRun, settings: Settings): string[] {
  const byName = new Map(run.subjects.map((s) => [s.name, s]))
  const floor = byName.get(FLOOR)
  const hp3 = byName.get('http-proxy-3')
  const rate = int(settings.rate)
  const cpu = (r: RoundResult) => r.cpuUsPerReq
  const rps = (r: RoundResult) => r.small.rps
  const head = [
    'subject',
    'CPU µs/req ~100 B',
    `CPU ÷ ${FLOOR}`,
    'req/s ~100 B',
    `÷ ${FLOOR}`,
    '÷ http-proxy-3',
    'CPU µs/req 16 KiB',
    'req/s 16 KiB',
    `p50 ms @${rate}/s`,
    `p99 ms @${rate}/s`,
    'RSS MiB',
    'errors',
  ]
  const lines = [row(head), row(head.map((_, i) => (i === 0 ? '---' : '---:')))]
  for (const s of run.subjects) {
    const m = s.medians
    if (m === null) {
      lines.push(
        row([
          s.name,
          `unavailable: ${(s.reason ?? '').replaceAll('|', '/').slice(0, 160)}`,
          ...head.slice(2).map(() => ''),
        ]),
      )
      continue
    }
    const own = (x: string) => (s.name === 'direct' ? `(${x})` : x)
    lines.push(
      row([
        s.name,
        s.name === 'direct'
          ? own(fixed(spread(s.rounds.map(cpu)).median))
          : spreadCell(s.rounds.map(cpu), fixed),
        s.name === 'direct' ? '' : pairedCell(s, floor, cpu),
        int(m.rpsSmall),
        s.name === 'direct' ? '' : pairedCell(s, floor, rps),
        s.name === 'direct' ? '' : pairedCell(s, hp3, rps),
        own(fixed(m.cpuUsPerReqBig)),
        int(m.rpsBig),
        ms(m.p50Ms),
        ms(m.p99Ms),
        own(fixed(m.rssMiB)),
        String(m.errors),
      ]),
    )
  }
  return lines
}

function spreadTable(run: UpstreamRun, n: number): string[] {
  const head = ['subject', 'metric', ...Array.from({ length: n }, (_, i) => `round ${i + 1}`)]
  const lines = [row(head), row(head.map((_, i) => (i < 2 ? '---' : '---:')))]
  const metrics: Array<[string, (r: RoundResult) => string]> = [
    ['CPU µs/req ~100 B', (r) => fixed(r.cpuUsPerReq)],
    ['req/s ~100 B', (r) => int(r.small.rps)],
    ['req/s 16 KiB', (r) => int(r.big.rps)],
    ['p99 ms', (r) => ms(r.latency.p99Ms)],
    ['other CPU %', (r) => fixed(r.otherCpuPct, 0)],
  ]
  for (const s of run.subjects) {
    if (s.rounds.length === 0) continue
    for (const [label, f] of metrics) {
      const cells = Array.from({ length: n }, (_, i) => {
        const r = s.rounds.find((x) => x.round === i + 1)
        return r === undefined ? '—' : f(r)
      })
      lines.push(row([s.name, label, ...cells]))
    }
  }
  return lines
}

export function targetsTable(targets: readonly TargetCheck[]): string[] {
  const withSpread = targets.some((t) => t.spread !== undefined)
  const head = [
    'target',
    'goal',
    withSpread ? 'median' : 'measured',
    ...(withSpread ? ['min – max (rounds)'] : []),
    'result',
    'note',
  ]
  const lines = [
    row(head),
    row(head.map((h) => (h === 'median' || h === 'measured' || h.startsWith('min') ? '---:' : '---'))),
  ]
  for (const t of targets) {
    const result =
      t.verdict ??
      (t.pass === null ? (t.goal === '(info)' ? 'info' : 'not measured') : t.pass ? 'pass' : 'miss')
    lines.push(row([t.target, t.goal, t.measured, ...(withSpread ? [t.spread ?? ''] : []), result, t.note]))
  }
  return lines
}

function observedNotes(subjects: readonly SubjectResult[]): string[] {
  const out: string[] = []
  for (const s of subjects) {
    const rounds = s.rounds.filter((r) => r.observed !== undefined)
    if (rounds.length === 0) continue
    const perRound = rounds.map(
      (r) =>
        `round ${r.round}: ${Object.entries(r.observed!)
          .map(([k, v]) => `${k} ${int(v)}`)
          .join(', ')}`,
    )
    out.push(`- ${s.name} (over the warm-up and measured phases) — ${perRound.join('; ')}.`)
  }
  return out
}

/** How much else ran on the machine while measuring: the rounds' other-process CPU and steal. */
export function noiseNote(
  subjects: readonly { rounds: readonly { otherCpuPct: number; stealPct: number }[] }[],
): string {
  const rounds = subjects.flatMap((s) => s.rounds)
  if (rounds.length === 0) return ''
  const other = rounds.map((r) => r.otherCpuPct)
  const steal = rounds.map((r) => r.stealPct)
  const avg = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length
  return (
    `Other processes on the machine used ${avg(other).toFixed(0)}% of a core on average while measuring ` +
    `(worst round ${Math.max(...other).toFixed(0)}%); hypervisor steal ${avg(steal).toFixed(0)}% ` +
    `(worst ${Math.max(...steal).toFixed(0)}%). This is machine user+system time minus the benchmark's own ` +
    'processes, good to about ±10%; much more than that means the figures are disturbed.'
  )
}

function canaryNotes(subjects: readonly SubjectResult[]): string[] {
  const out: string[] = []
  for (const s of subjects) {
    const c = s.rounds.at(-1)?.canary
    if (c === undefined) continue
    out.push(
      `- ${s.name}: ${(c.canaryShare * 100).toFixed(1)}% of ${2 * c.users} probe requests reached the canary ` +
        `(configured 20%); ${(c.sticky * 100).toFixed(0)}% of ${c.users} users got the same upstream twice` +
        (c.unlabelled > 0 ? `; ${c.unlabelled} answers had no x-upstream header` : '') +
        '.',
    )
  }
  return out
}

export function renderMarkdown(report: Report): string {
  const { machine, settings } = report
  const rough = roughNote(settings)
  const lines = [
    '# veer benchmark',
    '',
    machineLine(report.date, machine),
    '',
    `${settings.rounds} round(s) per upstream${rough}; subjects forward in odd rounds, reversed in even ones, ` +
      'each started fresh every round. ' +
      `Max throughput: ${settings.loadTool}, ${settings.connections} connections, ` +
      `${settings.warmupSeconds} s warm-up then ${settings.throughputSeconds} s measured, for each body size` +
      ((settings.slices ?? 1) < 2
        ? '. '
        : ` (the ~100 B headline: every subject of a round started and warmed up first, then measured in ` +
          `${settings.slices} slices taken in turn, so each pair spans the same stretch of time). `) +
      `Latency: Node open-loop generator at a fixed ${int(settings.rate)} req/s for ${settings.latencySeconds} s ` +
      '(after an unrecorded 0.5 s lead-in), measured from each request\u2019s scheduled send time ' +
      '(no coordinated omission).',
    '',
    `Pinning: ${settings.pinning}. wrk: ${report.wrk.used ? `used (${report.wrk.version ?? 'version unknown'})` : `not used — ${report.wrk.note}`}. ` +
      `nginx: ${report.nginx.used ? `${report.nginx.version ?? 'version unknown'} (${report.nginx.note})` : report.nginx.note}.`,
    '',
    ...(report.wrk.used
      ? []
      : [
          'Without wrk the Node generator shares core 0 with the upstream and is much slower than wrk: the ' +
            '`direct` row then mostly measures the generator, and the proxies\u2019 req/s are lower bounds.',
          '',
        ]),
    'CPU µs/req (the headline: steadier than req/s on a shared VM): the proxy process tree\u2019s utime+stime ' +
      'over a measured max-throughput phase divided by the requests answered in it, median over the rounds ' +
      'with min–max; in parentheses on `direct`: the upstream\u2019s own figures. Every ratio (÷ …) is paired: ' +
      'taken within each round, then the median of those ratios, with their min–max in parentheses — not a ' +
      'ratio of medians. req/s, p50/p99: medians over the rounds. RSS: after the round. errors: socket ' +
      'errors, timeouts and non-2xx answers over all phases and rounds. The `direct` p50/p99 is the floor ' +
      'of the load generator itself.',
    '',
    'Subjects:',
    '',
    ...(report.runs[0]?.subjects ?? []).map((s) => `- \`${s.name}\`: ${s.about}`),
    '',
  ]
  for (const run of report.runs) lines.push(...runSection(run, settings))
  lines.push(`Wall time: ${report.wallSeconds.toFixed(0)} s.`, '')
  return lines.join('\n')
}

function runSection(run: UpstreamRun, settings: Settings): string[] {
  const lines = [`## Upstream: ${run.upstream}`, '']
  if (run.unavailable !== undefined) return [...lines, `Not measured: ${run.unavailable}.`, '']
  lines.push(`${run.about}.`, '', ...mainTable(run, settings), '')
  if (run.targets.length > 0) {
    lines.push(
      '### Goals and comparisons',
      '',
      `Issue 18\u2019s goals are about \`${GOAL_SUBJECT}\` on the ${GOAL_UPSTREAM} upstream. Each figure is the ` +
        'median of the ratios (or differences) paired within a round, with their min–max; a verdict is given ' +
        'only when every paired round is on the same side of the goal, otherwise it reads \u201cundecided ' +
        '(spread crosses the goal)\u201d. Printed, never asserted.',
      '',
      ...targetsTable(run.targets),
      '',
    )
  }
  const noise = noiseNote(run.subjects)
  if (noise !== '') lines.push(noise, '')
  const notes = canaryNotes(run.subjects)
  if (notes.length > 0) lines.push('Canary routing seen by the probe:', '', ...notes, '')
  const observed = observedNotes(run.subjects)
  if (observed.length > 0) lines.push('Counters read from the subjects:', '', ...observed, '')
  const unavailable = run.subjects.filter((s) => s.status === 'unavailable')
  for (const s of unavailable) lines.push(`- ${s.name} unavailable: ${s.reason ?? ''}`)
  if (unavailable.length > 0) lines.push('')
  lines.push(`### Per round (${run.upstream} upstream)`, '', ...spreadTable(run, settings.rounds), '')
  return lines
}
