/** Request bodies and rollout plans (control/schemas.ts): one pass, every problem named, nothing unknown. */
import { describe, expect, it } from 'vitest'
import { ApiError } from '../../control/errors.ts'
import {
  parseAck,
  parsePlan,
  parsePromote,
  parseRegister,
  parseShadow,
  parseWeights,
} from '../../control/schemas.ts'
import { DEFAULT_ANALYSIS } from '../../proxy/analysis/judge.ts'

function refusal(fn: () => unknown): { code: string; message: string } {
  try {
    fn()
  } catch (err) {
    if (err instanceof ApiError) return { code: err.code, message: err.message }
    throw err
  }
  throw new Error('expected a refusal')
}

describe('rollout plans', () => {
  it('reads the contract example: durations to ms, no pause = wait for promote, analysis on by default', () => {
    const { plan } = parsePlan({
      steps: [{ weight: 5, pause: '30s' }, { weight: 25, pause: '2m' }, { weight: 100 }],
    })
    expect(plan).toEqual({
      mode: 'canary',
      steps: [
        { weight: 5, pause: 30_000 },
        { weight: 25, pause: 120_000 },
        { weight: 100, pause: null },
      ],
      analysis: { enabled: true, settings: DEFAULT_ANALYSIS },
    })
    expect(parsePlan({ steps: [{ weight: 1 }], analysis: { enabled: false } }).plan.analysis.enabled).toBe(
      false,
    )
  })

  it('expands blue-green to preview at 0% then 100%', () => {
    expect(parsePlan({ mode: 'blue-green', preview: '10m' }).plan.steps).toEqual([
      { weight: 0, pause: 600_000 },
      { weight: 100, pause: null },
    ])
  })

  const BAD: [string, unknown, RegExp][] = [
    ['no body', undefined, /steps a plan needs at least one step/],
    ['no steps', { steps: [] }, /steps a plan needs at least one step/],
    [
      'a weight over 100',
      { steps: [{ weight: 101 }] },
      /steps\[0\]\.weight must be a whole number from 0 to 100 \(got 101\)/,
    ],
    ['a step without weight', { steps: [{ pause: '1m' }] }, /steps\[0\]\.weight is required/],
    ['a bad pause', { steps: [{ weight: 5, pause: 'soon' }] }, /steps\[0\]\.pause must be a duration/],
    [
      'an unknown field',
      { steps: [{ weight: 5 }], stpes: [] },
      /stpes is not a known setting; allowed here: mode, steps/,
    ],
    [
      'an unknown step field',
      { steps: [{ weight: 5, wait: '1m' }] },
      /steps\[0\]\.wait is not a known setting/,
    ],
    [
      'an unknown analysis field',
      { steps: [{ weight: 5 }], analysis: { maxErrorRate: 1 } },
      /analysis\.maxErrorRate is not a known setting/,
    ],
    [
      'falling weights',
      { steps: [{ weight: 50 }, { weight: 10 }] },
      /steps\[1\]\.weight is below the step before/,
    ],
    ['steps in blue-green', { mode: 'blue-green', steps: [{ weight: 5 }] }, /blue-green plans have no steps/],
    [
      'preview in canary',
      { steps: [{ weight: 5 }], preview: '1m' },
      /preview is for "mode": "blue-green" only/,
    ],
    ['a list', [{ weight: 5 }], /\(top level\) must be an object/],
  ]
  for (const [what, body, message] of BAD) {
    it(`refuses ${what}`, () => {
      const r = refusal(() => parsePlan(body))
      expect(r.code).toBe('invalid_plan')
      expect(r.message).toMatch(message)
    })
  }

  it('reports every problem at once', () => {
    const r = refusal(() => parsePlan({ steps: [{ weight: 500 }, { weight: 5, pause: 'x' }], extra: 1 }))
    expect(r.message).toMatch(/extra/)
    expect(r.message).toMatch(/steps\[0\]\.weight/)
    expect(r.message).toMatch(/steps\[1\]\.pause/)
  })
})

describe('smoke checks in a plan', () => {
  const steps = [{ weight: 10, pause: '1m' }, { weight: 100 }]

  it('no smoke: the plan has none', () => {
    expect(parsePlan({ steps }).plan.smoke).toBeUndefined()
  })

  it('reads a smoke check, with defaults for what is left out', () => {
    const full = parsePlan({
      steps,
      smoke: {
        url: 'http://127.0.0.1:8080/healthz',
        requests: 3,
        expectStatus: [200, 204],
        timeout: '500ms',
      },
    }).plan.smoke
    expect(full).toEqual({
      url: 'http://127.0.0.1:8080/healthz',
      requests: 3,
      expectStatus: [200, 204],
      timeoutMs: 500,
    })
    expect(parsePlan({ steps, smoke: { url: 'https://proxy.internal/ping' } }).plan.smoke).toEqual({
      url: 'https://proxy.internal/ping',
      requests: 5,
      expectStatus: [200],
      timeoutMs: 2000,
    })
  })

  const BAD: [string, unknown, RegExp][] = [
    ['no url', {}, /smoke\.url is required/],
    ['a url that is not one', { url: 'not a url' }, /smoke\.url is not a URL/],
    ['a url that is not http', { url: 'ftp://127.0.0.1/x' }, /smoke\.url must be http:\/\/ or https:\/\//],
    [
      'zero requests',
      { url: 'http://a/', requests: 0 },
      /smoke\.requests must be a whole number from 1 to 100/,
    ],
    [
      '101 requests',
      { url: 'http://a/', requests: 101 },
      /smoke\.requests must be a whole number from 1 to 100/,
    ],
    ['a status below 100', { url: 'http://a/', expectStatus: [99] }, /smoke\.expectStatus\[0\] must be/],
    [
      'a status above 599',
      { url: 'http://a/', expectStatus: [200, 600] },
      /smoke\.expectStatus\[1\] must be/,
    ],
    [
      'no status',
      { url: 'http://a/', expectStatus: [] },
      /smoke\.expectStatus must list at least one status/,
    ],
    ['a bad timeout', { url: 'http://a/', timeout: 'soon' }, /smoke\.timeout must be a duration/],
    ['a timeout over a minute', { url: 'http://a/', timeout: '2m' }, /smoke\.timeout must be between/],
    ['an unknown field', { url: 'http://a/', retries: 2 }, /smoke\.retries is not a known setting/],
    ['not an object', 'http://a/', /smoke must be an object/],
    [
      'a status list that is not one',
      { url: 'http://a/', expectStatus: 200 },
      /smoke\.expectStatus must be a list/,
    ],
  ]
  for (const [what, smoke, message] of BAD) {
    it(`refuses ${what}`, () => {
      const r = refusal(() => parsePlan({ steps, smoke }))
      expect(r.code).toBe('invalid_plan')
      expect(r.message).toMatch(message)
    })
  }

  it('reports every smoke problem at once, with the rest of the plan', () => {
    const r = refusal(() =>
      parsePlan({
        steps: [{ weight: 500 }],
        smoke: { url: 'nope', requests: 0, expectStatus: [42], timeout: 'x', extra: true },
      }),
    )
    for (const path of [
      'steps[0].weight',
      'smoke.url',
      'smoke.requests',
      'smoke.expectStatus[0]',
      'smoke.timeout',
      'smoke.extra',
    ])
      expect(r.message).toContain(path)
  })
})

describe('other bodies', () => {
  it('weights: canary 0..100 required, reason optional, nothing else', () => {
    expect(parseWeights({ canary: 0 })).toEqual({ canary: 0 })
    expect(parseWeights({ canary: 100, reason: 'go' })).toEqual({ canary: 100, reason: 'go' })
    for (const bad of [
      undefined,
      {},
      { canary: -1 },
      { canary: 101 },
      { canary: 2.5 },
      { canary: '10' },
      { canary: 1, stable: 99 },
    ]) {
      expect(refusal(() => parseWeights(bad)).code).toBe('invalid_body')
    }
  })

  it('shadow: percent 0..100 required (fractions allowed, as in the config), reason optional, nothing else', () => {
    expect(parseShadow({ percent: 0 })).toEqual({ percent: 0 })
    expect(parseShadow({ percent: 12.5, reason: 'dark launch' })).toEqual({
      percent: 12.5,
      reason: 'dark launch',
    })
    expect(parseShadow({ percent: 100 })).toEqual({ percent: 100 })
    for (const bad of [
      undefined,
      {},
      { percent: -1 },
      { percent: 100.5 },
      { percent: '10' },
      { percent: null },
      { percent: 10, canary: 5 },
    ]) {
      expect(refusal(() => parseShadow(bad)).code).toBe('invalid_body')
    }
    expect(refusal(() => parseShadow({ percent: 101 })).message).toMatch(
      /percent must be a number from 0 to 100/,
    )
    expect(refusal(() => parseShadow({ percent: 1, extra: 1 })).message).toMatch(/extra/)
  })

  it('promote: full is a boolean, the body may be empty', () => {
    expect(parsePromote(undefined)).toEqual({ full: false })
    expect(parsePromote({ full: true })).toEqual({ full: true })
    expect(refusal(() => parsePromote({ full: 'yes' })).message).toMatch(/full must be true or false/)
  })

  it('register: names are checked, a missing canary or shadow is null', () => {
    const r = parseRegister({
      id: 'p1',
      routes: [
        { name: 'a', stable: { url: 'http://x' }, canary: null, canaryWeight: 0 },
        { name: 'b', stable: { url: 'http://x' }, shadow: { url: 'http://s', release: 'v3' } },
      ],
    })
    expect(r.routes[0]).toEqual({
      name: 'a',
      stable: { url: 'http://x', release: 'unknown' },
      canary: null,
      shadow: null,
      canaryWeight: 0,
    })
    expect(r.routes[1]!.shadow).toEqual({ url: 'http://s', release: 'v3' })
    expect(refusal(() => parseRegister({ id: 'p/1', routes: [] })).message).toMatch(/id must be/)
    expect(
      refusal(() => parseRegister({ id: 'p', routes: [{ name: 'a b', stable: { url: 'x' } }] })).message,
    ).toMatch(/routes\[0\]\.name/)
  })

  it('ack: error null means applied', () => {
    expect(parseAck({ revision: 3, error: null })).toEqual({ revision: 3, error: null })
    expect(parseAck({ revision: 3, error: 'bad weights' })).toEqual({ revision: 3, error: 'bad weights' })
    expect(refusal(() => parseAck({ error: null })).message).toMatch(/revision is required/)
  })
})
