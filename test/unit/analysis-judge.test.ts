import { describe, expect, it } from 'vitest'
import {
  Analysis,
  type AnalysisSettings,
  type Batch,
  DEFAULT_ANALYSIS,
  type Judgement,
} from '../../proxy/analysis/judge.ts'
import { bucketOf } from '../../proxy/analysis/window.ts'
import { rng } from '../helpers/rng.ts'

const SIGMA = Math.log(3) / 1.6448536269514722 // lognormal latencies: median 20 ms, p95 60 ms, p99 ~95 ms

interface VersionModel {
  errorRate: number
  failedRate?: number
  extraMs?: number
}

/** One version's requests of one second: Bernoulli errors and failures, lognormal latencies (+ extra). */
function batch(rand: () => number, requests: number, m: VersionModel): Batch {
  let errors = 0
  let failed = 0
  const latency: number[] = []
  for (let i = 0; i < requests; i++) {
    if (rand() < m.errorRate) errors++
    if (rand() < (m.failedRate ?? 0)) failed++
    const z = Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand())
    const b = bucketOf(20 * Math.exp(SIGMA * z) + (m.extraMs ?? 0))
    while (latency.length <= b) latency.push(0)
    latency[b]!++
  }
  return { requests, errors, failed, latency }
}

/**
 * Drives `a` for up to `seconds` seconds of `rate` req/s, each request going to the canary with
 * probability `share`; judges every second and returns every judgement (stopping at the first fail).
 */
function run(
  a: Analysis,
  seed: number,
  o: { seconds: number; rate: number; share: number; stable: VersionModel; canary: VersionModel },
): Judgement[] {
  const rand = rng(seed)
  const out: Judgement[] = []
  for (let s = 0; s < o.seconds; s++) {
    let c = 0
    for (let i = 0; i < o.rate; i++) if (rand() < o.share) c++
    a.add(batch(rand, o.rate - c, o.stable), batch(rand, c, o.canary))
    const j = a.judge()
    out.push(j)
    if (j.result === 'fail') break
  }
  return out
}

const settings = (patch: Partial<AnalysisSettings>): AnalysisSettings => ({ ...DEFAULT_ANALYSIS, ...patch })

describe('analysis defaults', () => {
  it('has the documented defaults, frozen', () => {
    expect(DEFAULT_ANALYSIS).toEqual({
      alpha: 0.01,
      minRequests: 50,
      errors: { enabled: true, floor: 0.005 },
      outcome: { enabled: true, floor: 0.005 },
      latency: { enabled: true, p95Ratio: 1.5, minDeltaMs: 5, p99MaxMs: null },
    })
    expect(Object.isFrozen(DEFAULT_ANALYSIS)).toBe(true)
    expect(Object.isFrozen(DEFAULT_ANALYSIS.latency)).toBe(true)
  })

  it('refuses an alpha outside (0, 1)', () => {
    expect(() => new Analysis(settings({ alpha: 0 }))).toThrow(RangeError)
    expect(() => new Analysis(settings({ alpha: 1 }))).toThrow(RangeError)
  })
})

describe('analysis judge', () => {
  it('is inconclusive below minRequests, and says how many of how many', () => {
    const a = new Analysis(DEFAULT_ANALYSIS)
    const empty = a.judge()
    expect(empty.result).toBe('inconclusive')
    expect(empty.canary).toMatchObject({ requests: 0, errors: 0, errorRate: 0, failed: 0, p95Ms: null })
    for (let s = 0; s < 10; s++)
      a.add(batch(rng(s), 38, { errorRate: 0 }), batch(rng(100 + s), 2, { errorRate: 0 }))
    const j = a.judge()
    expect(j.result).toBe('inconclusive')
    expect(j.reason).toContain('canary 20 of 50 requests')
    expect(j.reason).toContain('stable 380 of 50')
    expect(j.checks.map((c) => [c.check, c.result])).toEqual([
      ['errors', 'inconclusive'],
      ['outcome', 'inconclusive'],
      ['latency-p95', 'inconclusive'],
    ])
  })

  it('does not fail before minRequests, however strong the evidence', () => {
    const a = new Analysis(DEFAULT_ANALYSIS)
    a.add({ requests: 400, errors: 0, latency: [] }, { requests: 40, errors: 40, latency: [] })
    const j = a.judge()
    const errors = j.checks.find((c) => c.check === 'errors')!
    expect(errors.evidence.evidence!).toBeGreaterThan(errors.evidence.threshold!)
    expect(errors.result).toBe('inconclusive')
    expect(j.result).toBe('inconclusive')
    a.add({ requests: 100, errors: 0, latency: [] }, { requests: 10, errors: 10, latency: [] })
    expect(a.judge().result).toBe('fail') // now both have 50
  })

  it('fails a canary with 10× the error rate, naming the check and its figures', () => {
    const a = new Analysis(DEFAULT_ANALYSIS)
    const js = run(a, 1, {
      seconds: 120,
      rate: 200,
      share: 0.1,
      stable: { errorRate: 0.01 },
      canary: { errorRate: 0.1 },
    })
    const last = js.at(-1)!
    expect(last.result).toBe('fail')
    expect(js.length).toBeLessThan(60)
    expect(last.reason).toMatch(
      /^errors: canary \d+\.\d% \(\d+\/\d+\) vs stable \d+\.\d+% \(\d+\/\d+\), evidence \d+\.\d ≥ 5\.7$/,
    )
    const errors = last.checks.find((c) => c.check === 'errors')!
    expect(errors.result).toBe('fail')
    expect(errors.evidence).toMatchObject({
      canaryRequests: last.canary.requests,
      canaryEvents: last.canary.errors,
      stableRequests: last.stable.requests,
      stableEvents: last.stable.errors,
      alpha: 0.01 / 3,
      threshold: Math.log(300),
      floor: 0.005,
    })
    expect(errors.evidence.evidence!).toBeGreaterThanOrEqual(Math.log(300))
    expect(last.canary.errorRate).toBeCloseTo(last.canary.errors / last.canary.requests, 12)
    expect(last.checks.find((c) => c.check === 'latency-p95')!.result).toBe('pass')
  })

  it('passes identical versions at every second of a 5-minute rollout, then says so', () => {
    for (const seed of [2, 3, 4]) {
      const a = new Analysis(DEFAULT_ANALYSIS)
      const same = { errorRate: 0.01, failedRate: 0.02 }
      const js = run(a, seed, { seconds: 300, rate: 200, share: 0.2, stable: same, canary: same })
      expect(js).toHaveLength(300)
      expect(js.filter((j) => j.result === 'fail')).toEqual([])
      const last = js.at(-1)!
      expect(last.result).toBe('pass')
      expect(last.reason).toMatch(/^no regression shown over \d+ canary and \d+ stable requests$/)
      expect(last.checks.every((c) => c.result === 'pass')).toBe(true)
      // the summaries come off the merged histograms
      expect(last.stable.p50Ms! / 20).toBeGreaterThan(0.9)
      expect(last.stable.p50Ms! / 20).toBeLessThan(1.25)
      expect(last.stable.p95Ms! / 60).toBeGreaterThan(0.9)
      expect(last.stable.p95Ms! / 60).toBeLessThan(1.25)
    }
  })

  it('fails a canary 200 ms slower on p95 with the bounds it compared', () => {
    const a = new Analysis(DEFAULT_ANALYSIS)
    const js = run(a, 5, {
      seconds: 120,
      rate: 200,
      share: 0.1,
      stable: { errorRate: 0.01 },
      canary: { errorRate: 0.01, extraMs: 200 },
    })
    const last = js.at(-1)!
    expect(last.result).toBe('fail')
    expect(js.length).toBeLessThan(30)
    const p95 = last.checks.find((c) => c.check === 'latency-p95')!
    expect(p95.result).toBe('fail')
    expect(last.reason).toMatch(/^latency-p95: canary p95 [\d.]+ ms \(lower bound [\d.]+ ms\) > 1\.5 × /)
    const e = p95.evidence
    expect(e.canaryP95LowerMs!).toBeGreaterThan(e.limitMs!)
    expect(e.limitMs!).toBeCloseTo(1.5 * e.stableP95UpperMs! + 5, 2)
    expect(e.canaryP95LowerMs!).toBeLessThanOrEqual(e.canaryP95Ms!)
    expect(e.stableP95UpperMs!).toBeGreaterThanOrEqual(e.stableP95Ms!)
    expect(e.alpha).toBeCloseTo(0.01 / 3 / 2, 15)
    expect(last.canary.p95Ms!).toBeGreaterThan(230)
  })

  it('respects the floor: a significant rise that stays under it does not fail', () => {
    const a = new Analysis(DEFAULT_ANALYSIS)
    // canary 0.4% vs stable 0.02%: the test rejects, but 0.4% is under the 0.5% floor
    for (let s = 0; s < 50; s++) {
      a.add({ requests: 5000, errors: 1, latency: [] }, { requests: 5000, errors: 20, latency: [] })
    }
    const j = a.judge()
    const errors = j.checks.find((c) => c.check === 'errors')!
    expect(errors.evidence.evidence!).toBeGreaterThan(errors.evidence.threshold!)
    expect(errors.result).toBe('pass')
    expect(errors.reason).toContain('is not above the 0.5% floor')
    expect(j.result).toBe('pass')
    // once the canary goes above the floor, it fails
    for (let s = 0; s < 10; s++) {
      a.add({ requests: 5000, errors: 1, latency: [] }, { requests: 5000, errors: 100, latency: [] })
    }
    expect(a.judge().result).toBe('fail')
  })

  it('tests business outcomes the same way, and splits alpha over the enabled checks', () => {
    const model = { stable: { errorRate: 0, failedRate: 0.01 }, canary: { errorRate: 0, failedRate: 0.1 } }
    const a = new Analysis(DEFAULT_ANALYSIS)
    const last = run(a, 6, { seconds: 120, rate: 200, share: 0.1, ...model }).at(-1)!
    expect(last.result).toBe('fail')
    expect(last.reason).toMatch(/^outcome: canary \d+\.\d% \(\d+\/\d+\) vs stable/)
    expect(last.canary.failed).toBeGreaterThan(0)

    const off = new Analysis(settings({ outcome: { enabled: false, floor: 0.005 } }))
    const js = run(off, 6, { seconds: 120, rate: 200, share: 0.1, ...model })
    expect(js.at(-1)!.result).toBe('pass')
    const checks = js.at(-1)!.checks
    expect(checks.map((c) => c.check)).toEqual(['errors', 'latency-p95'])
    expect(checks[0]!.evidence.threshold).toBeCloseTo(Math.log(2 / 0.01), 12)
    expect(checks[1]!.evidence.alpha).toBeCloseTo(0.01 / 2 / 2, 15)
  })

  it('checks the canary p99 against p99MaxMs when set', () => {
    const a = new Analysis(settings({ latency: { ...DEFAULT_ANALYSIS.latency, p99MaxMs: 50 } }))
    const same = { errorRate: 0.01 }
    const js = run(a, 7, { seconds: 120, rate: 200, share: 0.2, stable: same, canary: same })
    const last = js.at(-1)!
    expect(last.result).toBe('fail') // the lognormal's p99 is ~95 ms
    const p99 = last.checks.find((c) => c.check === 'latency-p99')!
    expect(p99.result).toBe('fail')
    expect(p99.evidence.canaryP99LowerMs!).toBeGreaterThan(50)
    expect(p99.evidence.alpha).toBeCloseTo(0.01 / 3 / 3, 15)
    expect(last.checks.find((c) => c.check === 'latency-p95')!.result).toBe('pass')
  })

  it('keeps the latency check quiet when it cannot bound stable yet', () => {
    const a = new Analysis(DEFAULT_ANALYSIS)
    // 60 stable samples cannot bound a p95 from above: no latency verdict against stable
    a.add(
      { requests: 60, errors: 0, latency: [...new Array<number>(bucketOf(10)).fill(0), 60] },
      { requests: 60, errors: 0, latency: [...new Array<number>(bucketOf(5000)).fill(0), 60] },
    )
    const p95 = a.judge().checks.find((c) => c.check === 'latency-p95')!
    expect(p95.evidence.stableP95UpperMs).toBeNull()
    expect(p95.evidence.limitMs).toBeNull()
    expect(p95.result).toBe('pass')
  })

  it('merges several proxies’ batches per interval, and resets', () => {
    const a = new Analysis(DEFAULT_ANALYSIS)
    const h = [0, 0, 3]
    a.add({ requests: 3, errors: 1, failed: 2, latency: h }, { requests: 3, errors: 0, latency: h })
    a.add({ requests: 3, errors: 1, latency: h }, { requests: 3, errors: 3, failed: 1, latency: h })
    const j = a.judge()
    expect(j.stable).toMatchObject({ requests: 6, errors: 2, failed: 2 })
    expect(j.canary).toMatchObject({ requests: 6, errors: 3, failed: 1, errorRate: 0.5 })
    a.reset()
    expect(a.judge().stable).toMatchObject({ requests: 0, errors: 0, failed: 0, p50Ms: null })
    expect(a.judge().checks.find((c) => c.check === 'errors')!.evidence.evidence).toBe(0)
  })

  it('refuses negative or non-finite counts without taking in half a batch', () => {
    const a = new Analysis(DEFAULT_ANALYSIS)
    const ok = { requests: 10, errors: 0, latency: [10] }
    expect(() => a.add(ok, { requests: -1, errors: 0, latency: [] })).toThrow(RangeError)
    expect(() => a.add(ok, { requests: 1, errors: Number.NaN, latency: [] })).toThrow(RangeError)
    expect(() => a.add({ requests: 1, errors: 0, latency: [Number.POSITIVE_INFINITY] }, ok)).toThrow(
      RangeError,
    )
    expect(a.judge().stable.requests).toBe(0)
  })
})
