/**
 * The canary judge: accumulates the per-interval counts proxies report for stable and canary over a
 * rollout and decides `fail` (roll back), `pass`, or `inconclusive` (too little traffic: pause, never
 * roll back, never promote). It is asked every second; every check is anytime-valid (./stats.ts), and
 * alpha is split over the enabled checks (union bound), so the chance that any look at any time during a
 * rollout fails a canary that is no worse than stable stays ≤ alpha, given independent request outcomes
 * and, for latency, i.i.d. latencies within each version.
 */
import { evidenceThreshold, type QuantileInterval, quantileInterval, RateRatioTest } from './stats.ts'
import { bucketOf, summarize } from './window.ts'

/** One version's outcomes over one report interval of one proxy (structurally config/wire.ts VersionReport). */
export interface Batch {
  readonly requests: number
  readonly errors: number
  /** Failed business outcomes (the route's outcome header); absent means 0. */
  readonly failed?: number
  /** Latency histogram counts by bucket of ./window.ts `bucketOf(ms)`; trailing zeros may be cut. */
  readonly latency: readonly number[]
}

export interface AnalysisSettings {
  /** Total false-rollback bound per rollout, split equally over the enabled checks. */
  readonly alpha: number
  /** Requests each version needs before any verdict but `inconclusive`. */
  readonly minRequests: number
  /** Fail when the sequential test says the canary's error rate is higher AND it is above `floor`. */
  readonly errors: { readonly enabled: boolean; readonly floor: number }
  /** The same test on `failed` (business outcome) counts. */
  readonly outcome: { readonly enabled: boolean; readonly floor: number }
  /**
   * Fail when the canary p95's lower confidence bound > p95Ratio × stable p95's upper bound + minDeltaMs,
   * and, when p99MaxMs is set, when the canary p99's lower confidence bound > p99MaxMs.
   */
  readonly latency: {
    readonly enabled: boolean
    readonly p95Ratio: number
    readonly minDeltaMs: number
    readonly p99MaxMs: number | null
  }
}

export const DEFAULT_ANALYSIS: AnalysisSettings = Object.freeze({
  alpha: 0.01,
  minRequests: 50,
  errors: Object.freeze({ enabled: true, floor: 0.005 }),
  outcome: Object.freeze({ enabled: true, floor: 0.005 }),
  latency: Object.freeze({ enabled: true, p95Ratio: 1.5, minDeltaMs: 5, p99MaxMs: null }),
})

export type Verdict = 'pass' | 'fail' | 'inconclusive'

export interface CheckResult {
  readonly check: 'errors' | 'outcome' | 'latency-p95' | 'latency-p99'
  readonly result: Verdict
  readonly reason: string
  /** Counts, rates, quantiles (ms), bounds (ms; null = unbounded so far), statistic and threshold. */
  readonly evidence: Record<string, number | null>
}

export interface VersionSummary {
  readonly requests: number
  readonly errors: number
  readonly errorRate: number
  readonly failed: number
  /** Quantiles of the merged latency histogram (upper bucket edges, ms); null without samples. */
  readonly p50Ms: number | null
  readonly p95Ms: number | null
  readonly p99Ms: number | null
}

export interface Judgement {
  readonly result: Verdict
  readonly reason: string
  /** One per enabled check (latency gives latency-p95, and latency-p99 when p99MaxMs is set). */
  readonly checks: readonly CheckResult[]
  readonly stable: VersionSummary
  readonly canary: VersionSummary
}

/** Enough buckets for the layout of ./window.ts; longer reports land in the last (overflow) bucket. */
const BUCKETS = bucketOf(Number.POSITIVE_INFINITY) + 1

class Totals {
  requests = 0
  errors = 0
  failed = 0
  samples = 0
  readonly latency = new Float64Array(BUCKETS)

  add(b: Batch): void {
    this.requests += b.requests
    this.errors += b.errors
    this.failed += b.failed ?? 0
    const last = BUCKETS - 1
    for (let i = 0; i < b.latency.length; i++) {
      const c = b.latency[i]!
      if (c === 0) continue
      this.latency[i < last ? i : last]! += c
      this.samples += c
    }
  }

  reset(): void {
    this.requests = 0
    this.errors = 0
    this.failed = 0
    this.samples = 0
    this.latency.fill(0)
  }

  summary(): VersionSummary {
    let end = BUCKETS
    while (end > 0 && this.latency[end - 1] === 0) end--
    // quantiles over the histogram's own total (a batch's latency counts need not add up to its requests)
    const counts = { requests: this.samples, errors: 0, failed: 0, harmed: 0, saved: 0 }
    const q = summarize({ ...counts, latency: Array.from(this.latency.subarray(0, end)) })
    return {
      requests: this.requests,
      errors: this.errors,
      errorRate: this.requests === 0 ? 0 : this.errors / this.requests,
      failed: this.failed,
      p50Ms: q.p50Ms,
      p95Ms: q.p95Ms,
      p99Ms: q.p99Ms,
    }
  }
}

function checkBatch(b: Batch, version: string): void {
  const bad = (what: string, v: unknown) => {
    throw new RangeError(`analysis: ${version} batch ${what} must be a finite count ≥ 0, got ${String(v)}`)
  }
  for (const key of ['requests', 'errors', 'failed'] as const) {
    const v = b[key]
    if (v === undefined && key === 'failed') continue
    if (typeof v !== 'number' || !(v >= 0) || v === Number.POSITIVE_INFINITY) bad(key, v)
  }
  if (!Array.isArray(b.latency)) bad('latency', b.latency)
  for (const c of b.latency)
    if (typeof c !== 'number' || !(c >= 0) || c === Number.POSITIVE_INFINITY) bad('latency', c)
}

const pct = (rate: number) => `${(rate * 100).toFixed(rate > 0 && rate < 0.001 ? 2 : 1)}%`
const ms = (v: number | null) =>
  v === null ? '—' : Number.isFinite(v) ? `${Math.round(v * 10) / 10} ms` : '∞'
const round3 = (v: number) => Math.round(v * 1000) / 1000
/** Bounds in evidence: ms rounded to µs, null when unbounded. */
const bound = (v: number) => (Number.isFinite(v) ? round3(v) : null)

export class Analysis {
  readonly settings: AnalysisSettings
  readonly #stable = new Totals()
  readonly #canary = new Totals()
  readonly #errors = new RateRatioTest()
  readonly #outcome = new RateRatioTest()

  constructor(settings: AnalysisSettings = DEFAULT_ANALYSIS) {
    if (!(settings.alpha > 0 && settings.alpha < 1)) {
      throw new RangeError(`analysis: alpha must be in (0, 1), got ${settings.alpha}`)
    }
    this.settings = settings
  }

  /** One proxy's one interval. Throws a RangeError (and changes nothing) on negative or non-finite counts. */
  add(stable: Batch, canary: Batch): void {
    checkBatch(stable, 'stable')
    checkBatch(canary, 'canary')
    this.#stable.add(stable)
    this.#canary.add(canary)
    this.#errors.add(canary.requests, canary.errors, stable.requests, stable.errors)
    this.#outcome.add(canary.requests, canary.failed ?? 0, stable.requests, stable.failed ?? 0)
  }

  reset(): void {
    this.#stable.reset()
    this.#canary.reset()
    this.#errors.reset()
    this.#outcome.reset()
  }

  judge(): Judgement {
    const s = this.settings
    const stable = this.#stable.summary()
    const canary = this.#canary.summary()
    const enabled = [s.errors.enabled, s.outcome.enabled, s.latency.enabled].filter(Boolean).length
    const alpha = enabled === 0 ? s.alpha : s.alpha / enabled
    const short = stable.requests < s.minRequests || canary.requests < s.minRequests
    const checks: CheckResult[] = []
    if (s.errors.enabled) {
      checks.push(
        this.#rateCheck('errors', this.#errors, alpha, s.errors.floor, short, [canary.errors, stable.errors]),
      )
    }
    if (s.outcome.enabled) {
      checks.push(
        this.#rateCheck('outcome', this.#outcome, alpha, s.outcome.floor, short, [
          canary.failed,
          stable.failed,
        ]),
      )
    }
    if (s.latency.enabled) checks.push(...this.#latencyChecks(alpha, short, stable, canary))

    const failed = checks.filter((c) => c.result === 'fail')
    let result: Verdict
    let reason: string
    if (failed.length > 0) {
      result = 'fail'
      reason = failed.map((c) => c.reason).join('; ')
    } else if (short) {
      result = 'inconclusive'
      reason =
        `too little traffic: canary ${canary.requests} of ${s.minRequests} requests, ` +
        `stable ${stable.requests} of ${s.minRequests}`
    } else {
      result = 'pass'
      reason =
        checks.length === 0
          ? 'no checks enabled'
          : `no regression shown over ${canary.requests} canary and ${stable.requests} stable requests`
    }
    return { result, reason, checks, stable, canary }
  }

  #rateCheck(
    check: 'errors' | 'outcome',
    test: RateRatioTest,
    alpha: number,
    floor: number,
    short: boolean,
    [canaryEvents, stableEvents]: [number, number],
  ): CheckResult {
    const c = this.#canary.requests
    const st = this.#stable.requests
    const canaryRate = c === 0 ? 0 : canaryEvents / c
    const stableRate = st === 0 ? 0 : stableEvents / st
    const evidence = test.evidence
    const threshold = evidenceThreshold(alpha)
    const rejected = evidence >= threshold
    const aboveFloor = canaryRate > floor
    const result: Verdict = short ? 'inconclusive' : rejected && aboveFloor ? 'fail' : 'pass'
    const figures =
      `${check}: canary ${pct(canaryRate)} (${canaryEvents}/${c}) vs stable ${pct(stableRate)} ` +
      `(${stableEvents}/${st}), evidence ${evidence.toFixed(1)} ${rejected ? '≥' : '<'} ${threshold.toFixed(1)}`
    const reason =
      rejected && !aboveFloor
        ? `${figures}, but canary ${pct(canaryRate)} is not above the ${pct(floor)} floor`
        : short
          ? `${figures} (too little traffic to judge)`
          : figures
    return {
      check,
      result,
      reason,
      evidence: {
        canaryRequests: c,
        canaryEvents,
        canaryRate,
        stableRequests: st,
        stableEvents,
        stableRate,
        evidence,
        peakEvidence: test.peak,
        threshold,
        alpha,
        floor,
        batches: test.batches,
      },
    }
  }

  #latencyChecks(
    alpha: number,
    short: boolean,
    stableSummary: VersionSummary,
    canarySummary: VersionSummary,
  ): CheckResult[] {
    const l = this.settings.latency
    // Each comparison uses one side of each confidence sequence; the union bound covers the sides used.
    const sides = l.p99MaxMs === null ? 2 : 3
    const a = alpha / sides
    const canary = this.#canary
    const stable = this.#stable
    const c95 = quantileInterval(canary.latency, canary.samples, 0.95, a)
    const s95 = quantileInterval(stable.latency, stable.samples, 0.95, a)
    const limit = l.p95Ratio * s95.upper + l.minDeltaMs
    const slower = c95.lower > limit
    const p95Result: Verdict = short ? 'inconclusive' : slower ? 'fail' : 'pass'
    const p95Reason =
      `latency-p95: canary p95 ${ms(canarySummary.p95Ms)} (lower bound ${ms(c95.lower)}) ` +
      `${slower ? '>' : '≤'} ${l.p95Ratio} × stable p95 upper bound ${ms(s95.upper)} + ${l.minDeltaMs} ms ` +
      `= ${ms(limit)} (stable p95 ${ms(stableSummary.p95Ms)})` +
      (short ? ' (too little traffic to judge)' : '')
    const out: CheckResult[] = [
      {
        check: 'latency-p95',
        result: p95Result,
        reason: p95Reason,
        evidence: {
          canarySamples: c95.n,
          stableSamples: s95.n,
          canaryP95Ms: canarySummary.p95Ms,
          canaryP95LowerMs: bound(c95.lower),
          stableP95Ms: stableSummary.p95Ms,
          stableP95UpperMs: bound(s95.upper),
          limitMs: bound(limit),
          p95Ratio: l.p95Ratio,
          minDeltaMs: l.minDeltaMs,
          alpha: a,
        },
      },
    ]
    if (l.p99MaxMs !== null) {
      const c99: QuantileInterval = quantileInterval(canary.latency, canary.samples, 0.99, a)
      const over = c99.lower > l.p99MaxMs
      out.push({
        check: 'latency-p99',
        result: short ? 'inconclusive' : over ? 'fail' : 'pass',
        reason:
          `latency-p99: canary p99 ${ms(canarySummary.p99Ms)} (lower bound ${ms(c99.lower)}) ` +
          `${over ? '>' : '≤'} ${l.p99MaxMs} ms` +
          (short ? ' (too little traffic to judge)' : ''),
        evidence: {
          canarySamples: c99.n,
          canaryP99Ms: canarySummary.p99Ms,
          canaryP99LowerMs: bound(c99.lower),
          canaryP99UpperMs: bound(c99.upper),
          p99MaxMs: l.p99MaxMs,
          alpha: a,
        },
      })
    }
    return out
  }
}
