import { describe, expect, it } from 'vitest'
import { bucketOf, bucketUpperMs, OutcomeWindow } from '../../proxy/analysis/window.ts'

describe('outcome window', () => {
  it('buckets latencies with under 19% relative error across 0.05 ms … 10 s', () => {
    for (let ms = 0.06; ms < 10_000; ms *= 1.37) {
      const upper = bucketUpperMs(bucketOf(ms))
      expect(upper).toBeGreaterThanOrEqual(ms * 0.999)
      expect(upper / ms).toBeLessThan(1.19)
    }
  })

  it('reads quantiles of a known distribution (uniform 1..1000 ms)', () => {
    const w = new OutcomeWindow(10, 1000)
    for (let i = 1; i <= 1000; i++) w.record(5000, i, i % 100 === 0 ? 1 : 0)
    const s = w.summary(5000)
    expect(s.requests).toBe(1000)
    expect(s.errors).toBe(10)
    expect(s.errorRate).toBeCloseTo(0.01)
    expect(s.p50Ms! / 500).toBeGreaterThan(0.99)
    expect(s.p50Ms! / 500).toBeLessThan(1.19)
    expect(s.p99Ms! / 990).toBeGreaterThan(0.99)
    expect(s.p99Ms! / 990).toBeLessThan(1.19)
  })

  it('forgets slots older than the window', () => {
    const w = new OutcomeWindow(5, 1000)
    w.record(1_000, 10, 1)
    w.record(3_000, 10, 0)
    expect(w.summary(4_500).requests).toBe(2)
    expect(w.summary(6_500).requests).toBe(1) // the slot of second 1 is out of the 5 s window
    w.record(8_000, 10, 0) // reuses the ring slot of second 3
    expect(w.summary(8_000).requests).toBe(1)
    expect(w.summary(20_000)).toMatchObject({ requests: 0, p99Ms: null })
  })

  it('gives the counts of one past second, and zeros once its slot is reused', () => {
    const w = new OutcomeWindow(5, 1000)
    w.record(5_000, 1, 0)
    w.record(5_999, 30, 1)
    w.record(6_000, 2, 0)
    const five = w.countsAt(5)
    expect(five).toMatchObject({ requests: 2, errors: 1 })
    expect(five.latency).toHaveLength(bucketOf(30) + 1) // trailing zeros cut
    expect(five.latency[bucketOf(1)]).toBe(1)
    expect(five.latency[bucketOf(30)]).toBe(1)
    expect(five.latency.reduce((a, b) => a + b, 0)).toBe(2)
    expect(w.countsAt(6)).toMatchObject({ requests: 1, errors: 0 })
    expect(w.countsAt(4)).toEqual({ requests: 0, errors: 0, failed: 0, harmed: 0, saved: 0, latency: [] })
    expect(w.countsAt(-1)).toEqual({ requests: 0, errors: 0, failed: 0, harmed: 0, saved: 0, latency: [] })
    five.latency[0] = 99 // a copy: the window is not changed through it
    expect(w.countsAt(5).latency[0]).toBe(0)
    w.record(10_500, 1, 0) // second 10 reuses the ring slot of second 5
    expect(w.countsAt(5)).toEqual({ requests: 0, errors: 0, failed: 0, harmed: 0, saved: 0, latency: [] })
    expect(w.countsAt(10).requests).toBe(1)
  })
})
