// Markdown rendering of a benchmark report: the medians table with ratios, the issue's targets,
// per-round spread, notes.
import type { Report, RoundResult, SubjectResult } from './results.ts'
import type { TargetCheck } from './targets.ts'

export const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '—')
export const ms = (n: number) => (Number.isNaN(n) ? '—' : Number.isFinite(n) ? n.toFixed(2) : '∞')
export const fixed = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '—')
export const ratio = (a: number, b: number | undefined) =>
  b !== undefined && Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : '—'

export function row(cells: readonly string[]): string {
  return `| ${cells.join(' | ')} |`
}

function mainTable(report: Report): string[] {
  const byName = new Map(report.subjects.map((s) => [s.name, s.medians]))
  const direct = byName.get('direct') ?? null
  const hp3 = byName.get('http-proxy-3') ?? null
  const rate = int(report.settings.rate)
  const head = [
    'subject',
    'req/s ~100 B',
    'vs direct',
    'vs http-proxy-3',
    'req/s 16 KiB',
    'vs direct',
    'vs http-proxy-3',
    `p50 ms @${rate}/s`,
    `p99 ms @${rate}/s`,
    'CPU µs/req',
    'RSS MiB',
    'errors',
  ]
  const lines = [row(head), row(head.map((_, i) => (i === 0 ? '---' : '---:')))]
  for (const s of report.subjects) {
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
    lines.push(
      row([
        s.name,
        int(m.rpsSmall),
        ratio(m.rpsSmall, direct?.rpsSmall),
        ratio(m.rpsSmall, hp3?.rpsSmall),
        int(m.rpsBig),
        ratio(m.rpsBig, direct?.rpsBig),
        ratio(m.rpsBig, hp3?.rpsBig),
        ms(m.p50Ms),
        ms(m.p99Ms),
        s.name === 'direct' ? `(${fixed(m.cpuUsPerReq)})` : fixed(m.cpuUsPerReq),
        s.name === 'direct' ? `(${fixed(m.rssMiB)})` : fixed(m.rssMiB),
        String(m.errors),
      ]),
    )
  }
  return lines
}

function spreadTable(report: Report): string[] {
  const n = report.settings.rounds
  const head = ['subject', 'metric', ...Array.from({ length: n }, (_, i) => `round ${i + 1}`)]
  const lines = [row(head), row(head.map((_, i) => (i < 2 ? '---' : '---:')))]
  const metrics: Array<[string, (r: RoundResult) => string]> = [
    ['req/s ~100 B', (r) => int(r.small.rps)],
    ['req/s 16 KiB', (r) => int(r.big.rps)],
    ['p99 ms', (r) => ms(r.latency.p99Ms)],
    ['other CPU %', (r) => fixed(r.otherCpuPct, 0)],
  ]
  for (const s of report.subjects) {
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
  const head = ['target', 'goal', 'measured', 'result', 'note']
  const lines = [row(head), row(['---', '---', '---:', '---', '---'])]
  for (const t of targets) {
    const result =
      t.pass === null ? (t.goal === '(info)' ? 'info' : 'not measured') : t.pass ? 'pass' : 'miss'
    lines.push(row([t.target, t.goal, t.measured, result, t.note]))
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
  const lines = [
    '# veer benchmark',
    '',
    `${report.date} · ${machine.nproc} cores · ${machine.cpuModel} · ${machine.memGiB} GiB · ` +
      `Linux ${machine.kernel} · Node ${machine.node}`,
    '',
    `Medians of ${settings.rounds} round(s)${settings.quick ? ' (--quick smoke run: figures are rough)' : ''}. ` +
      `Max throughput: ${settings.loadTool}, ${settings.connections} connections, ` +
      `${settings.throughputSeconds} s per body size after ${settings.warmupSeconds} s warm-up. ` +
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
    ...mainTable(report),
    '',
    'CPU µs/req: the proxy process\u2019s utime+stime over the ~100 B max-throughput phase divided by the requests ' +
      'answered in it; RSS: after the round. In parentheses on `direct`: the upstream\u2019s own figures. ' +
      'errors: socket errors, timeouts and non-2xx answers over all phases and rounds. ' +
      'The `direct` p50/p99 is the floor of the load generator itself.',
    '',
    'Subjects:',
    '',
    ...report.subjects.map((s) => `- \`${s.name}\`: ${s.about}`),
    '',
  ]
  if (report.targets.length > 0) {
    lines.push(
      '## Targets',
      '',
      'The issue\u2019s targets against this run\u2019s medians (~100 B answers; costs are 1 − subject/veer in ' +
        'req/s). Printed, never asserted; single rounds swing ±30% on this machine, CPU µs/req much less.',
      '',
      ...targetsTable(report.targets),
      '',
    )
  }
  const noise = noiseNote(report.subjects)
  if (noise !== '') lines.push(noise, '')
  const notes = canaryNotes(report.subjects)
  if (notes.length > 0) lines.push('Canary routing seen by the probe:', '', ...notes, '')
  const observed = observedNotes(report.subjects)
  if (observed.length > 0) lines.push('Counters read from the subjects:', '', ...observed, '')
  const unavailable = report.subjects.filter((s) => s.status === 'unavailable')
  for (const s of unavailable) lines.push(`- ${s.name} unavailable: ${s.reason ?? ''}`)
  if (unavailable.length > 0) lines.push('')
  lines.push(
    '## Per round',
    '',
    ...spreadTable(report),
    '',
    `Wall time: ${report.wallSeconds.toFixed(0)} s.`,
    '',
  )
  return lines.join('\n')
}
