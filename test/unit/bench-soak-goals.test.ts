import { describe, expect, it } from 'vitest'
import {
  anonGoal,
  fitPerMinute,
  lastWindow,
  type MemSample,
  overBaseline,
  overBaselineGoal,
  ownAnon,
  type SoakRound,
  slopeGoal,
  slopeWindow,
} from '../../bench/soak-goals.ts'

/** Samples every 5 s from 5 s to `seconds`, RSS and anon from `f(t)`. */
function samples(seconds: number, f: (t: number) => number, anon = f): MemSample[] {
  const out: MemSample[] = []
  for (let t = 5; t <= seconds; t += 5) out.push({ t, rssMiB: f(t), anonMiB: anon(t) })
  return out
}

const one = (s: MemSample[], round = 1): SoakRound[] => [{ round, samples: s }]

describe('fitPerMinute', () => {
  it('gives the slope per minute of a straight line with no error', () => {
    const fit = fitPerMinute(
      samples(300, (t) => 100 + t / 60),
      (s) => s.rssMiB,
    )
    expect(fit.slope).toBeCloseTo(1, 10)
    expect(fit.se).toBeCloseTo(0, 10)
    expect(fit.n).toBe(60)
  })

  it('gives NaN with fewer than 3 points, and a standard error that grows with the scatter', () => {
    expect(
      fitPerMinute(
        samples(10, () => 1),
        (s) => s.rssMiB,
      ).slope,
    ).toBeNaN()
    const calm = fitPerMinute(
      samples(180, (t) => 100 + (t % 10 === 0 ? 0.1 : -0.1)),
      (s) => s.rssMiB,
    )
    const wild = fitPerMinute(
      samples(180, (t) => 100 + (t % 10 === 0 ? 10 : -10)),
      (s) => s.rssMiB,
    )
    expect(wild.se).toBeGreaterThan(calm.se * 50)
  })
})

describe('lastWindow and slopeWindow', () => {
  it('keeps the samples of the last minute of the load, its end included', () => {
    expect(
      lastWindow(
        samples(300, () => 1),
        300,
      ).map((s) => s.t),
    ).toEqual([245, 250, 255, 260, 265, 270, 275, 280, 285, 290, 295, 300])
  })

  it('fits the last 3 minutes, never before the warm-up', () => {
    expect(slopeWindow(300, 30)).toEqual([120, 300])
    expect(slopeWindow(90, 30)).toEqual([30, 90])
  })
})

describe('anonGoal', () => {
  it('meets 60 MiB only when every last-minute sample is within it, and refuses a verdict across it', () => {
    expect(anonGoal(one(samples(300, () => 58)), 300).result).toBe('meets goal')
    expect(anonGoal(one(samples(300, () => 61)), 300).result).toBe('misses goal')
    // a sawtooth between 50 and 70 MiB in the last minute
    const saw = samples(300, (t) => (t % 10 === 0 ? 70 : 50))
    expect(anonGoal(one(saw), 300).result).toBe('undecided (spread crosses the goal)')
    // what happened before the last minute does not count
    const early = samples(300, (t) => (t < 240 ? 200 : 55))
    expect(anonGoal(one(early), 300).figure.max).toBe(55)
  })
})

describe('overBaselineGoal', () => {
  it('pairs the subject with the baseline sample by sample, ending both at the end of the load', () => {
    const veer = samples(300, (t) => 130 + t / 100)
    // the baseline missed its first last-minute sample: the pairs are the last 11 of each
    const base = samples(300, (t) => 100 + t / 100).filter((s) => s.t !== 245)
    const d = overBaseline(one(veer), one(base), 300)
    expect(d).toHaveLength(11)
    for (const x of d) expect(x).toBeCloseTo(30, 10)
    expect(overBaselineGoal(one(veer), one(base), 300).result).toBe('meets goal')
  })

  it('pairs within a round only, and misses when every pair is over 40 MiB', () => {
    const veer = [
      ...one(
        samples(300, () => 150),
        1,
      ),
      ...one(
        samples(300, () => 150),
        2,
      ),
    ]
    const base = one(
      samples(300, () => 100),
      2,
    )
    expect(overBaseline(veer, base, 300)).toHaveLength(12)
    expect(overBaselineGoal(veer, base, 300).result).toBe('misses goal')
  })
})

describe('slopeGoal', () => {
  it('meets 0.2 MiB/min when flat, misses a steady climb, and refuses a verdict on a sawtooth', () => {
    expect(slopeGoal(one(samples(300, () => 120)), 300, 30).result).toBe('meets goal')
    expect(slopeGoal(one(samples(300, (t) => 100 + t / 60)), 300, 30).result).toBe('misses goal')
    const saw = samples(300, (t) => 120 + ((t / 5) % 6) * 8)
    expect(slopeGoal(one(saw), 300, 30).result).toBe('undecided (spread crosses the goal)')
  })
})

describe('ownAnon', () => {
  it('is anonymous memory over the tuned baseline, not RSS, and gives no verdict', () => {
    const veer = samples(
      300,
      () => 120,
      () => 61,
    )
    const tuned = samples(
      300,
      () => 90,
      () => 40,
    )
    const own = ownAnon(one(veer), one(tuned), 300)
    expect(own.figure.median).toBeCloseTo(21, 10)
    expect(own.figure.n).toBe(12)
    expect(own.result).toBe('information')
  })
})
