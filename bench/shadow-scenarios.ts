// Shadow mirroring under a fixed load:  node bench/shadow-scenarios.ts [--quick]
// One run, one stable upstream, veer started four times: no shadow; --shadow to a healthy upstream; to
// a slow one (answers after 3 s); to a dead one (a port nothing listens on). Each gets a fixed 1,000 req/s
// open loop (latency from each request's scheduled send time) and the primary's p50/p99/max are put next
// to veer's own shadow counters (GET /v1/stats) and its RSS. Rounds are interleaved, medians reported.
// Env: BENCH_ROUNDS (default 3), BENCH_SECONDS (measured seconds per scenario, default 10).

import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { positiveInt, startHarness } from './harness.ts'
import { fixedRate, type LatencyResult } from './load.ts'
import { describeMachine } from './machine.ts'
import { checkAnswers } from './probe.ts'
import { freePort, logTail, pinHarness, rssKiB, stopAll, stopProcess } from './proc.ts'
import { median } from './stats.ts'
import {
  type Context,
  getJson,
  getText,
  loopback,
  type Running,
  shadowCounters,
  startUpstream,
  startVeer,
} from './subjects.ts'

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
if (args.help) {
  console.log(`usage: node bench/shadow-scenarios.ts [--quick]
  --quick     one short round (3 s per scenario) for smoke testing
  env BENCH_ROUNDS (default 3), BENCH_SECONDS (measured seconds per scenario, default 10)`)
  process.exit(0)
}

const { root, resultsDir, tmpDir, startedAt, log, interrupted } = startHarness('veer-shadow-bench', 15)

const quick = args.quick
const SLOW_MS = 3000
const settings = {
  rounds: quick ? 1 : positiveInt(process.env.BENCH_ROUNDS, 3, 20),
  seconds: quick ? 3 : positiveInt(process.env.BENCH_SECONDS, 10, 120),
  rate: 1000,
  leadInSeconds: 0.5,
  slowShadowMs: SLOW_MS,
  /**
   * After the load, how long to wait for shadow requests still in flight before reading the counters:
   * veer's shadow pool defaults to 64 in flight over 16 connections, so a 3 s shadow needs 4 × 3 s.
   */
  shadowDrainMs: 5 * SLOW_MS,
  pinning: '',
}

const machine = describeMachine() // before pinning (availableParallelism follows this process's affinity)
const { pinned: pinnedSelf, description: pinningText } = pinHarness('veer')
settings.pinning = pinningText
log(`pinning: ${settings.pinning}`)

// Shadows answer what stable answers (bodies included), so comparisons match.
const stable = await startUpstream(root, tmpDir, 'stable')
const healthy = await startUpstream(root, tmpDir, 'shadow', 'stable')
const slow = await startUpstream(root, tmpDir, 'shadow-slow', 'stable', SLOW_MS)

interface Scenario {
  name: string
  about: string
  /** the shadow's port, or null for no shadow; called once per round (the dead port is fresh each time) */
  shadowPort: (() => Promise<number>) | null
}

const scenarios: readonly Scenario[] = [
  { name: 'no shadow', about: 'veer forwarding to stable, no --shadow', shadowPort: null },
  {
    name: 'healthy shadow',
    about: '--shadow to a second fast upstream answering as stable does',
    shadowPort: async () => healthy.port,
  },
  {
    name: 'slow shadow',
    about: `--shadow to an upstream answering every request after ${SLOW_MS / 1000} s`,
    shadowPort: async () => slow.port,
  },
  {
    name: 'dead shadow',
    about: '--shadow to a loopback port nothing listens on (connection refused)',
    shadowPort: freePort,
  },
]

interface Shadow {
  sent: number
  dropped: number
  errors: number
  compared: number
}

interface Round {
  round: number
  latency: LatencyResult
  /** user requests veer answered from stable over the phase (veer_requests_total, lead-in included) */
  requests: number
  shadow: Shadow | null
  /** compared / requests; null without a shadow */
  deliveryRate: number | null
  rssBeforeMiB: number
  rssAfterMiB: number
  /** shadow requests still in flight when the counters were read (0 unless the drain wait ran out) */
  shadowInflightLeft: number
}

interface ScenarioResult {
  name: string
  about: string
  rounds: Round[]
  failures: string[]
  medians: {
    p50Ms: number
    p99Ms: number
    maxMs: number
    deliveryRate: number | null
    rssBeforeMiB: number
    rssAfterMiB: number
    requests: number
    shadow: Shadow | null
  } | null
  /** failed or unanswered primary requests over all rounds */
  errors: number
}

/** Sum of veer_requests_total for the stable version of route `default` (user traffic only). */
async function stableRequests(running: Running): Promise<number> {
  const text = await getText(`http://127.0.0.1:${running.admin}/metrics`)
  let n = 0
  for (const m of text.matchAll(/^veer_requests_total\{([^}]*)\} (\S+)$/gm)) {
    if (m[1]!.includes('route="default"') && m[1]!.includes('version="stable"')) n += Number(m[2])
  }
  return n
}

async function shadowInflight(running: Running): Promise<number> {
  const stats = (await getJson(`http://127.0.0.1:${running.admin}/v1/stats`)) as {
    routes?: Array<{ shadow?: { inflight?: number } | null }>
  }
  return stats.routes?.[0]?.shadow?.inflight ?? 0
}

function shadowOf(c: Record<string, number>): Shadow {
  return {
    sent: c['shadow sent'] ?? 0,
    dropped: c['shadow dropped'] ?? 0,
    errors: c['shadow errors'] ?? 0,
    compared: c['shadow compared'] ?? 0,
  }
}

const mib = (kib: number) => kib / 1024

async function measure(scenario: Scenario, round: number): Promise<Round> {
  const shadowPort = scenario.shadowPort === null ? null : await scenario.shadowPort()
  const ctx: Context = {
    root,
    tmpDir,
    stablePort: stable.port,
    canaryPort: stable.port, // unused: no canary here
    shadowPort,
    otlp: null,
    nginx: null,
  }
  const flags = ['--stable', loopback(stable.port)]
  if (shadowPort !== null) flags.push('--shadow', loopback(shadowPort))
  const running = await startVeer(`veer-${scenario.name.replace(' ', '-')}`, ctx, { flags: () => flags })
  const proc = running.proc!
  try {
    const origin = `http://127.0.0.1:${running.port}`
    const problem = await checkAnswers(origin, null)
    if (problem !== null) throw new Error(`preflight: ${problem}`)
    const requests0 = await stableRequests(running)
    const shadow0 = shadowOf(await shadowCounters(running))
    const rss0 = rssKiB(proc.pid)

    const latency = await fixedRate(
      { origin, path: '/' },
      { rate: settings.rate, seconds: settings.seconds, leadInSeconds: settings.leadInSeconds },
    )
    const rss1 = rssKiB(proc.pid)

    // Shadow answers can come up to SLOW_MS after the last request: wait for them (bounded).
    let inflight = shadowPort === null ? 0 : await shadowInflight(running)
    const deadline = performance.now() + settings.shadowDrainMs
    while (inflight > 0 && performance.now() < deadline) {
      await sleep(100)
      inflight = await shadowInflight(running)
    }
    const requests = (await stableRequests(running)) - requests0
    const s1 = shadowOf(await shadowCounters(running))
    if (proc.exitedWith !== null) throw new Error(`veer exited (${proc.exitedWith}): ${logTail(proc)}`)
    const shadow: Shadow | null =
      shadowPort === null
        ? null
        : {
            sent: s1.sent - shadow0.sent,
            dropped: s1.dropped - shadow0.dropped,
            errors: s1.errors - shadow0.errors,
            compared: s1.compared - shadow0.compared,
          }
    return {
      round,
      latency,
      requests,
      shadow,
      deliveryRate: shadow === null ? null : shadow.compared / Math.max(1, requests),
      rssBeforeMiB: mib(rss0),
      rssAfterMiB: mib(rss1),
      shadowInflightLeft: inflight,
    }
  } finally {
    await stopProcess(proc)
  }
}

const results: ScenarioResult[] = scenarios.map((s) => ({
  name: s.name,
  about: s.about,
  rounds: [],
  failures: [],
  medians: null,
  errors: 0,
}))

for (let round = 1; round <= settings.rounds && !interrupted(); round++) {
  for (const [i, scenario] of scenarios.entries()) {
    if (interrupted()) break
    const res = results[i]!
    const t = performance.now()
    try {
      const r = await measure(scenario, round)
      res.rounds.push(r)
      const s = r.shadow
      log(
        `[round ${round}/${settings.rounds}] ${scenario.name.padEnd(15)} ` +
          `p50 ${r.latency.p50Ms.toFixed(2)} ms p99 ${r.latency.p99Ms.toFixed(2)} ms ` +
          `max ${r.latency.maxMs.toFixed(1)} ms · errors ${r.latency.errors + r.latency.timedOut} · ` +
          `${r.requests} req` +
          (s === null
            ? ''
            : ` · shadow sent ${s.sent} dropped ${s.dropped} errors ${s.errors} compared ${s.compared} ` +
              `(${(100 * r.deliveryRate!).toFixed(1)}%)`) +
          ` · RSS ${r.rssBeforeMiB.toFixed(0)} → ${r.rssAfterMiB.toFixed(0)} MiB · ` +
          `${((performance.now() - t) / 1000).toFixed(1)} s`,
      )
    } catch (err) {
      if (interrupted()) break
      const message = (err as Error).message
      res.failures.push(`round ${round}: ${message}`)
      log(`[round ${round}/${settings.rounds}] ${scenario.name}: failed (${message})`)
    }
  }
}
await stopAll()

for (const r of results) {
  r.errors = r.rounds.reduce((a, x) => a + x.latency.errors + x.latency.timedOut, 0)
  if (r.rounds.length === 0) continue
  const m = (f: (x: Round) => number) => median(r.rounds.map(f))
  const withShadow = r.rounds.every((x) => x.shadow !== null)
  r.medians = {
    p50Ms: m((x) => x.latency.p50Ms),
    p99Ms: m((x) => x.latency.p99Ms),
    maxMs: m((x) => x.latency.maxMs),
    deliveryRate: withShadow ? m((x) => x.deliveryRate!) : null,
    rssBeforeMiB: m((x) => x.rssBeforeMiB),
    rssAfterMiB: m((x) => x.rssAfterMiB),
    requests: m((x) => x.requests),
    shadow: withShadow
      ? {
          sent: m((x) => x.shadow!.sent),
          dropped: m((x) => x.shadow!.dropped),
          errors: m((x) => x.shadow!.errors),
          compared: m((x) => x.shadow!.compared),
        }
      : null,
  }
}

const wallSeconds = (performance.now() - startedAt) / 1000
const date = new Date().toISOString()

function renderMarkdown(): string {
  const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : '∞')
  const int = (n: number) => Math.round(n).toLocaleString('en-US')
  const base = results[0]?.medians?.p99Ms ?? Number.NaN
  const lines = [
    '# veer shadow mirroring: primary latency and shadow delivery',
    '',
    `${date} · ${machine.nproc} cores · ${machine.cpuModel} · ${machine.memGiB} GiB · Linux ${machine.kernel} · Node ${machine.node}`,
    '',
    `Medians of ${settings.rounds} round(s), scenarios interleaved within each round; veer started fresh for ` +
      `every scenario and round. Load: Node open-loop generator at a fixed ${int(settings.rate)} req/s of GET / ` +
      `(~100 B answers) for ${settings.seconds} s after an unrecorded ${settings.leadInSeconds} s lead-in, ` +
      'latency from each request’s scheduled send time (no coordinated omission). Pinning: ' +
      `${settings.pinning}.`,
    '',
    '| scenario | p50 ms | p99 ms | p99 vs no shadow | max ms | errors | requests | shadow sent | dropped | shadow errors | compared | delivery | RSS before MiB | RSS after MiB |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ]
  for (const r of results) {
    const m = r.medians
    if (m === null) {
      lines.push(`| ${r.name} | failed: ${r.failures.join('; ').replaceAll('|', '\\|')} ||||||||||||| `)
      continue
    }
    const s = m.shadow
    const delta = r === results[0] ? '—' : `${m.p99Ms - base >= 0 ? '+' : ''}${fmt(m.p99Ms - base)} ms`
    lines.push(
      `| ${r.name} | ${fmt(m.p50Ms)} | ${fmt(m.p99Ms)} | ${delta} | ${fmt(m.maxMs, 1)} | ${r.errors} | ` +
        `${int(m.requests)} | ${s === null ? '—' : int(s.sent)} | ${s === null ? '—' : int(s.dropped)} | ` +
        `${s === null ? '—' : int(s.errors)} | ${s === null ? '—' : int(s.compared)} | ` +
        `${m.deliveryRate === null ? '—' : `${(100 * m.deliveryRate).toFixed(1)}%`} | ` +
        `${fmt(m.rssBeforeMiB, 1)} | ${fmt(m.rssAfterMiB, 1)} |`,
    )
  }
  lines.push(
    '',
    'errors: failed or unanswered primary requests, summed over all rounds. requests: user requests veer ' +
      'answered from stable over the phase (`veer_requests_total{version="stable"}`, lead-in included). ' +
      'Shadow columns: differences of `GET /v1/stats` `routes[0].shadow` over the phase, read once no shadow ' +
      `request is in flight (waiting at most ${settings.shadowDrainMs / 1000} s). delivery = compared / ` +
      'requests: the share of user requests whose shadow answer arrived and was compared with the primary’s. ' +
      'RSS: veer’s resident set right before and right after the load.',
    '',
    'Scenarios:',
    '',
    ...results.map((r) => `- \`${r.name}\`: ${r.about}`),
  )
  const failures = results.flatMap((r) => r.failures.map((f) => `- ${r.name}, ${f}`))
  if (failures.length > 0) lines.push('', 'Failures:', '', ...failures)
  const left = results.flatMap((r) =>
    r.rounds.filter((x) => x.shadowInflightLeft > 0).map((x) => `${r.name} round ${x.round}`),
  )
  if (left.length > 0) {
    lines.push('', `Shadow requests still in flight when the counters were read: ${left.join(', ')}.`)
  }
  lines.push('', `Wall time ${wallSeconds.toFixed(0)} s.`, '')
  return lines.join('\n')
}

const markdown = renderMarkdown()
mkdirSync(resultsDir, { recursive: true })
writeFileSync(join(resultsDir, 'shadow.md'), markdown)
writeFileSync(
  join(resultsDir, 'shadow.json'),
  `${JSON.stringify({ date, machine, taskset: pinnedSelf, settings, scenarios: results, wallSeconds }, null, 2)}\n`,
)
process.stdout.write(`\n${markdown}\n`)
log(`wrote bench/results/shadow.md and bench/results/shadow.json (${wallSeconds.toFixed(0)} s)`)
process.exit(results.every((r) => r.rounds.length > 0) ? 0 : 1)
