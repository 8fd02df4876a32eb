import { describe, expect, it } from 'vitest'
import { smallBody } from '../../bench/nginx.ts'
import { paired, pairedExcess, publishable, roundOrder, spread, verdict } from '../../bench/paired.ts'
import { pairedCell, roughNote, spreadCell } from '../../bench/report.ts'
import type { RoundResult, SubjectResult } from '../../bench/results.ts'
import { median } from '../../bench/stats.ts'
import { checkTargets, GOAL_SUBJECT, pairedCheck } from '../../bench/targets.ts'

/** A round with the figures the comparisons read; the rest is irrelevant here. */
function round(n: number, cpu: number, rps: number, p99 = 1): RoundResult {
  return {
    round: n,
    cpuUsPerReq: cpu,
    small: { rps },
    latency: { p99Ms: p99 },
  } as unknown as RoundResult
}

function subject(name: string, rounds: RoundResult[]): SubjectResult {
  return { name, about: '', status: 'ok', rounds, medians: null }
}

describe('roundOrder', () => {
  it('runs subjects forward in odd rounds and reversed in even ones, leaving the list as it was', () => {
    const list = ['a', 'b', 'c']
    expect([1, 2, 3, 4].map((r) => roundOrder(list, r).join(''))).toEqual(['abc', 'cba', 'abc', 'cba'])
    expect(list).toEqual(['a', 'b', 'c'])
  })
})

describe('paired', () => {
  it('divides within each round both measured, skipping rounds one of them lacks', () => {
    const a = [round(1, 60, 0), round(2, 90, 0), round(3, 70, 0)]
    const b = [round(1, 50, 0), round(3, 70, 0)]
    expect(paired(a, b, (r) => r.cpuUsPerReq)).toEqual([1.2, 1])
  })

  it('leaves out rounds with a figure that is not a positive finite number', () => {
    const a = [round(1, 0, 0), round(2, Number.NaN, 0), round(3, 10, 0)]
    const b = [round(1, 5, 0), round(2, 5, 0), round(3, 5, 0)]
    expect(paired(a, b, (r) => r.cpuUsPerReq)).toEqual([2])
  })

  it('subtracts in difference mode (p99 added), negatives included', () => {
    const a = [round(1, 1, 1, 2.5), round(2, 1, 1, 1)]
    const b = [round(1, 1, 1, 2), round(2, 1, 1, 1.5)]
    expect(paired(a, b, (r) => r.latency.p99Ms, 'difference')).toEqual([0.5, -0.5])
  })

  it('is not the ratio of medians: a round the machine slowed for both subjects cancels out', () => {
    // Round 2 ran on a busy machine: both subjects cost twice as much there.
    const veer = [round(1, 60, 0), round(2, 120, 0), round(3, 66, 0)]
    const floor = [round(1, 50, 0), round(2, 100, 0), round(3, 60, 0)]
    const cpu = (r: RoundResult) => r.cpuUsPerReq
    expect(median(paired(veer, floor, cpu))).toBeCloseTo(1.2)
    // the ratio of the medians (66 ÷ 60) says something else
    expect(median(veer.map(cpu)) / median(floor.map(cpu))).not.toBeCloseTo(1.2)
  })
})

describe('pairedExcess', () => {
  const cpu = (r: RoundResult) => r.cpuUsPerReq

  it('divides what one subject adds over its base by what another adds over its own, round by round', () => {
    // round 1: (110 − 60) ÷ (95 − 50) = 50/45; round 2: (130 − 70) ÷ (110 − 60) = 1.2
    const shadow = [round(1, 110, 0), round(2, 130, 0)]
    const veer = [round(1, 60, 0), round(2, 70, 0)]
    const twice = [round(1, 95, 0), round(2, 110, 0)]
    const floor = [round(1, 50, 0), round(2, 60, 0)]
    const r = pairedExcess(shadow, veer, twice, floor, cpu)
    expect(r).toHaveLength(2)
    expect(r[0]).toBeCloseTo(50 / 45)
    expect(r[1]).toBeCloseTo(1.2)
  })

  it('leaves out a round any of the four lacks, and one whose yardstick added nothing', () => {
    const shadow = [round(1, 110, 0), round(2, 130, 0), round(3, 120, 0)]
    const veer = [round(1, 60, 0), round(2, 70, 0), round(3, 60, 0)]
    const twice = [round(1, 50, 0), round(3, 100, 0)] // round 1: no more than the floor
    const floor = [round(1, 50, 0), round(2, 60, 0), round(3, 50, 0)]
    expect(pairedExcess(shadow, veer, twice, floor, cpu)).toEqual([1.2])
  })
})

describe('spread', () => {
  it('gives the median with min, max and count of the finite values', () => {
    expect(spread([1.3, 1.1, Number.NaN, 1.2, 1.5])).toEqual({ median: 1.25, min: 1.1, max: 1.5, n: 4 })
  })

  it('is all NaN with no values', () => {
    const s = spread([])
    expect(s.n).toBe(0)
    expect(s.median).toBeNaN()
  })
})

describe('verdict', () => {
  const atMost = { op: '≤', value: 1.15 } as const
  const atLeast = { op: '≥', value: 0.9 } as const

  it('meets a goal only when every paired round meets it (the goal itself included)', () => {
    expect(verdict(spread([1.05, 1.1, 1.15]), atMost)).toBe('meets goal')
    expect(verdict(spread([0.9, 0.95, 1.2]), atLeast)).toBe('meets goal')
  })

  it('misses only when no round meets it', () => {
    expect(verdict(spread([1.6, 1.7, 1.9]), atMost)).toBe('misses goal')
    expect(verdict(spread([0.5, 0.6, 0.89]), atLeast)).toBe('misses goal')
  })

  it('refuses a verdict when the spread crosses the goal, whichever side the median is on', () => {
    expect(verdict(spread([1.0, 1.1, 1.3]), atMost)).toBe('undecided (spread crosses the goal)')
    expect(verdict(spread([1.0, 1.2, 1.3]), atMost)).toBe('undecided (spread crosses the goal)')
    expect(verdict(spread([0.8, 0.95, 1.0]), atLeast)).toBe('undecided (spread crosses the goal)')
  })

  it('refuses a verdict from too few rounds, and says when nothing was measured', () => {
    expect(verdict(spread([1.0, 1.01]), atMost)).toMatch(/^undecided \(2 paired rounds; a verdict needs 3\)$/)
    expect(verdict(spread([]), atMost)).toBe('not measured')
  })
})

describe('checkTargets', () => {
  const subjects = [
    // CPU ratio to the floor 1.1, 1.1, 1.2 (crosses 1.15); req/s ratio 0.95, 1, 0.9 (meets 0.9)
    subject(GOAL_SUBJECT, [round(1, 55, 9500, 2), round(2, 66, 10_000, 2), round(3, 60, 9000, 2)]),
    subject('undici-minimal', [round(1, 50, 10_000, 1), round(2, 60, 10_000, 1), round(3, 50, 10_000, 1)]),
    // req/s ratio 1.9, 2.5, 3 (crosses 2)
    subject('http-proxy-3', [round(1, 120, 5000), round(2, 130, 4000), round(3, 125, 3000)]),
  ]
  const byTarget = (upstream: 'node' | 'nginx') =>
    new Map(checkTargets(subjects, upstream, 2000).map((t) => [t.target, t]))

  it('gives verdicts from paired ratios on the nginx upstream, refusing those the spread crosses', () => {
    const t = byTarget('nginx')
    const cpu = t.get(`${GOAL_SUBJECT} ÷ undici-minimal, CPU µs/req`)!
    expect(cpu.measured).toBe('1.10×')
    expect(cpu.spread).toBe('1.10× – 1.20× (3)')
    expect(cpu.verdict).toBe('undecided (spread crosses the goal)')
    expect(cpu.pass).toBeNull()
    expect(t.get(`${GOAL_SUBJECT} ÷ undici-minimal, req/s ~100 B`)!.verdict).toBe('meets goal')
    expect(t.get(`${GOAL_SUBJECT} ÷ http-proxy-3, req/s ~100 B`)!.verdict).toBe(
      'undecided (spread crosses the goal)',
    )
    const p99 = t.get(`${GOAL_SUBJECT} − undici-minimal, p99 @2,000/s`)!
    expect(p99.measured).toBe('+1.00 ms')
    expect(p99.verdict).toBe('misses goal')
    expect(p99.pass).toBe(false)
  })

  it('prints the same figures without a verdict on the node upstream', () => {
    const cpu = byTarget('node').get(`${GOAL_SUBJECT} ÷ undici-minimal, CPU µs/req`)!
    expect(cpu.measured).toBe('1.10×')
    expect(cpu.verdict).toBe('info (the goal is on the nginx upstream)')
    expect(cpu.pass).toBeNull()
  })

  it("judges the shadow's cost against a second exchange's, paired per round", () => {
    // (veer-shadow − veer) ÷ (undici-twice − undici-minimal): 1.0, 1.05, 1.1 — all within 1.1
    const four = [
      subject('veer-shadow', [round(1, 100, 0), round(2, 103, 0), round(3, 104, 0)]),
      subject('veer', [round(1, 60, 0), round(2, 61, 0), round(3, 60, 0)]),
      subject('undici-twice', [round(1, 90, 0), round(2, 90, 0), round(3, 90, 0)]),
      subject('undici-minimal', [round(1, 50, 0), round(2, 50, 0), round(3, 50, 0)]),
    ]
    const target = "100% shadow cost ÷ a second exchange's, CPU µs/req"
    const nginx = checkTargets(four, 'nginx', 2000).find((t) => t.target === target)!
    expect(nginx.measured).toBe('1.05×')
    expect(nginx.spread).toBe('1.00× – 1.10× (3)')
    expect(nginx.verdict).toBe('meets goal')
    expect(nginx.pass).toBe(true)
    const node = checkTargets(four, 'node', 2000).find((t) => t.target === target)!
    expect(node.verdict).toBe('info (the goal is on the nginx upstream)')
    const without = checkTargets(four.slice(0, 3), 'nginx', 2000).find((t) => t.target === target)!
    expect(without.measured).toBe('—')
    expect(without.note).toMatch(/needs .*undici-minimal/)
  })

  it('lists a goal whose subjects did not run as not measurable', () => {
    const t = new Map(checkTargets(subjects.slice(0, 1), 'nginx', 2000).map((x) => [x.target, x]))
    expect(t.get(`${GOAL_SUBJECT} ÷ undici-minimal, CPU µs/req`)!.measured).toBe('—')
  })
})

describe("pairedCheck (any bench's rounds, e.g. bench/h2.ts)", () => {
  // The shape bench/h2.ts records: two workloads per round.
  const h2 = (n: number, getRps: number) => ({ round: n, get: { rps: getRps } })
  const getRps = (r: ReturnType<typeof h2>) => r.get.rps
  const goal = { op: '≥', value: 0.85 } as const
  // the slow first rounds of a JIT warming up: 15k, 17k against a steady floor, then 23.6k
  const veer = [h2(1, 15_000), h2(2, 17_000), h2(3, 23_600)]
  const floor = [h2(1, 20_000), h2(2, 20_000), h2(3, 20_000)]

  it('prints the median of the paired ratios with their min–max, and no verdict across the goal', () => {
    const c = pairedCheck(veer, floor, 'GET', getRps, { goal, needs: '' })!
    expect(c.goal).toBe('≥ 0.85×')
    expect(c.measured).toBe('0.85×')
    expect(c.spread).toBe('0.75× – 1.18× (3)')
    expect(c.verdict).toBe('undecided (spread crosses the goal)')
    expect(c.pass).toBeNull()
  })

  it('judges when every round is on one side, and prints offGoal instead when told to', () => {
    const steady = [h2(1, 16_000), h2(2, 15_000), h2(3, 16_500)]
    const c = pairedCheck(steady, floor, 'GET', getRps, { goal, needs: '' })!
    expect([c.verdict, c.pass]).toEqual(['misses goal', false])
    const info = pairedCheck(steady, floor, 'GET', getRps, { goal, needs: '', offGoal: 'info (elsewhere)' })!
    expect([info.verdict, info.pass, info.measured]).toEqual(['info (elsewhere)', null, '0.80×'])
  })

  it('says what a goal needs when a subject did not run; an info line is left out', () => {
    const c = pairedCheck(veer, null, 'GET', getRps, { goal, needs: 'needs a and b' })!
    expect([c.measured, c.goal, c.note, c.pass]).toEqual(['—', '≥ 0.85×', 'needs a and b', null])
    expect(pairedCheck(veer, null, 'GET', getRps, { needs: '' })).toBeNull()
    expect(pairedCheck(veer, floor, 'GET', getRps, { needs: '' })!.goal).toBe('(info)')
  })
})

describe('pairedCell', () => {
  const h2 = (n: number, cpu: number) => ({ round: n, cpu })
  const f = (r: { cpu: number }) => r.cpu

  it('gives median× (min–max) of the paired ratios, one figure from one round, 1.00× against itself', () => {
    const a = { rounds: [h2(1, 60), h2(2, 120), h2(3, 66)] }
    const b = { rounds: [h2(1, 50), h2(2, 100), h2(3, 60)] }
    expect(pairedCell(a, b, f)).toBe('1.20× (1.10–1.20)')
    expect(pairedCell({ rounds: [h2(1, 60)] }, b, f)).toBe('1.20×')
    expect(pairedCell(a, a, f)).toBe('1.00×')
    expect(pairedCell(a, undefined, f)).toBe('—')
  })
})

describe('spreadCell', () => {
  it("gives one subject's median (min–max) over its rounds, the median alone from one round", () => {
    const f = (x: number) => x.toFixed(1)
    expect(spreadCell([47.2, 62.8, 47.1], f)).toBe('47.2 (47.1–62.8)')
    expect(spreadCell([47.2], f)).toBe('47.2')
  })
})

describe('publishable and roughNote', () => {
  it('calls a run publishable only at 5 rounds, 8 s warm-ups and 6 s phases, and no --quick', () => {
    expect(publishable(false, 5, 8, 6)).toBe(true)
    expect(publishable(true, 5, 8, 6)).toBe(false)
    expect([publishable(false, 4, 8, 6), publishable(false, 5, 7, 6), publishable(false, 5, 8, 5)]).toEqual([
      false,
      false,
      false,
    ])
  })

  it('says why figures are rough', () => {
    expect(roughNote({ quick: false, publishable: true })).toBe('')
    expect(roughNote({ quick: true, publishable: false })).toMatch(/--quick/)
    expect(roughNote({ quick: false, publishable: false })).toBe(
      ' (shorter than a published run — 5 rounds, 8 s warm-ups, 6 s phases: figures are rough)',
    )
  })
})

describe('the nginx upstream', () => {
  it('answers the same 100 B body bench/upstream.ts does', () => {
    const body = smallBody('stable')
    expect(Buffer.byteLength(body)).toBe(100)
    expect(JSON.parse(body)).toMatchObject({ upstream: 'stable', ok: true })
  })
})
