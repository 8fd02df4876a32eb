/** A plan's `analysis.prometheus` (control/schemas.ts): read to its stored form, every mistake named by its path. */
import { describe, expect, it } from 'vitest'
import { ApiError } from '../../control/errors.ts'
import { parsePlan } from '../../control/schemas.ts'

function refusal(body: unknown): { code: string; message: string } {
  try {
    parsePlan(body)
  } catch (err) {
    if (err instanceof ApiError) return { code: err.code, message: err.message }
    throw err
  }
  throw new Error('expected a refusal')
}

const check = { name: 'errors', query: 'sum(x{release="{{canary}}"})', max: 0.01 }
const withProm = (prometheus: Record<string, unknown>) => ({
  steps: [{ weight: 10, pause: '1m' }],
  analysis: { prometheus: { url: 'http://prom:9090', checks: [check], ...prometheus } },
})

describe('plan analysis.prometheus', () => {
  it('refuses a URL with a user or password: it would be shown with the plan, and is not sent', () => {
    expect(refusal(withProm({ url: 'http://ops:s3cret@prom:9090' }))).toMatchObject({
      code: 'invalid_plan',
      message: expect.stringContaining('analysis.prometheus.url must not carry a user or password'),
    })
  })

  it('is read with its defaults (interval 10s, timeout 5s, for 0), durations to ms', () => {
    const { plan } = parsePlan(
      withProm({
        checks: [check, { name: 'orders', query: 'sum(rate(o[1m]))', min: 5, for: '2m' }],
        timeout: '1s',
      }),
    )
    expect(plan.analysis.prometheus).toEqual({
      url: 'http://prom:9090',
      intervalMs: 10_000,
      timeoutMs: 1000,
      checks: [
        { ...check, forMs: 0 },
        { name: 'orders', query: 'sum(rate(o[1m]))', min: 5, forMs: 120_000 },
      ],
    })
    expect(parsePlan({ steps: [{ weight: 10 }] }).plan.analysis.prometheus).toBeUndefined()
  })

  const BAD: [string, unknown, string][] = [
    ['a bad URL', withProm({ url: 'http://' }), 'analysis.prometheus.url is not a URL (got "http://")'],
    [
      'a URL of another scheme',
      withProm({ url: 'ftp://prom' }),
      'analysis.prometheus.url must be http:// or https:// (got "ftp://prom")',
    ],
    ['no URL', withProm({ url: undefined }), 'analysis.prometheus.url is required: Prometheus base URL'],
    ['no checks', withProm({ checks: [] }), 'analysis.prometheus.checks needs at least one check, e.g. '],
    [
      'both max and min',
      withProm({ checks: [{ ...check, min: 0 }] }),
      'analysis.prometheus.checks[0].max give exactly one of max and min',
    ],
    [
      'neither max nor min',
      withProm({ checks: [{ name: 'a', query: 'up' }] }),
      'analysis.prometheus.checks[0].max give exactly one of max and min',
    ],
    [
      'a duration without its unit',
      withProm({ checks: [{ ...check, for: '30' }] }),
      'analysis.prometheus.checks[0].for has no unit; write "30s"',
    ],
    [
      'a bad duration',
      withProm({ interval: 'often' }),
      'analysis.prometheus.interval must be a duration such as 500ms, 5s or 2m',
    ],
    [
      'an unknown placeholder',
      withProm({ checks: [{ ...check, query: 'x{a="{{release}}",b="{{ namespace }}"}' }] }),
      'analysis.prometheus.checks[0].query has an unknown placeholder {{release}} (known: {{route}}, {{stable}}, {{canary}}); analysis.prometheus.checks[0].query has an unknown placeholder {{namespace}}',
    ],
    [
      'two checks of one name',
      withProm({ checks: [check, check] }),
      'analysis.prometheus.checks[1].name names another check errors too',
    ],
    [
      'a name unfit for a label',
      withProm({ checks: [{ ...check, name: 'checkout errors' }] }),
      'analysis.prometheus.checks[0].name must be 1-64 letters, digits, - and _ (got "checkout errors")',
    ],
    [
      'an unknown key in a check',
      withProm({ checks: [{ ...check, threshold: 1 }] }),
      'analysis.prometheus.checks[0].threshold is not a known setting; allowed here: name, query, max, min, for',
    ],
    [
      'checks with analysis off',
      { steps: [{ weight: 1 }], analysis: { enabled: false, prometheus: withProm({}).analysis.prometheus } },
      'analysis.prometheus is never evaluated with analysis.enabled false; remove one of them',
    ],
  ]
  for (const [what, body, message] of BAD)
    it(`refuses ${what}, naming the field`, () => {
      const r = refusal(body)
      expect(r.code).toBe('invalid_plan')
      expect(r.message).toContain(message)
    })

  it('reports every problem in one pass, with their indexes as given', () => {
    const r = refusal(
      withProm({
        url: 'http://',
        checks: [{ name: 'a', query: '{{x}}', max: 1, min: 2 }, { name: 'b' }, { ...check, for: 'soon' }],
      }),
    )
    expect(r.message.split('; ')).toEqual([
      'analysis.prometheus.checks[1].query is required: PromQL giving one value (a scalar or a one-series vector), with {{route}}, {{stable}}, {{canary}} replaced',
      'analysis.prometheus.checks[2].for must be a duration such as 500ms, 5s or 2m (got "soon")',
      'analysis.prometheus.url is not a URL (got "http://")',
      'analysis.prometheus.checks[0].query has an unknown placeholder {{x}} (known: {{route}}, {{stable}}, {{canary}})',
      'analysis.prometheus.checks[0].max give exactly one of max and min: the bound the value must stay under (max) or over (min)',
      'analysis.prometheus.checks[1].max give exactly one of max and min: the bound the value must stay under (max) or over (min)',
    ])
  })
})
