import { describe, expect, it } from 'vitest'
import { cookieValue, stickyHash } from '../../proxy/split/sticky.ts'
import { WeylSequence, weightThreshold } from '../../proxy/split/weighted.ts'
import { rng } from '../helpers/rng.ts'

describe('weighted sequence', () => {
  it.each([0, 1, 5, 20, 33, 50, 75, 99, 100])(
    'gives weight %i within 0.1 point over 5,000 picks, from any start',
    (w) => {
      const t = weightThreshold(w)
      for (const seed of [0, 12345, 0xdeadbeef]) {
        const seq = new WeylSequence(seed)
        let hits = 0
        for (let i = 0; i < 5000; i++) if (seq.next() < t) hits++
        expect(Math.abs((hits / 5000) * 100 - w)).toBeLessThanOrEqual(0.1)
      }
    },
  )

  it('stays accurate over every window of 1,000 consecutive picks', () => {
    const t = weightThreshold(20)
    const seq = new WeylSequence()
    const picks = Array.from({ length: 20_000 }, () => (seq.next() < t ? 1 : 0))
    for (let start = 0; start + 1000 <= picks.length; start += 250) {
      const share = picks.slice(start, start + 1000).reduce<number>((a, b) => a + b, 0) / 10
      expect(Math.abs(share - 20)).toBeLessThanOrEqual(0.5)
    }
  })

  it('maps 0 and 100 to nothing and everything', () => {
    expect(weightThreshold(0)).toBe(0)
    expect(weightThreshold(100)).toBe(2 ** 32)
  })
})

describe('sticky hash', () => {
  it('is deterministic and spreads user ids evenly (chi-square over 16 buckets)', () => {
    const counts = new Array(16).fill(0)
    const n = 32_000
    for (let i = 0; i < n; i++) counts[stickyHash(`user-${i}`) >>> 28]++
    const expected = n / 16
    const chi2 = counts.reduce((s, c) => s + (c - expected) ** 2 / expected, 0)
    // 15 degrees of freedom: the 99.9th percentile is 37.7.
    expect(chi2).toBeLessThan(37.7)
    expect(stickyHash('user-1')).toBe(stickyHash('user-1'))
  })

  it('is monotone in the weight: a user on canary at w stays on canary at every w2 > w (property)', () => {
    const random = rng(42)
    for (let trial = 0; trial < 2000; trial++) {
      const key = `u${Math.floor(random() * 1e12).toString(36)}`
      const w = Math.floor(random() * 101)
      const w2 = w + Math.floor(random() * (101 - w))
      const h = stickyHash(key)
      if (h < weightThreshold(w)) expect(h < weightThreshold(w2)).toBe(true)
    }
  })

  it('puts about the weight share of users on canary', () => {
    const t = weightThreshold(25)
    let on = 0
    for (let i = 0; i < 20_000; i++) if (stickyHash(`session-${i * 7919}`) < t) on++
    expect(Math.abs((on / 20_000) * 100 - 25)).toBeLessThan(1.5)
  })
})

describe('cookieValue', () => {
  it.each([
    ['session=abc', 'session', 'abc'],
    ['a=1; session=abc; b=2', 'session', 'abc'],
    ['a=1;session=abc', 'session', 'abc'],
    ['xsession=bad; session=good', 'session', 'good'],
    ['session_id=bad; session=good', 'session', 'good'],
    ['a=session=bad', 'session', undefined],
    ['a=1', 'session', undefined],
    ['session=', 'session', ''],
    ['session= spaced ', 'session', 'spaced'],
  ])('%s → %s = %s', (header, name, expected) => {
    expect(cookieValue(header, name)).toBe(expected)
  })
})
