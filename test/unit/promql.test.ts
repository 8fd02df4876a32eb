/**
 * Prometheus checks, the pure half (control/promql.ts): templating, what an /api/v1/query answer means,
 * the `for` rule and the verdict on several checks; and the join with the proxies' verdict.
 */
import { describe, expect, it } from 'vitest'
import { joined } from '../../control/analysis.ts'
import type { Verdict } from '../../control/judge.ts'
import { PrometheusBook, type PromVerdict } from '../../control/prometheus.ts'
import {
  type CheckState,
  expandQuery,
  observe,
  type PromCheck,
  readAnswer,
  reasonOf,
  type Sample,
  unknownPlaceholders,
  verdictOf,
} from '../../control/promql.ts'
import type { Rollout } from '../../control/rollout.ts'
import { Analysis, DEFAULT_ANALYSIS } from '../../proxy/analysis/judge.ts'

const vars = { route: 'shop', stable: 'v1', canary: 'v2' }

describe('query templates', () => {
  it('replaces {{route}}, {{stable}} and {{canary}}, spaces inside the braces allowed, every occurrence', () => {
    expect(
      expandQuery(
        'sum(x{route="{{route}}",release=~"{{ canary }}|{{stable}}"}) / sum(y{r="{{canary}}"})',
        vars,
      ),
    ).toBe('sum(x{route="shop",release=~"v2|v1"}) / sum(y{r="v2"})')
  })

  it('escapes a release id for a PromQL string, so it cannot leave its label matcher', () => {
    expect(expandQuery('x{release="{{canary}}"}', { ...vars, canary: 'v2"} or vector(1) #\\' })).toBe(
      'x{release="v2\\"} or vector(1) #\\\\"}',
    )
  })

  it('finds unknown placeholders as written, and none in a query without any', () => {
    expect(unknownPlaceholders('x{a="{{ canary }}",b="{{release}}",c="{{}}"} {{Route}}')).toEqual([
      'release',
      '',
      'Route',
    ])
    expect(unknownPlaceholders('sum(rate(x[1m])) > 0 and {a="{b}"}')).toEqual([])
  })
})

const vector = (...values: string[]) => ({
  status: 'success',
  data: {
    resultType: 'vector',
    result: values.map((v, i) => ({ metric: { job: 'shop', instance: `i${i}` }, value: [1700000000.1, v] })),
  },
})

describe('reading an answer of /api/v1/query', () => {
  it('takes the value of a one-series vector and of a scalar, Inf included', () => {
    expect(readAnswer(200, vector('0.25'))).toEqual({ ok: true, value: 0.25 })
    expect(readAnswer(200, { status: 'success', data: { resultType: 'scalar', result: [1, '3'] } })).toEqual({
      ok: true,
      value: 3,
    })
    expect(readAnswer(200, vector('+Inf'))).toEqual({ ok: true, value: Infinity })
    expect(readAnswer(200, vector('-Inf'))).toEqual({ ok: true, value: -Infinity })
  })

  const INCONCLUSIVE: [string, number, unknown, RegExp][] = [
    ['an empty vector', 200, vector(), /^empty result: no series matched/],
    [
      'several series',
      200,
      vector('1', '2'),
      /^2 series \(\{job="shop",instance="i0"\}, \{job="shop",instance="i1"\}\); aggregate them/,
    ],
    ['many series, listed in part', 200, vector('1', '2', '3', '4', '5'), /^5 series \(.*\} and 2 more\)/],
    ['NaN', 200, vector('NaN'), /^the value is NaN/],
    ['a NaN scalar', 200, { status: 'success', data: { resultType: 'scalar', result: [1, 'NaN'] } }, /NaN/],
    [
      'a range vector',
      200,
      { status: 'success', data: { resultType: 'matrix', result: [] } },
      /gives a matrix, not an instant vector/,
    ],
    [
      'a string',
      200,
      { status: 'success', data: { resultType: 'string', result: [1, 'x'] } },
      /gives a string/,
    ],
    [
      'a bad query (400)',
      400,
      { status: 'error', errorType: 'bad_data', error: 'parse error' },
      /^Prometheus answered 400: bad_data: parse error$/,
    ],
    ['a 503 without JSON', 503, undefined, /^Prometheus answered 503$/],
    ['a 200 that is not a success', 200, { status: 'error' }, /^Prometheus answered 200$/],
    [
      'a sample without its value',
      200,
      { status: 'success', data: { resultType: 'vector', result: [{ metric: {}, value: [1] }] } },
      /no \[time, "value"\]/,
    ],
  ]
  for (const [what, status, body, reason] of INCONCLUSIVE)
    it(`${what} is inconclusive, never a value`, () => {
      const s = readAnswer(status, body)
      expect(s.ok).toBe(false)
      expect((s as { reason: string }).reason).toMatch(reason)
    })
})

const check = (patch: Partial<PromCheck> = {}): PromCheck => ({
  name: 'errors',
  query: 'q',
  max: 0.1,
  forMs: 3000,
  ...patch,
})
const value = (v: number): Sample => ({ ok: true, value: v })
const none: Sample = { ok: false, reason: 'Prometheus at http://p unreachable (ECONNREFUSED)' }

/** Feed samples at the given times; the states after each. */
function run(c: PromCheck, samples: [number, Sample][]): CheckState[] {
  const out: CheckState[] = []
  let s: CheckState | null = null
  for (const [t, sample] of samples) {
    s = observe(s, c, 'q sent', sample, t)
    out.push(s)
  }
  return out
}

describe('the for rule (Prometheus alert semantics)', () => {
  it('out of bounds is pending until it has been so for `for`, then fails', () => {
    const states = run(check(), [
      [1000, value(0.5)],
      [2000, value(0.5)],
      [3999, value(0.2)],
      [4000, value(0.3)],
    ])
    expect(states.map((s) => s.state)).toEqual(['pending', 'pending', 'pending', 'fail'])
    expect(states[3]!.outSince).toBe(1000)
  })

  it('back in bounds resets the run: the next excursion starts from zero', () => {
    const states = run(check(), [
      [0, value(0.5)],
      [2000, value(0.05)],
      [2500, value(0.5)],
      [5000, value(0.5)],
      [5500, value(0.5)],
    ])
    expect(states.map((s) => s.state)).toEqual(['pending', 'pass', 'pending', 'pending', 'fail'])
  })

  it('for 0 fails on the first sample out of bounds; the bound itself is in bounds', () => {
    expect(
      run(check({ forMs: 0 }), [
        [0, value(0.1)],
        [1, value(0.100001)],
      ]).map((s) => s.state),
    ).toEqual(['pass', 'fail'])
  })

  it('min: out of bounds below it', () => {
    const c = check({ max: undefined, min: 0.9, forMs: 0 })
    expect(
      run(c, [
        [0, value(0.95)],
        [1, value(0.89)],
      ]).map((s) => s.state),
    ).toEqual(['pass', 'fail'])
  })

  it('an inconclusive sample neither resets nor clears the run: a gap is no sign of recovery', () => {
    const states = run(check(), [
      [0, value(0.5)],
      [1000, none],
      [2000, none],
      [3000, value(0.5)],
    ])
    expect(states.map((s) => s.state)).toEqual(['pending', 'inconclusive', 'inconclusive', 'fail'])
    expect(states[1]!.outSince).toBe(0)
    expect(run(check(), [[0, none]])[0]!.outSince).toBeNull()
  })

  it('a reason names the check, the query as sent, the value and the bound', () => {
    const [pending, failed] = run(check({ forMs: 2000 }), [
      [0, value(0.5)],
      [2000, value(0.75)],
    ])
    expect(reasonOf(pending!)).toBe(
      'prometheus check errors: q sent = 0.5 > max 0.1 (out of bounds for 0ms of 2s)',
    )
    expect(reasonOf(failed!)).toBe(
      'prometheus check errors: q sent = 0.75 > max 0.1 (out of bounds for 2s of 2s)',
    )
    const low = run(check({ max: undefined, min: 5, forMs: 0 }), [[0, value(1)]])[0]!
    expect(reasonOf(low)).toBe('prometheus check errors: q sent = 1 < min 5 (out of bounds for 0ms of 0ms)')
    const gone = run(check(), [[0, none]])[0]!
    expect(reasonOf(gone)).toBe(
      'prometheus check errors inconclusive: Prometheus at http://p unreachable (ECONNREFUSED); query: q sent',
    )
  })
})

describe('the verdict on several checks', () => {
  const at = (c: PromCheck, s: Sample) => observe(null, c, 'q', s, 0)
  const pass = at(check({ name: 'a' }), value(0))
  const pending = at(check({ name: 'b' }), value(1))
  const failed = at(check({ name: 'c', forMs: 0 }), value(1))
  const unsure = at(check({ name: 'd' }), none)

  it('fail beats inconclusive beats pending (wait) beats pass', () => {
    expect(verdictOf([pass, pending, unsure, failed], true)).toMatchObject({ result: 'fail', check: 'c' })
    expect(verdictOf([pass, pending, unsure], true).result).toBe('inconclusive')
    expect(verdictOf([pass, pending], true).result).toBe('wait')
    expect(verdictOf([pass], true)).toEqual({ result: 'pass', reason: 'prometheus checks pass: a' })
  })

  it('no evaluation of the current step yet: wait, never pass', () => {
    expect(verdictOf([pass], false).result).toBe('wait')
    expect(verdictOf([], true).result).toBe('wait')
  })
})

describe('joined with the proxies’ verdict', () => {
  const j = new Analysis(DEFAULT_ANALYSIS).judge() // no traffic: inconclusive
  const own = (result: Verdict['result']): Verdict => ({ result, reason: `own ${result}`, evidence: j })
  const prom = (result: PromVerdict['result'], check?: string): PromVerdict => ({
    result,
    reason: `prom ${result}`,
    checks: [],
    ...(check && { check }),
  })

  it('a failed Prometheus check fails the rollout, the metric label the fixed reason prometheus', () => {
    expect(joined(own('pass'), j, prom('fail', 'orders'))).toMatchObject({
      result: 'fail',
      reason: 'prom fail',
      check: 'prometheus',
      evidence: { prometheus: [] },
    })
    expect(joined(own('fail'), j, prom('fail', 'orders')).reason).toBe('own fail')
  })

  it('inconclusive on either side is inconclusive with both reasons; pending alone waits', () => {
    expect(joined(own('inconclusive'), j, prom('inconclusive'))).toMatchObject({
      result: 'inconclusive',
      reason: 'own inconclusive; prom inconclusive',
    })
    expect(joined(own('pass'), j, prom('inconclusive')).wait).toBeUndefined()
    expect(joined(own('inconclusive'), j, prom('wait')).wait).toBeUndefined()
    expect(joined(own('pass'), j, prom('wait'))).toMatchObject({ result: 'inconclusive', wait: true })
    expect(joined(own('pass'), j, prom('pass'))).toMatchObject({
      result: 'pass',
      reason: 'own pass; prom pass',
    })
  })
})

describe('the Prometheus book: when it evaluates', () => {
  const plan = {
    url: 'http://prom',
    intervalMs: 1000,
    timeoutMs: 500,
    checks: [{ name: 'errors', query: 'x{release="{{canary}}"}', max: 0.1, forMs: 0 }],
  }
  const rollout = (stepRevision: number, applied = false) =>
    ({
      id: 'shop-1',
      stepRevision,
      applied,
      phase: 'progressing',
      plan: { mode: 'canary', steps: [], analysis: { enabled: true, prometheus: plan } },
    }) as unknown as Rollout

  it('one evaluation at a time, again after the interval or at a new step; a step not evaluated waits', async () => {
    const asked: { expr: string; answer: (s: Sample) => void }[] = []
    const book = new PrometheusBook({
      query: (_url, expr) => new Promise((answer) => asked.push({ expr, answer })),
    })
    const verdict = (step: number, now: number) => book.verdict('shop', rollout(step), vars, now)!
    expect(verdict(1, 0).result).toBe('wait')
    expect(verdict(1, 2000).result).toBe('wait')
    expect(asked.map((a) => a.expr)).toEqual(['x{release="v2"}'])
    asked.shift()!.answer(value(0))
    await new Promise((r) => setImmediate(r))
    expect(verdict(1, 500).result).toBe('pass')
    expect(asked).toHaveLength(0)
    expect(verdict(1, 1000).result).toBe('pass')
    expect(asked).toHaveLength(1)
    asked.shift()!.answer(value(0))
    await new Promise((r) => setImmediate(r))
    // A new step: evaluated at once, and until then its verdict waits.
    expect(verdict(2, 1001).result).toBe('wait')
    expect(asked).toHaveLength(1)
    asked.shift()!.answer(value(0.5))
    await new Promise((r) => setImmediate(r))
    expect(verdict(2, 1002)).toMatchObject({ result: 'fail', check: 'errors' })
  })

  it('a query that throws is inconclusive, and the next evaluation still comes', async () => {
    let calls = 0
    const book = new PrometheusBook({
      query: async () => {
        calls++
        throw new Error('boom')
      },
    })
    book.verdict('shop', rollout(1), vars, 0)
    await new Promise((r) => setImmediate(r))
    expect(book.verdict('shop', rollout(1), vars, 1000)).toMatchObject({
      result: 'inconclusive',
      reason: expect.stringContaining('Error: boom'),
    })
    expect(calls).toBe(2)
  })

  it('passes a step only on an evaluation begun once it was applied: one sent before saw the old weight', async () => {
    const asked: ((s: Sample) => void)[] = []
    const book = new PrometheusBook({ query: () => new Promise((answer) => asked.push(answer)) })
    const verdict = (applied: boolean, now: number) => book.verdict('shop', rollout(1, applied), vars, now)!
    // Entered, not applied yet: evaluated at once; its pass would not let the step end anyway.
    verdict(false, 0)
    asked.shift()!(value(0))
    await new Promise((r) => setImmediate(r))
    expect(verdict(false, 100).result).toBe('pass')
    // Applied: that pass is of the previous weight. A new evaluation goes at once, and until it is back
    // the verdict waits, however soon the step's pause ends.
    expect(verdict(true, 200).result).toBe('wait')
    expect(asked).toHaveLength(1)
    asked.shift()!(value(0.9))
    await new Promise((r) => setImmediate(r))
    expect(verdict(true, 300)).toMatchObject({ result: 'fail', check: 'errors' })
  })

  it("restarts a pending check's for after a gap of more than two intervals (a pause): no data covered it", async () => {
    const asked: ((s: Sample) => void)[] = []
    const pendingPlan = { ...plan, checks: [{ ...plan.checks[0]!, forMs: 5000 }] }
    const ro = {
      ...rollout(1, true),
      plan: { ...rollout(1).plan, analysis: { enabled: true, prometheus: pendingPlan } },
    }
    const book = new PrometheusBook({ query: () => new Promise((answer) => asked.push(answer)) })
    const verdict = (now: number) => book.verdict('shop', ro as unknown as Rollout, vars, now)!
    verdict(0)
    asked.shift()!(value(0.9))
    await new Promise((r) => setImmediate(r))
    expect(verdict(10).result).toBe('wait') // pending since 0
    // Nothing evaluated for an hour (the rollout was paused), then out of bounds again: pending anew.
    verdict(3_600_000)
    asked.shift()!(value(0.9))
    await new Promise((r) => setImmediate(r))
    expect(verdict(3_600_010)).toMatchObject({
      result: 'wait',
      reason: expect.stringContaining('for 0ms of 5s'),
    })
  })
})
