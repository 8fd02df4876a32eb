// Canary judge simulation:  node bench/analysis-sim.ts [--quick]
// Drives proxy/analysis/judge.ts `Analysis` with synthetic per-second batches (no sockets, no proxy) and
// reports (1) the A/A false-rollback rate over stepped rollouts judged every second and (2) detection
// time and harmed requests for error-rate and latency regressions at fixed canary weights.
// Seeded: the same settings give the same figures. Jobs run on worker threads, one per core.
// Env: SIM_SEED (default 1), SIM_AA_ROLLOUTS (A/A rollouts at 200 req/s, default 2000),
// SIM_AA_ROLLOUTS_FAST (at 2,000 req/s, default 1000), SIM_RUNS (runs per detection cell, default 200).

import { mkdirSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { isMainThread, parentPort, Worker } from 'node:worker_threads'
import { Analysis, DEFAULT_ANALYSIS } from '../proxy/analysis/judge.ts'
import { bucketOf, bucketUpperMs } from '../proxy/analysis/window.ts'
import { positiveInt, startHarness } from './harness.ts'
import { describeMachine } from './machine.ts'
import { percentile } from './stats.ts'

// ---------------------------------------------------------------------------------------------------
// The model

/** Latencies: lognormal with median 20 ms and p95 60 ms (σ = ln 3 / z.95 ≈ 0.668; p99 ≈ 95 ms). */
const MEDIAN_MS = 20
const SIGMA = Math.log(3) / 1.6448536269514722
const BUCKETS = bucketOf(Number.POSITIVE_INFINITY) + 1

interface Model {
  readonly errorRate: number
  /** business-outcome failures (`failed`), independent of errors */
  readonly failedRate: number
  /** added to every request's latency */
  readonly extraMs: number
}

interface Step {
  readonly weight: number
  readonly seconds: number
}

interface Job {
  readonly id: string
  readonly seed: number
  readonly rate: number
  readonly runs: number
  /** canary weight over time; a fixed weight is one step of maxSeconds */
  readonly plan: readonly Step[]
  readonly stable: Model
  readonly canary: Model
  /** what counts as a harmed canary request before the verdict */
  readonly harm: 'errors' | 'slow'
}

interface RunOutcome {
  /** seconds from the rollout start to the first `fail`; null when none came */
  readonly second: number | null
  /** the checks that failed at that second, joined with + */
  readonly check: string | null
  readonly harmed: number
  readonly canaryRequests: number
}

interface JobResult {
  readonly id: string
  readonly outcomes: RunOutcome[]
  readonly ms: number
}

/** sfc32 (128-bit state; period far beyond the ~10⁹ draws here), seeded through a splitmix-style mix. */
function sfc32(seed: number): () => number {
  let a = 0x9e3779b9
  let b = 0x243f6a88
  let c = 0xb7e15162
  let d = seed | 0
  const next = () => {
    const t = (((a + b) | 0) + d) | 0
    d = (d + 1) | 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) | 0
    c = (c << 21) | (c >>> 11)
    c = (c + t) | 0
    return (t >>> 0) / 4294967296
  }
  for (let i = 0; i < 20; i++) next()
  return next
}

function mixSeed(seed: number, index: number): number {
  let h = Math.imul(seed ^ 0x85ebca6b, 0xc2b2ae35) ^ Math.imul(index + 1, 0x27d4eb2f)
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b)
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35)
  return (h ^ (h >>> 16)) | 0
}

/** erfc with fractional error < 1.2e-7 (Numerical Recipes' erfcc), plenty for a sampling table. */
function erfc(x: number): number {
  const z = Math.abs(x)
  const t = 1 / (1 + 0.5 * z)
  const poly =
    -1.26551223 +
    t *
      (1.00002368 +
        t *
          (0.37409196 +
            t *
              (0.09678418 +
                t *
                  (-0.18628806 +
                    t *
                      (0.27886807 +
                        t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
  const r = t * Math.exp(-z * z + poly)
  return x >= 0 ? r : 2 - r
}

/** P(lognormal + extraMs < x) */
function latencyCdf(x: number, extraMs: number): number {
  const y = x - extraMs
  if (y <= 0) return 0
  if (y === Number.POSITIVE_INFINITY) return 1
  return 0.5 * erfc(-(Math.log(y / MEDIAN_MS) / SIGMA) / Math.SQRT2)
}

/**
 * Draws a latency bucket in O(1) (Walker/Vose alias table over the exact bucket probabilities of the
 * shifted lognormal, bucket b holding [bucketUpperMs(b − 1), bucketUpperMs(b)) as `bucketOf` assigns).
 */
class BucketSampler {
  readonly p: Float64Array
  readonly #prob = new Float64Array(BUCKETS)
  readonly #alias = new Int32Array(BUCKETS)

  constructor(extraMs: number) {
    this.p = new Float64Array(BUCKETS)
    for (let b = 0; b < BUCKETS; b++) {
      const lo = b === 0 ? 0 : bucketUpperMs(b - 1)
      const hi = b === BUCKETS - 1 ? Number.POSITIVE_INFINITY : bucketUpperMs(b)
      this.p[b] = Math.max(0, latencyCdf(hi, extraMs) - latencyCdf(lo, extraMs))
    }
    const sum = this.p.reduce((x, y) => x + y, 0)
    const scaled = Float64Array.from(this.p, (v) => (v / sum) * BUCKETS)
    const small: number[] = []
    const large: number[] = []
    for (let i = 0; i < BUCKETS; i++) (scaled[i]! < 1 ? small : large).push(i)
    while (small.length > 0 && large.length > 0) {
      const s = small.pop()!
      const l = large.pop()!
      this.#prob[s] = scaled[s]!
      this.#alias[s] = l
      scaled[l] = scaled[l]! + scaled[s]! - 1
      ;(scaled[l]! < 1 ? small : large).push(l)
    }
    for (const i of [...small, ...large]) {
      this.#prob[i] = 1
      this.#alias[i] = i
    }
  }

  sample(u: number): number {
    const x = u * BUCKETS
    const i = x | 0
    return x - i < this.#prob[i]! ? i : this.#alias[i]!
  }
}

/** The sampler against the real thing: lognormal draws bucketed with `bucketOf`. Throws when off. */
function checkSampler(extraMs: number, rng: () => number): number {
  const n = 200_000
  const counts = new Float64Array(BUCKETS)
  for (let i = 0; i < n; i++) {
    const z = Math.sqrt(-2 * Math.log(1 - rng())) * Math.cos(2 * Math.PI * rng())
    counts[bucketOf(MEDIAN_MS * Math.exp(SIGMA * z) + extraMs)]!++
  }
  const s = new BucketSampler(extraMs)
  let worst = 0
  for (let b = 0; b < BUCKETS; b++) worst = Math.max(worst, Math.abs(counts[b]! / n - s.p[b]!))
  if (worst > 0.004) throw new Error(`latency sampler off by ${worst} for +${extraMs} ms`)
  return worst
}

interface MutableBatch {
  requests: number
  errors: number
  failed: number
  readonly latency: number[]
}

function fill(out: MutableBatch, rng: () => number, n: number, m: Model, sampler: BucketSampler): void {
  let errors = 0
  let failed = 0
  const latency = out.latency
  latency.fill(0)
  for (let i = 0; i < n; i++) {
    if (rng() < m.errorRate) errors++
    if (rng() < m.failedRate) failed++
    latency[sampler.sample(rng())]!++
  }
  out.requests = n
  out.errors = errors
  out.failed = failed
}

function runJob(job: Job): JobResult {
  const started = performance.now()
  const rng = sfc32(job.seed)
  const analysis = new Analysis(DEFAULT_ANALYSIS)
  const stableSampler = new BucketSampler(job.stable.extraMs)
  const canarySampler = new BucketSampler(job.canary.extraMs)
  const stable: MutableBatch = {
    requests: 0,
    errors: 0,
    failed: 0,
    latency: new Array<number>(BUCKETS).fill(0),
  }
  const canary: MutableBatch = {
    requests: 0,
    errors: 0,
    failed: 0,
    latency: new Array<number>(BUCKETS).fill(0),
  }
  const outcomes: RunOutcome[] = []
  for (let r = 0; r < job.runs; r++) {
    analysis.reset()
    let t = 0
    let harmed = 0
    let canaryRequests = 0
    let outcome: RunOutcome | null = null
    for (const step of job.plan) {
      for (let s = 0; s < step.seconds && outcome === null; s++) {
        t++
        let c = 0
        for (let i = 0; i < job.rate; i++) if (rng() < step.weight) c++
        fill(stable, rng, job.rate - c, job.stable, stableSampler)
        fill(canary, rng, c, job.canary, canarySampler)
        analysis.add(stable, canary)
        canaryRequests += c
        harmed += job.harm === 'slow' ? c : canary.errors
        const j = analysis.judge()
        if (j.result === 'fail') {
          const check = j.checks
            .filter((x) => x.result === 'fail')
            .map((x) => x.check)
            .join('+')
          outcome = { second: t, check, harmed, canaryRequests }
        }
      }
      if (outcome !== null) break
    }
    outcomes.push(outcome ?? { second: null, check: null, harmed, canaryRequests })
  }
  return { id: job.id, outcomes, ms: performance.now() - started }
}

// ---------------------------------------------------------------------------------------------------
// The harness (main thread)

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  if (args.help) {
    console.log(`usage: node bench/analysis-sim.ts [--quick]
  --quick     a few runs per cell, for smoke testing (figures are rough)
  env SIM_SEED (default 1), SIM_AA_ROLLOUTS (default 2000), SIM_AA_ROLLOUTS_FAST (default 1000),
      SIM_RUNS (runs per detection cell, default 200)`)
    process.exit(0)
  }
  const { resultsDir, startedAt, log } = startHarness('veer-analysis-sim', 10)
  const quick = args.quick
  const settings = {
    quick,
    seed: positiveInt(process.env.SIM_SEED, 1, 2 ** 31 - 1),
    aaRollouts: quick ? 100 : positiveInt(process.env.SIM_AA_ROLLOUTS, 2000, 1_000_000),
    aaRolloutsFast: quick ? 20 : positiveInt(process.env.SIM_AA_ROLLOUTS_FAST, 1000, 1_000_000),
    runs: quick ? 10 : positiveInt(process.env.SIM_RUNS, 200, 100_000),
    maxSeconds: 600,
    plan: [
      { weight: 0.05, seconds: 60 },
      { weight: 0.25, seconds: 60 },
      { weight: 0.5, seconds: 60 },
    ] as const,
    stableErrorRate: 0.01,
    lowStableErrorRate: 0.001,
    failedRate: 0.02,
    latency: { distribution: 'lognormal', medianMs: MEDIAN_MS, sigma: SIGMA, p95Ms: 60, p99Ms: 94.8 },
    analysis: DEFAULT_ANALYSIS,
    workers: Math.max(1, Math.min(availableParallelism(), 8)),
  }
  const machine = describeMachine()
  const samplerError = [0, 50, 200].map((ms, i) => checkSampler(ms, sfc32(mixSeed(settings.seed, 1000 + i))))
  log(
    `latency sampler vs bucketOf(lognormal draws): worst bucket off by ${Math.max(...samplerError).toFixed(4)}`,
  )

  // jobs: ids are stable so seeds (and figures) do not depend on scheduling
  const jobs: Job[] = []
  let index = 0
  const base = (errorRate: number): Model => ({ errorRate, failedRate: settings.failedRate, extraMs: 0 })
  const aaCells = [
    { rate: 200, rollouts: settings.aaRollouts },
    { rate: 2000, rollouts: settings.aaRolloutsFast },
  ]
  for (const cell of aaCells) {
    const chunk = cell.rate >= 2000 ? 50 : 250
    for (let done = 0; done < cell.rollouts; done += chunk) {
      jobs.push({
        id: `aa/${cell.rate}/${done}`,
        seed: mixSeed(settings.seed, index++),
        rate: cell.rate,
        runs: Math.min(chunk, cell.rollouts - done),
        plan: settings.plan,
        stable: base(settings.stableErrorRate),
        canary: base(settings.stableErrorRate),
        harm: 'errors',
      })
    }
  }
  const traffics = [
    { rate: 200, weight: 0.05 },
    { rate: 200, weight: 0.2 },
    { rate: 2000, weight: 0.05 },
    { rate: 2000, weight: 0.2 },
  ]
  interface Effect {
    name: string
    canary: (stableErrorRate: number) => Model
    harm: 'errors' | 'slow'
  }
  const errorsTimes = (k: number): Effect => ({
    name: `error rate ×${k}`,
    canary: (p) => ({ errorRate: Math.min(1, k * p), failedRate: settings.failedRate, extraMs: 0 }),
    harm: 'errors',
  })
  const slower = (ms: number): Effect => ({
    name: `latency +${ms} ms`,
    canary: (p) => ({ errorRate: p, failedRate: settings.failedRate, extraMs: ms }),
    harm: 'slow',
  })
  const effects = [errorsTimes(2), errorsTimes(5), errorsTimes(50), slower(50), slower(200)]
  const lowBaseEffects = [errorsTimes(2), errorsTimes(5), errorsTimes(50)]
  const cells: Array<{ table: 'base' | 'low'; effect: string; rate: number; weight: number; id: string }> = []
  for (const [table, list, p] of [
    ['base', effects, settings.stableErrorRate],
    ['low', lowBaseEffects, settings.lowStableErrorRate],
  ] as const) {
    for (const effect of list) {
      for (const t of traffics) {
        const id = `detect/${table}/${effect.name}/${t.rate}/${t.weight}`
        cells.push({ table, effect: effect.name, rate: t.rate, weight: t.weight, id })
        // the slow cells run long; split them so the workers share them out evenly
        const parts = t.rate >= 2000 ? 4 : 2
        const per = Math.ceil(settings.runs / parts)
        for (let part = 0, done = 0; done < settings.runs; part++, done += per) {
          jobs.push({
            id: `${id}#${part}`,
            seed: mixSeed(settings.seed, index++),
            rate: t.rate,
            runs: Math.min(per, settings.runs - done),
            plan: [{ weight: t.weight, seconds: settings.maxSeconds }],
            stable: base(p),
            canary: effect.canary(p),
            harm: effect.harm,
          })
        }
      }
    }
  }

  // run them on worker threads, longest-looking first
  const cost = (j: Job) => j.runs * j.rate * j.plan.reduce((a, s) => a + s.seconds, 0)
  const queue = [...jobs].sort((a, b) => cost(b) - cost(a))
  const results = new Map<string, JobResult>()
  log(`${jobs.length} jobs on ${settings.workers} worker thread(s)`)
  await Promise.all(
    Array.from({ length: settings.workers }, async () => {
      const worker = new Worker(new URL(import.meta.url))
      try {
        for (let job = queue.shift(); job !== undefined; job = queue.shift()) {
          const current = job
          const result = await new Promise<JobResult>((resolve, reject) => {
            worker.once('message', resolve)
            worker.once('error', reject)
            worker.postMessage(current)
          })
          worker.removeAllListeners('error')
          results.set(result.id, result)
          if (results.size % 20 === 0) log(`${results.size}/${jobs.length} jobs done`)
        }
      } finally {
        await worker.terminate()
      }
    }),
  )
  const wallSeconds = (performance.now() - startedAt) / 1000
  const outcomesOf = (prefix: string) =>
    [...results.values()]
      .filter((r) => r.id.startsWith(prefix))
      .sort((a, b) => a.id.localeCompare(b.id, 'en', { numeric: true }))
      .flatMap((r) => r.outcomes)

  // --- A/A
  const aa = aaCells.map((cell) => {
    const outcomes = outcomesOf(`aa/${cell.rate}/`)
    const fails = outcomes.filter((o) => o.second !== null)
    const byCheck: Record<string, number> = {}
    for (const f of fails) byCheck[f.check!] = (byCheck[f.check!] ?? 0) + 1
    return {
      rate: cell.rate,
      rollouts: outcomes.length,
      falseRollbacks: fails.length,
      rate95: wilson(fails.length, outcomes.length),
      byCheck,
      seconds: fails.map((f) => f.second),
    }
  })

  // --- detection
  const detection = cells.map((cell) => {
    const outcomes = outcomesOf(`${cell.id}#`)
    const times = outcomes.map((o) => o.second ?? Number.POSITIVE_INFINITY).sort((a, b) => a - b)
    const harmed = outcomes.map((o) => o.harmed).sort((a, b) => a - b)
    const byCheck: Record<string, number> = {}
    for (const o of outcomes) if (o.check !== null) byCheck[o.check] = (byCheck[o.check] ?? 0) + 1
    return {
      ...cell,
      canaryRate: cell.rate * cell.weight,
      runs: outcomes.length,
      detected: outcomes.filter((o) => o.second !== null).length,
      medianSeconds: percentile(times, 0.5),
      p90Seconds: percentile(times, 0.9),
      harmedMedian: percentile(harmed, 0.5),
      harmedP90: percentile(harmed, 0.9),
      byCheck,
    }
  })

  const markdown = render(settings, machine, aa, detection, wallSeconds)
  mkdirSync(resultsDir, { recursive: true })
  writeFileSync(join(resultsDir, 'analysis-sim.md'), markdown)
  const json = {
    date: new Date().toISOString(),
    machine,
    settings,
    aa,
    detection: detection.map((d) => ({
      ...d,
      medianSeconds: finiteOrNull(d.medianSeconds),
      p90Seconds: finiteOrNull(d.p90Seconds),
    })),
    jobSeconds: Object.fromEntries([...results.values()].map((r) => [r.id, Math.round(r.ms) / 1000])),
    wallSeconds,
  }
  writeFileSync(join(resultsDir, 'analysis-sim.json'), `${JSON.stringify(json, null, 2)}\n`)
  process.stdout.write(`\n${markdown}\n`)
  log(`wrote bench/results/analysis-sim.md and bench/results/analysis-sim.json (${wallSeconds.toFixed(0)} s)`)
  process.exit(0)
}

function finiteOrNull(v: number): number | null {
  return Number.isFinite(v) ? v : null
}

/** Wilson score interval for k successes in n trials at 95%. */
function wilson(k: number, n: number): { low: number; high: number } {
  const z = 1.959963984540054
  const z2 = z * z
  const centre = (k + z2 / 2) / (n + z2)
  const half = (z * Math.sqrt((k * (n - k)) / n + z2 / 4)) / (n + z2)
  return { low: Math.max(0, centre - half), high: Math.min(1, centre + half) }
}

// ---------------------------------------------------------------------------------------------------
// Markdown

const int = (n: number) => Math.round(n).toLocaleString('en-US')
const pct = (x: number, d = 2) => `${(100 * x).toFixed(d)}%`

function render(
  settings: {
    quick: boolean
    seed: number
    runs: number
    maxSeconds: number
    plan: readonly Step[]
    stableErrorRate: number
    lowStableErrorRate: number
    failedRate: number
    workers: number
  },
  machine: ReturnType<typeof describeMachine>,
  aa: ReadonlyArray<{
    rate: number
    rollouts: number
    falseRollbacks: number
    rate95: { low: number; high: number }
    byCheck: Record<string, number>
  }>,
  detection: ReadonlyArray<{
    table: 'base' | 'low'
    effect: string
    rate: number
    weight: number
    canaryRate: number
    runs: number
    detected: number
    medianSeconds: number
    p90Seconds: number
    harmedMedian: number
    harmedP90: number
    byCheck: Record<string, number>
  }>,
  wallSeconds: number,
): string {
  const d = DEFAULT_ANALYSIS
  const secs = (v: number) => (Number.isFinite(v) ? int(v) : `> ${settings.maxSeconds}`)
  const fired = (byCheck: Record<string, number>) =>
    Object.keys(byCheck).length === 0
      ? '—'
      : Object.entries(byCheck)
          .sort((a, b) => b[1] - a[1])
          .map(([k, v]) => `${k} ${v}`)
          .join(', ')
  const planText = settings.plan.map((s) => `${s.weight * 100}%`).join(' → ')
  const planSeconds = settings.plan.reduce((a, s) => a + s.seconds, 0)
  const lines = [
    '# veer canary judge: simulated rollouts',
    '',
    `${new Date().toISOString().slice(0, 10)} · ${machine.nproc} cores · ${machine.cpuModel} · Node ${machine.node}` +
      (settings.quick ? ' · --quick smoke run: figures are rough' : ''),
    '',
    '`bench/analysis-sim.ts` drives `Analysis` (proxy/analysis/judge.ts) with synthetic one-second batches — ' +
      'no sockets, one proxy, one batch per version per second — and asks for a verdict after every batch; ' +
      'the first `fail` ends a run (a rollback). Each second exactly R requests arrive and each goes to the ' +
      'canary with probability equal to the weight. Every request is independently an error (Bernoulli), a ' +
      `business failure (\`failed\`, Bernoulli ${pct(settings.failedRate, 0)} on both versions), and has a ` +
      'latency drawn from a lognormal with median 20 ms and p95 60 ms (σ = ln 3 / 1.645 ≈ 0.668; p99 ≈ 95 ms), ' +
      'plus the effect, counted in the bucket `bucketOf` gives (drawn from the exact bucket probabilities; ' +
      'checked at start against 200,000 bucketed draws). Judge settings are the defaults: ' +
      `alpha ${d.alpha} split over errors, outcome and latency (each ${+(d.alpha / 3).toFixed(5)}; latency ` +
      `halves its share between canary-p95-lower and stable-p95-upper), minRequests ${d.minRequests}, ` +
      `floors ${pct(d.errors.floor, 1)}, p95 ratio ${d.latency.p95Ratio} + ${d.latency.minDeltaMs} ms, no p99 cap. ` +
      `Seed ${settings.seed}; ${settings.workers} worker thread(s).`,
    '',
    '## A/A: false rollbacks',
    '',
    `Canary and stable identical (errors ${pct(settings.stableErrorRate, 0)}, failed ${pct(settings.failedRate, 0)}, ` +
      `same latency). Plan ${planText}, ${settings.plan[0]!.seconds} s per step (${planSeconds} s), judged ` +
      'every second; a rollout counts once if any judgement in it said `fail`. Goal ≤ 1%. Interval: Wilson 95%.',
    '',
    '| traffic | rollouts | false rollbacks | rate | 95% interval | checks that fired |',
    '| --- | ---: | ---: | ---: | --- | --- |',
    ...aa.map(
      (a) =>
        `| ${int(a.rate)} req/s | ${int(a.rollouts)} | ${a.falseRollbacks} | ${pct(a.falseRollbacks / a.rollouts)} | ` +
        `${pct(a.rate95.low)} – ${pct(a.rate95.high)} | ${fired(a.byCheck)} |`,
    ),
    '',
  ]
  const table = (which: 'base' | 'low') => {
    const rows = detection.filter((x) => x.table === which)
    return [
      `| effect | traffic | canary req/s | runs | median s | p90 s | not detected in ${settings.maxSeconds} s | harmed median | harmed p90 | checks that fired |`,
      '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
      ...rows.map(
        (r) =>
          `| ${r.effect} | ${r.weight * 100}% of ${int(r.rate)} req/s | ${int(r.canaryRate)} | ${r.runs} | ` +
          `${secs(r.medianSeconds)} | ${secs(r.p90Seconds)} | ${pct((r.runs - r.detected) / r.runs, 0)} | ` +
          `${int(r.harmedMedian)} | ${int(r.harmedP90)} | ${fired(r.byCheck)} |`,
      ),
    ]
  }
  lines.push(
    '## Detection',
    '',
    `Fixed canary weight (no steps), stable error rate ${pct(settings.stableErrorRate, 0)}; runs end at the first ` +
      `\`fail\` or after ${settings.maxSeconds} s. Seconds count from the rollout start (the first ` +
      `${d.minRequests} canary requests are needed before any verdict). Harmed: canary requests that failed ` +
      '(errors) up to and including the verdict second for error effects — all of them, including the ' +
      `${pct(settings.stableErrorRate, 0)} that stable also has — and every canary request served up to the ` +
      `verdict for latency effects (each one was slowed); runs without a verdict count their ${settings.maxSeconds} s. ` +
      'A median or p90 of "> N" means more than that share of runs saw no verdict.',
    '',
    ...table('base'),
    '',
    `### Low base error rate (stable ${pct(settings.lowStableErrorRate, 1)}) against the ${pct(d.errors.floor, 1)} floor`,
    '',
    `With stable at ${pct(settings.lowStableErrorRate, 1)} a ×2 canary (0.2%) stays under the floor and is never ` +
      'rolled back by design; ×5 (0.5%) sits on it and fails only while its observed rate happens to be above ' +
      '0.5%; ×50 (5%) is caught.',
    '',
    ...table('low'),
    '',
    `Wall time ${wallSeconds.toFixed(0)} s.`,
    '',
  )
  return lines.join('\n')
}

// Last, so every constant above is initialised before main() suspends the module at its first await.
if (!isMainThread) {
  parentPort!.on('message', (job: Job) => parentPort!.postMessage(runJob(job)))
} else {
  await main()
}
