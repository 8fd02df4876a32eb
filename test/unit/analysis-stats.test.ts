import { describe, expect, it } from 'vitest'
import {
  bucketLowerMs,
  evidenceThreshold,
  logGamma,
  quantileInterval,
  quantileRanks,
  RATIO_GRID,
  RateRatioTest,
} from '../../proxy/analysis/stats.ts'
import { bucketOf, bucketUpperMs } from '../../proxy/analysis/window.ts'
import { rng } from '../helpers/rng.ts'

/** Binomial(n, p) by inversion (exact; O(n·p) work, meant for small means). */
function binomial(rand: () => number, n: number, p: number): number {
  if (n <= 0 || p <= 0) return 0
  if (p >= 1) return n
  if (p > 0.5) return n - binomial(rand, n, 1 - p)
  let pmf = (1 - p) ** n
  if (pmf < 1e-300) {
    let k = 0
    for (let i = 0; i < n; i++) if (rand() < p) k++
    return k
  }
  const ratio = p / (1 - p)
  const u = rand()
  let cdf = pmf
  let k = 0
  while (u > cdf && k < n) {
    pmf *= (ratio * (n - k)) / (k + 1)
    k++
    cdf += pmf
  }
  return k
}

/** Standard normal by Box–Muller. */
function normal(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand())
}

function lnChoose(n: number, k: number): number {
  return logGamma(n + 1) - logGamma(k + 1) - logGamma(n - k + 1)
}

/** The allowed observed rate for a true rate ≤ p over `runs` trials: p plus three binomial standard errors. */
const tolerance = (p: number, runs: number) => p + 3 * Math.sqrt((p * (1 - p)) / runs)

describe('logGamma', () => {
  it('matches known values', () => {
    expect(logGamma(1)).toBeCloseTo(0, 13)
    expect(logGamma(2)).toBeCloseTo(0, 13)
    expect(logGamma(0.5)).toBeCloseTo(Math.log(Math.sqrt(Math.PI)), 13)
    expect(logGamma(10)).toBeCloseTo(Math.log(362_880), 12)
    expect(logGamma(0.01)).toBeCloseTo(4.599479878042022, 12)
    // Γ(x + 1) = x Γ(x) far out, where the boundary works on millions of samples
    for (const x of [20.5, 1e3, 1e6]) expect(logGamma(x + 1) - logGamma(x)).toBeCloseTo(Math.log(x), 9)
    // ln Γ(1e9) ≈ 2e10: doubles keep ~1e-6 of it, plenty against thresholds of ~5
    expect(logGamma(1e9 + 1) - logGamma(1e9)).toBeCloseTo(Math.log(1e9), 4)
  })
})

describe('rate ratio mSPRT', () => {
  it('computes the mixture of per-θ likelihood ratios', () => {
    const t = new RateRatioTest()
    t.add(100, 10, 300, 5)
    t.add(50, 2, 50, 1)
    const pi0 = [100 / 400, 50 / 100]
    const lrs = RATIO_GRID.map((theta) => {
      const pi = [(theta * 100) / (theta * 100 + 300), (theta * 50) / (theta * 50 + 50)]
      return (
        (pi[0]! / pi0[0]!) ** 10 *
        ((1 - pi[0]!) / (1 - pi0[0]!)) ** 5 *
        (pi[1]! / pi0[1]!) ** 2 *
        ((1 - pi[1]!) / (1 - pi0[1]!)) ** 1
      )
    })
    const mean = lrs.reduce((a, b) => a + b, 0) / lrs.length
    expect(t.evidence).toBeCloseTo(Math.log(mean), 10)
    expect(t.batches).toBe(2)
    expect(t.peak).toBeGreaterThanOrEqual(t.evidence)
  })

  it('is a martingale under equal rates and a supermartingale when the canary is better (exact)', () => {
    for (const [nc, ns, e] of [
      [30, 70, 1],
      [30, 70, 12],
      [5, 995, 40],
      [500, 500, 7],
    ] as const) {
      const pi0 = nc / (nc + ns)
      for (const [pi, bound] of [
        [pi0, 'equal'],
        [pi0 * 0.7, 'below'],
      ] as const) {
        let expectation = 0
        for (let k = 0; k <= e; k++) {
          const t = new RateRatioTest()
          t.add(nc, k, ns, e - k)
          expectation += Math.exp(lnChoose(e, k) + k * Math.log(pi) + (e - k) * Math.log1p(-pi) + t.evidence)
        }
        if (bound === 'equal') expect(expectation).toBeCloseTo(1, 9)
        else expect(expectation).toBeLessThan(1)
      }
    }
  })

  it('stays a supermartingale for Bernoulli requests (hypergeometric split of the events, exact)', () => {
    for (const [nc, ns, e] of [
      [10, 30, 8],
      [3, 50, 20],
      [40, 40, 40],
    ] as const) {
      let expectation = 0
      for (let k = Math.max(0, e - ns); k <= Math.min(e, nc); k++) {
        const t = new RateRatioTest()
        t.add(nc, k, ns, e - k)
        expectation += Math.exp(lnChoose(nc, k) + lnChoose(ns, e - k) - lnChoose(nc + ns, e) + t.evidence)
      }
      expect(expectation).toBeLessThanOrEqual(1 + 1e-12)
    }
  })

  it('skips batches where one side had no requests, and batches without events', () => {
    const t = new RateRatioTest()
    t.add(20, 3, 180, 1)
    const before = t.evidence
    t.add(0, 0, 200, 50) // no canary traffic: stable's errors say nothing about the comparison
    t.add(200, 50, 0, 0) // no stable traffic
    t.add(20, 0, 180, 0) // no events
    expect(t.evidence).toBe(before)
    expect(t.batches).toBe(1)
    t.reset()
    expect(t.evidence).toBe(0)
    expect(t.peak).toBe(0)
    expect(t.batches).toBe(0)
  })

  it('false-alarms in at most alpha of 2,000 A/A streams looked at every second, where peeking a z-test does not', () => {
    const alpha = 0.05
    const threshold = evidenceThreshold(alpha)
    const rand = rng(1)
    const streams = 2000
    let alarms = 0
    let naive = 0
    for (let s = 0; s < streams; s++) {
      const t = new RateRatioTest()
      let nc = 0
      let ec = 0
      let ns = 0
      let es = 0
      let alarmed = false
      let naiveAlarmed = false
      for (let second = 0; second < 300; second++) {
        const weight = second < 100 ? 0.05 : second < 200 ? 0.25 : 0.5 // a stepped rollout
        const c = binomial(rand, 200, weight)
        const ecNow = binomial(rand, c, 0.02)
        const esNow = binomial(rand, 200 - c, 0.02)
        t.add(c, ecNow, 200 - c, esNow)
        if (t.evidence >= threshold) alarmed = true
        nc += c
        ec += ecNow
        ns += 200 - c
        es += esNow
        // what continuous monitoring does to a fixed-sample one-sided two-proportion z-test at 5%
        const pooled = (ec + es) / (nc + ns)
        const se = Math.sqrt(pooled * (1 - pooled) * (1 / nc + 1 / ns))
        if (se > 0 && (ec / nc - es / ns) / se > 1.645) naiveAlarmed = true
      }
      if (alarmed) alarms++
      if (naiveAlarmed) naive++
    }
    expect(alarms / streams).toBeLessThanOrEqual(tolerance(alpha, streams))
    expect(naive / streams).toBeGreaterThan(2 * alpha) // the simulation has teeth
  })

  it('false-alarms in at most alpha when the canary is better', () => {
    const alpha = 0.05
    const rand = rng(2)
    const streams = 1000
    let alarms = 0
    for (let s = 0; s < streams; s++) {
      const t = new RateRatioTest()
      for (let second = 0; second < 300; second++) {
        t.add(40, binomial(rand, 40, 0.015), 160, binomial(rand, 160, 0.02))
        if (t.evidence >= evidenceThreshold(alpha)) {
          alarms++
          break
        }
      }
    }
    expect(alarms / streams).toBeLessThanOrEqual(tolerance(alpha, streams))
  })

  it.each([
    [5, 0.01, 300, 0.95],
    [50, 0.01, 15, 1],
  ])(
    'detects a ×%i error rate (stable %f) within %i s in ≥ %f of runs at 20 vs 180 req/s',
    (k, p, limit, share) => {
      const alpha = 0.01 / 3 // the judge's share with three checks
      const rand = rng(k)
      const runs = 200
      let detected = 0
      for (let r = 0; r < runs; r++) {
        const t = new RateRatioTest()
        for (let second = 0; second < limit; second++) {
          t.add(20, binomial(rand, 20, k * p), 180, binomial(rand, 180, p))
          if (t.evidence >= evidenceThreshold(alpha)) {
            detected++
            break
          }
        }
      }
      expect(detected / runs).toBeGreaterThanOrEqual(share)
    },
  )
})

describe('quantile confidence sequence', () => {
  it('gives no bounds without samples, no upper bound for a tail quantile of few samples', () => {
    expect(quantileInterval([], 0, 0.95, 0.01)).toMatchObject({ lower: 0, upper: Number.POSITIVE_INFINITY })
    const few = new Array<number>(bucketOf(50) + 1).fill(0)
    few[bucketOf(20)] = 50
    few[bucketOf(50)] = 10
    const cs = quantileInterval(few, 60, 0.99, 0.01)
    expect(cs.upper).toBe(Number.POSITIVE_INFINITY)
    // 60 samples say the p99 is at least their 53rd smallest (in the 50 ms bucket), no more
    expect(cs.lowerRank).toBe(53)
    expect(cs.lower).toBe(bucketLowerMs(bucketOf(50)))
  })

  it('reads bucket edges: the lower bound is a lower edge, the upper bound an upper edge', () => {
    const h = new Array<number>(128).fill(0)
    for (let ms = 1; ms <= 1000; ms++) h[bucketOf(ms)]! += 100 // 100,000 samples, uniform 1..1000 ms
    const cs = quantileInterval(h, 100_000, 0.5, 0.01)
    const edges = Array.from({ length: 128 }, (_, b) => b)
    expect(edges.some((b) => bucketLowerMs(b) === cs.lower && h[b]! > 0)).toBe(true)
    expect(edges.some((b) => bucketUpperMs(b) === cs.upper && h[b]! > 0)).toBe(true)
    expect(cs.lower).toBeLessThanOrEqual(500)
    expect(cs.upper).toBeGreaterThan(500)
    // at 100,000 samples the ranks are within ±1% of the median: the bounds are the buckets next to 500
    expect(cs.lower).toBeGreaterThan(400)
    expect(cs.upper).toBeLessThan(600)
    // the overflow bucket has no upper edge
    const top = new Array<number>(128).fill(0)
    top[127] = 1000
    expect(quantileInterval(top, 1000, 0.5, 0.01).upper).toBe(Number.POSITIVE_INFINITY)
  })

  it('narrows with n: q ± u shrinks like √(log n / n)', () => {
    const widths = [1_000, 10_000, 100_000, 1_000_000].map((n) => {
      const r = quantileRanks(n, 0.95, 0.001)
      expect(r.lower / n).toBeLessThan(0.95)
      expect(r.upper / n).toBeGreaterThan(0.95)
      return (r.upper - r.lower) / n
    })
    for (let i = 1; i < widths.length; i++) expect(widths[i]!).toBeLessThan(widths[i - 1]! / 2.5)
    expect(widths[3]!).toBeLessThan(0.003)
  })

  it.each([0.5, 0.95, 0.99])(
    'keeps a Bernoulli(%f) count inside its boundary at every n ≤ 4,000 in ≥ 1 − alpha of 1,500 walks',
    (q) => {
      const alpha = 0.05
      const horizon = 4000
      const lo = new Int32Array(horizon + 1)
      const hi = new Int32Array(horizon + 1)
      for (let n = 1; n <= horizon; n++) {
        const r = quantileRanks(n, q, alpha)
        lo[n] = r.lower
        hi[n] = r.upper - 1
      }
      const rand = rng(Math.round(q * 1000))
      const walks = 1500
      let misses = 0
      for (let w = 0; w < walks; w++) {
        let count = 0
        for (let n = 1; n <= horizon; n++) {
          if (rand() <= q) count++
          if (count < lo[n]! || count > hi[n]!) {
            misses++
            break
          }
        }
      }
      expect(misses / walks).toBeLessThanOrEqual(tolerance(alpha, walks))
    },
  )

  it('covers the true p95 and p99 of bucketed lognormal latencies at every look in ≥ 1 − alpha of runs', () => {
    const alpha = 0.05
    const sigma = Math.log(3) / 1.6448536269514722 // median 20 ms, p95 60 ms
    const truth = { 0.95: 60, 0.99: 20 * Math.exp(2.3263478740408408 * sigma) }
    const rand = rng(95)
    const runs = 400
    const misses = { 0.95: 0, 0.99: 0 }
    for (let r = 0; r < runs; r++) {
      const h = new Array<number>(128).fill(0)
      const missed = { 0.95: false, 0.99: false }
      for (let n = 1; n <= 3000; n++) {
        h[bucketOf(20 * Math.exp(sigma * normal(rand)))]!++
        if (n % 10 !== 0) continue
        for (const q of [0.95, 0.99] as const) {
          const cs = quantileInterval(h, n, q, alpha)
          if (cs.lower > truth[q] || cs.upper < truth[q]) missed[q] = true
        }
      }
      if (missed[0.95]) misses[0.95]++
      if (missed[0.99]) misses[0.99]++
    }
    expect(misses[0.95] / runs).toBeLessThanOrEqual(tolerance(alpha, runs))
    expect(misses[0.99] / runs).toBeLessThanOrEqual(tolerance(alpha, runs))
  })

  it('covers a quantile sitting on an atom (94% at 1 ms, 6% at 100 ms: p95 = 100 ms)', () => {
    const alpha = 0.05
    const rand = rng(7)
    const runs = 400
    let misses = 0
    for (let r = 0; r < runs; r++) {
      const h = new Array<number>(128).fill(0)
      for (let n = 1; n <= 3000; n++) {
        h[bucketOf(rand() < 0.94 ? 1 : 100)]!++
        if (n % 10 !== 0) continue
        const cs = quantileInterval(h, n, 0.95, alpha)
        if (cs.lower > 100 || cs.upper < 100) {
          misses++
          break
        }
      }
    }
    expect(misses / runs).toBeLessThanOrEqual(tolerance(alpha, runs))
  })
})
