// Shadow mirroring under load:  node bench/shadow-scenarios.ts [--quick] [--only a,b]
// One run, one stable upstream, veer started once per scenario: no shadow; --shadow to a healthy upstream;
// to a slow one (answers after 3 s); to a dead one (a port nothing listens on). Each gets a fixed
// 1,000 req/s open loop (latency from each request's scheduled send time) and the primary's p50/p99/max
// are put next to veer's own shadow counters (GET /v1/stats) and its RSS. One more, `20 clients`, sends
// a fixed number of requests from 20 closed-loop clients as fast as they go to the healthy shadow with the
// default shadow settings (a shadow that keeps up): its delivery is issue 18's goal (≥ 99.9%).
// Rounds are interleaved, medians reported.
// Env: BENCH_ROUNDS (default 3), BENCH_SECONDS (measured seconds per scenario, default 10),
// BENCH_REQUESTS (requests of the `20 clients` scenario per round, default 20,000).

import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { positiveInt, startHarness } from './harness.ts'
import { type CountResult, closedLoop, fixedRate, type LatencyResult } from './load.ts'
import { describeMachine, machineLine } from './machine.ts'
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
    only: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
if (args.help) {
  console.log(`usage: node bench/shadow-scenarios.ts [--quick] [--only a,b]
  --quick     one short round (3 s per scenario, 2,000 requests for \`20 clients\`) for smoke testing
  --only      comma-separated scenarios: none, healthy, slow, dead, 20-clients (default all)
  env BENCH_ROUNDS (default 3), BENCH_SECONDS (measured seconds per scenario, default 10),
  BENCH_REQUESTS (requests per round of the 20-clients scenario, default 20,000)`)
  process.exit(0)
}

const { root, resultsDir, tmpDir, startedAt, log, interrupted } = startHarness('veer-shadow-bench', 15)

const quick = args.quick
const SLOW_MS = 3000
const settings = {
  rounds: quick ? 1 : positiveInt(process.env.BENCH_ROUNDS, 3, 20),
  seconds: quick ? 3 : positiveInt(process.env.BENCH_SECONDS, 10, 120),
  rate: 1000,
  /** the closed-loop scenario: this many requests per round from this many clients */
  closedRequests: quick ? 2000 : positiveInt(process.env.BENCH_REQUESTS, 20_000, 1_000_000),
  closedClients: 20,
  leadInSeconds: 0.5,
  slowShadowMs: SLOW_MS,
  /**
   * After the load, how long to wait for shadow requests still in flight before reading the counters:
   * veer's shadow pool defaults to 64 in flight over 64 connections, so a 3 s shadow needs 3 s; a
   * configured pool with fewer connections than copies in flight needs more (16 of 64: 4 × 3 s).
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
  /** its --only name */
  key: string
  about: string
  /** closed loop (settings.closedRequests from settings.closedClients) instead of the fixed rate */
  closed?: boolean
  /** the shadow's port, or null for no shadow; called once per round (the dead port is fresh each time) */
  shadowPort: (() => Promise<number>) | null
}

const allScenarios: readonly Scenario[] = [
  { name: 'no shadow', key: 'none', about: 'veer forwarding to stable, no --shadow', shadowPort: null },
  {
    name: 'healthy shadow',
    key: 'healthy',
    about: '--shadow to a second fast upstream answering as stable does',
    shadowPort: async () => healthy.port,
  },
  {
    name: 'slow shadow',
    key: 'slow',
    about: `--shadow to an upstream answering every request after ${SLOW_MS / 1000} s`,
    shadowPort: async () => slow.port,
  },
  {
    name: 'dead shadow',
    key: 'dead',
    about: '--shadow to a loopback port nothing listens on (connection refused)',
    shadowPort: freePort,
  },
  {
    name: '20 clients',
    key: '20-clients',
    closed: true,
    about:
      `${settings.closedRequests.toLocaleString('en-US')} GET / from ${settings.closedClients} closed-loop ` +
      'clients as fast as they go (each opens its connection cold), --shadow to the healthy upstream with ' +
      'the default shadow settings: a shadow that keeps up',
    shadowPort: async () => healthy.port,
  },
]
const wanted = args.only === undefined ? null : new Set(args.only.split(',').map((x) => x.trim()))
for (const k of wanted ?? []) {
  if (!allScenarios.some((s) => s.key === k)) {
    console.error(`--only: no scenario ${k}; expected some of ${allScenarios.map((s) => s.key).join(', ')}`)
    process.exit(2)
  }
}
const scenarios = allScenarios.filter((s) => wanted === null || wanted.has(s.key))

interface Shadow {
  sent: number
  dropped: number
  errors: number
  compared: number
}

interface Round {
  round: number
  /** the fixed-rate scenarios' latency; null for the closed loop */
  latency: LatencyResult | null
  /** the closed loop's count; null for the fixed-rate scenarios */
  closed: CountResult | null
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
    /** the lowest round's delivery */
    worstDeliveryRate: number | null
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

/** Waits (at most `ms`) for no shadow request to be in flight; returns how many still are. */
async function drainShadow(running: Running, ms: number): Promise<number> {
  let inflight = await shadowInflight(running)
  const deadline = performance.now() + ms
  while (inflight > 0 && performance.now() < deadline) {
    await sleep(100)
    inflight = await shadowInflight(running)
  }
  return inflight
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
    // The preflight's own copies end before the counters are read, so none is counted in the phase.
    if (shadowPort !== null) await drainShadow(running, settings.shadowDrainMs)
    const requests0 = await stableRequests(running)
    const shadow0 = shadowOf(await shadowCounters(running))
    const rss0 = rssKiB(proc.pid)

    const latency = scenario.closed
      ? null
      : await fixedRate(
          { origin, path: '/' },
          { rate: settings.rate, seconds: settings.seconds, leadInSeconds: settings.leadInSeconds },
        )
    const closed = scenario.closed
      ? await closedLoop(
          { origin, path: '/' },
          { requests: settings.closedRequests, clients: settings.closedClients },
        )
      : null
    const rss1 = rssKiB(proc.pid)

    // Shadow answers can come up to SLOW_MS after the last request: wait for them (bounded).
    const inflight = shadowPort === null ? 0 : await drainShadow(running, settings.shadowDrainMs)
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
      closed,
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
      const l = r.latency
      log(
        `[round ${round}/${settings.rounds}] ${scenario.name.padEnd(15)} ` +
          (l === null
            ? `${Math.round(r.closed!.ok / r.closed!.seconds)} req/s`
            : `p50 ${l.p50Ms.toFixed(2)} ms p99 ${l.p99Ms.toFixed(2)} ms max ${l.maxMs.toFixed(1)} ms`) +
          ` · errors ${primaryErrors(r)} · ${r.requests} req` +
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

function primaryErrors(r: Round): number {
  return r.latency === null ? r.closed!.errors : r.latency.errors + r.latency.timedOut
}

for (const r of results) {
  r.errors = r.rounds.reduce((a, x) => a + primaryErrors(x), 0)
  if (r.rounds.length === 0) continue
  const m = (f: (x: Round) => number) => median(r.rounds.map(f))
  const withShadow = r.rounds.every((x) => x.shadow !== null)
  r.medians = {
    p50Ms: m((x) => x.latency?.p50Ms ?? Number.NaN),
    p99Ms: m((x) => x.latency?.p99Ms ?? Number.NaN),
    maxMs: m((x) => x.latency?.maxMs ?? Number.NaN),
    deliveryRate: withShadow ? m((x) => x.deliveryRate!) : null,
    worstDeliveryRate: withShadow ? Math.min(...r.rounds.map((x) => x.deliveryRate!)) : null,
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
  const fmt = (n: number, digits = 2) =>
    Number.isNaN(n) ? '—' : Number.isFinite(n) ? n.toFixed(digits) : '∞'
  const int = (n: number) => Math.round(n).toLocaleString('en-US')
  const percent = (x: number) => `${(100 * x).toFixed(x >= 0.99 ? 2 : 1)}%`
  const noShadow = results.find((r) => r.name === 'no shadow')
  const base = noShadow?.medians?.p99Ms ?? Number.NaN
  const lines = [
    '# veer shadow mirroring: primary latency and shadow delivery',
    '',
    machineLine(date, machine),
    '',
    `Medians of ${settings.rounds} round(s), scenarios interleaved within each round; veer started fresh for ` +
      `every scenario and round. Load: Node open-loop generator at a fixed ${int(settings.rate)} req/s of GET / ` +
      `(~100 B answers) for ${settings.seconds} s after an unrecorded ${settings.leadInSeconds} s lead-in, ` +
      'latency from each request’s scheduled send time (no coordinated omission); `20 clients` instead sends ' +
      `${int(settings.closedRequests)} requests from ${settings.closedClients} closed-loop clients (no latency ` +
      'figures). Pinning: ' +
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
    const delta =
      r === noShadow || Number.isNaN(m.p99Ms - base)
        ? '—'
        : `${m.p99Ms - base >= 0 ? '+' : ''}${fmt(m.p99Ms - base)} ms`
    const delivery =
      m.deliveryRate === null
        ? '—'
        : r.rounds.length > 1
          ? `${percent(m.deliveryRate)} (worst ${percent(m.worstDeliveryRate!)})`
          : percent(m.deliveryRate)
    lines.push(
      `| ${r.name} | ${fmt(m.p50Ms)} | ${fmt(m.p99Ms)} | ${delta} | ${fmt(m.maxMs, 1)} | ${r.errors} | ` +
        `${int(m.requests)} | ${s === null ? '—' : int(s.sent)} | ${s === null ? '—' : int(s.dropped)} | ` +
        `${s === null ? '—' : int(s.errors)} | ${s === null ? '—' : int(s.compared)} | ` +
        `${delivery} | ` +
        `${fmt(m.rssBeforeMiB, 1)} | ${fmt(m.rssAfterMiB, 1)} |`,
    )
  }
  lines.push(
    '',
    'errors: failed or unanswered primary requests, summed over all rounds. requests: user requests veer ' +
      'answered from stable over the phase (`veer_requests_total{version="stable"}`, lead-in included). ' +
      'Shadow columns: differences of `GET /v1/stats` `routes[0].shadow` over the phase, read once no shadow ' +
      `request is in flight (waiting at most ${settings.shadowDrainMs / 1000} s). delivery = compared / ` +
      'requests: the share of user requests whose shadow answer arrived and was compared with the primary’s ' +
      '(median over the rounds; with more than one, the worst round beside it). ' +
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
