/** The stored shape (control/state-schema.ts): what control writes passes as it is; every corruption is named by its path. */
import { describe, expect, it } from 'vitest'
import { start } from '../../control/rollout.ts'
import { parsePlan } from '../../control/schemas.ts'
import { checkAuditLine, checkRecord, checkState } from '../../control/state-schema.ts'
import { type ControlState, emptyState, type RouteRecord } from '../../control/store.ts'

// biome-ignore lint/suspicious/noExplicitAny: a corruption edits the parsed file field by field
type Parsed = Record<string, any>

const v1 = { url: 'http://127.0.0.1:3001', release: 'v1' }
const v2 = { url: 'http://127.0.0.1:3002', release: 'v2' }

function route(patch: Partial<RouteRecord> = {}): RouteRecord {
  return {
    name: 'shop',
    version: 3,
    revision: 5,
    canary: 10,
    shadow: 20,
    stable: v1,
    canaryUpstream: v2,
    shadowUpstream: null,
    canaryFromShadow: false,
    superseded: [{ stable: v1, canary: null }],
    rollout: null,
    createdAt: 1_700_000_000_000,
    updatedAt: 1_700_000_000_500,
    ...patch,
  }
}

const stateOf = (r: RouteRecord): ControlState => ({ ...emptyState(), revision: 5, routes: { [r.name]: r } })

/** A state.json as written (JSON, so `undefined` fields are gone), with `edit` applied to its text form. */
function written(state: ControlState, edit: (s: Parsed) => void = () => {}): unknown {
  const raw = JSON.parse(JSON.stringify(state))
  edit(raw)
  return raw
}

const problems = (v: unknown): string[] => {
  const c = checkState(v)
  return 'problems' in c ? c.problems : []
}

/** A rollout of `body` (an API plan) as the engine stores it. */
const rolloutOf = (body: unknown) =>
  start(parsePlan(body).plan, 'shop-5', { now: 1_700_000_000_000, revision: 5 }).rollout

const PLANS: Record<string, unknown> = {
  'canary steps': { steps: [{ weight: 5, pause: '30s' }, { weight: 50, pause: '1.5ms' }, { weight: 100 }] },
  'analysis off': { steps: [{ weight: 1 }], analysis: { enabled: false } },
  'all the analysis settings': {
    steps: [{ weight: 10, pause: '5m' }],
    analysis: {
      alpha: 0.05,
      minRequests: 10,
      errors: { floor: 0.01 },
      outcome: { enabled: false },
      latency: { p95Ratio: 2, p99MaxMs: 800 },
      inconclusive: { action: 'extend', extend: '2m', limit: 5 },
    },
  },
  'a smoke check': { steps: [{ weight: 10 }], smoke: { url: 'http://127.0.0.1:8080/health', timeout: '1s' } },
  'blue-green with a preview': { mode: 'blue-green', preview: '10m' },
  'blue-green held for promote': { mode: 'blue-green' },
  'Prometheus checks': {
    steps: [{ weight: 10, pause: '5m' }],
    analysis: {
      prometheus: {
        url: 'http://127.0.0.1:9090',
        interval: '30s',
        checks: [
          { name: 'errors', query: 'sum(x{release="{{canary}}"})', max: 0.01, for: '2m' },
          { name: 'orders', query: 'sum(rate(orders_total{route="{{route}}"}[1m]))', min: 5 },
        ],
      },
    },
  },
}

describe('the stored state', () => {
  it.each(Object.keys(PLANS))('a rollout of an API plan (%s) is stored and read back as it was', (name) => {
    const state = stateOf(route({ rollout: rolloutOf(PLANS[name]) }))
    expect(checkState(written(state))).toEqual({ value: state })
  })

  it('stored Prometheus checks are checked as the API checks them, each problem by its path', () => {
    const plan = 'routes.shop.rollout.plan.analysis.prometheus'
    const prom = stateOf(route({ rollout: rolloutOf(PLANS['Prometheus checks']) }))
    const edited = written(prom, (s) => {
      const p = s.routes.shop.rollout.plan.analysis.prometheus
      p.url = 'ftp://prom'
      p.checks[0].min = 1
      p.checks[1].query = 'x{a="{{release}}"}'
      p.checks[1].forMs = '2m'
      delete p.timeoutMs
    })
    expect(problems(edited).sort()).toEqual(
      [
        `${plan}.checks[1].forMs: must be a number from 0 to 604800000 (got "2m")`,
        `${plan}.timeoutMs: is required: Timeout of each query (ms)`,
      ].sort(),
    )
    const refined = written(prom, (s) => {
      const p = s.routes.shop.rollout.plan.analysis.prometheus
      p.url = 'ftp://prom'
      p.checks[0].min = 1
      p.checks[1].query = 'x{a="{{release}}"}'
    })
    expect(problems(refined)).toEqual([
      `${plan}.url: must be http:// or https:// (got "ftp://prom")`,
      `${plan}.checks[0].max: give exactly one of max and min: the bound the value must stay under (max) or over (min)`,
      `${plan}.checks[1].query: has an unknown placeholder {{release}} (known: {{route}}, {{stable}}, {{canary}})`,
    ])
  })

  it('a route record of an audit line is read as in state.json; paths start at record', () => {
    expect(checkRecord(JSON.parse(JSON.stringify(route())))).toEqual({ value: route() })
    expect(checkRecord({ ...route(), canary: -1 })).toEqual({
      problems: ['record.canary: must be a whole number from 0 to 100 (got -1)'],
    })
  })

  it('fields added within format 1 are optional: a route and a plan written before them read as "none"', () => {
    const old = written(stateOf(route({ rollout: rolloutOf(PLANS['canary steps']) })), (s) => {
      const r = s.routes.shop
      for (const k of ['shadow', 'shadowUpstream', 'canaryFromShadow', 'superseded']) delete r[k]
      delete r.rollout.plan.analysis.settings
      delete r.rollout.extensions
    })
    const c = checkState(old)
    expect('value' in c && c.value.routes.shop).toMatchObject({
      shadow: null,
      shadowUpstream: null,
      canaryFromShadow: false,
      superseded: [],
      rollout: { plan: { analysis: { enabled: true } } },
    })
    const noBound = written(
      stateOf(route({ rollout: rolloutOf(PLANS['all the analysis settings']) })),
      (s) => {
        delete s.routes.shop.rollout.plan.analysis.settings.latency.p99MaxMs
      },
    )
    const read = checkState(noBound)
    expect('value' in read && read.value.routes.shop!.rollout!.plan.analysis.settings!.latency.p99MaxMs).toBe(
      null,
    )
  })

  const rolling = stateOf(route({ rollout: rolloutOf(PLANS['all the analysis settings']) }))
  const CORRUPTIONS: [string, (s: Parsed) => void, string][] = [
    [
      'a weight as a string',
      (s) => (s.routes.shop.canary = '50'),
      'routes.shop.canary: must be a whole number from 0 to 100 (got "50")',
    ],
    [
      'a weight over 100',
      (s) => (s.routes.shop.canary = 150),
      'routes.shop.canary: must be a whole number from 0 to 100 (got 150)',
    ],
    [
      'a negative revision',
      (s) => (s.revision = -1),
      'revision: must be a whole number from 0 to 9007199254740991 (got -1)',
    ],
    [
      'a shadow percent over 100',
      (s) => (s.routes.shop.shadow = 101),
      'routes.shop.shadow: must be a number from 0 to 100 (got 101)',
    ],
    [
      'an unknown field',
      (s) => (s.routes.shop.weight = 5),
      'routes.shop.weight: is not a known setting; allowed here: name, version, revision, canary, shadow, stable, canaryUpstream, shadowUpstream, canaryFromShadow, superseded, rollout, createdAt, updatedAt',
    ],
    [
      'a missing field',
      (s) => delete s.routes.shop.version,
      'routes.shop.version: is required: Config version (ETag)',
    ],
    [
      'stable missing (null is "none")',
      (s) => delete s.routes.shop.stable,
      'routes.shop.stable: is required (or null): An upstream as a proxy announced it',
    ],
    [
      'an upstream without its release',
      (s) => delete s.routes.shop.canaryUpstream.release,
      'routes.shop.canaryUpstream.release: is required: Release id',
    ],
    [
      'a superseded pair of the wrong type',
      (s) => (s.routes.shop.superseded = [{ stable: 'v1', canary: null }]),
      'routes.shop.superseded[0].stable: must be an object (got "v1")',
    ],
    [
      'a route under another key',
      (s) => (s.routes.shop.name = 'cart'),
      "routes.shop.name: must be the route's key shop (got cart)",
    ],
    [
      'a route beyond the revision',
      (s) => (s.routes.shop.revision = 6),
      "routes.shop.revision: is beyond the state's revision 5 (got 6)",
    ],
    [
      'a step missing',
      (s) => (s.routes.shop.rollout.plan.steps = []),
      'routes.shop.rollout.plan.steps: a plan needs at least one step, e.g. [{"weight": 10, "pause": "5m"}, {"weight": 50, "pause": "10m"}, {"weight": 100}]',
    ],
    [
      'a step weight over 100',
      (s) => (s.routes.shop.rollout.plan.steps[0].weight = 101),
      'routes.shop.rollout.plan.steps[0].weight: must be a whole number from 0 to 100 (got 101)',
    ],
    [
      'a step index beyond the plan',
      (s) => (s.routes.shop.rollout.step = 1),
      "routes.shop.rollout.step: is beyond the plan's 1 step(s) (got 1)",
    ],
    [
      'a pause as a duration string',
      (s) => (s.routes.shop.rollout.plan.steps[0].pause = '5m'),
      'routes.shop.rollout.plan.steps[0].pause: must be a number from 0 to 604800000 (got "5m")',
    ],
    [
      'an alpha out of range',
      (s) => (s.routes.shop.rollout.plan.analysis.settings.alpha = 2),
      'routes.shop.rollout.plan.analysis.settings.alpha: must be a number from 0.000001 to 0.5 (got 2)',
    ],
    [
      'extend without extendMs',
      (s) => (s.routes.shop.rollout.plan.analysis.inconclusive.extendMs = null),
      'routes.shop.rollout.plan.analysis.inconclusive.extendMs: is required with action extend',
    ],
    [
      'a phase of no kind',
      (s) => (s.routes.shop.rollout.phase = 'done'),
      'routes.shop.rollout.phase: must be one of progressing, paused, completed, aborted (got "done")',
    ],
    ['routes as a list', (s) => (s.routes = []), 'routes: must be an object (got a list)'],
  ]
  it.each(CORRUPTIONS)('%s is refused, naming the field path', (_, edit, problem) => {
    expect(problems(written(rolling, edit))).toEqual([problem])
  })

  it('every problem is reported in one pass', () => {
    const raw = written(rolling, (s) => {
      s.revision = 'five'
      s.routes.shop.canary = 150
      s.routes.shop.rollout.plan.steps[0].weight = -3
    })
    expect(problems(raw)).toEqual([
      'revision: must be a whole number from 0 to 9007199254740991 (got "five")',
      'routes.shop.canary: must be a whole number from 0 to 100 (got 150)',
      'routes.shop.rollout.plan.steps[0].weight: must be a whole number from 0 to 100 (got -3)',
    ])
  })

  it('a blue-green plan must be its two steps', () => {
    const bg = stateOf(route({ rollout: rolloutOf(PLANS['blue-green with a preview']) }))
    expect(problems(written(bg, (s) => (s.routes.shop.rollout.plan.steps[1].weight = 50)))).toEqual([
      'routes.shop.rollout.plan.steps: of a blue-green plan must be its preview at 0 and then 100',
    ])
  })

  it('refuses the prototype key as a route name and as a field, naming it (JSON.parse makes it an own key)', () => {
    const text = JSON.stringify(stateOf(route()))
    const proto = JSON.parse(text.replace('"routes":{"shop":', '"routes":{"__proto__":'))
    expect(Object.hasOwn(proto.routes, '__proto__')).toBe(true)
    expect(problems(proto)).toEqual(['routes.__proto__: is the prototype key, never a route name; remove it'])
    const field = JSON.parse(text.replace('"name":"shop"', '"__proto__":{"canary":1},"name":"shop"'))
    expect(problems(field)).toEqual([
      expect.stringMatching(/^routes\.shop\.__proto__: is not a known setting; allowed here: name, /),
    ])
  })
})

describe('an audit line', () => {
  const line = {
    seq: 1,
    time: '2030-01-01T00:00:00.000Z',
    who: 'alice',
    role: 'operator',
    action: 'set-weight',
    route: 'shop',
    from: { canary: 0 },
    to: { canary: 10 },
    why: null,
    revision: 5,
    record: route(),
  }

  it('is read as written; a denied one has no revision, route or record', () => {
    expect(checkAuditLine(line)).toEqual({ value: line })
    const denied = {
      ...line,
      route: null,
      action: 'denied',
      count: 3,
      revision: undefined,
      record: undefined,
    }
    expect(checkAuditLine(JSON.parse(JSON.stringify(denied)))).toEqual({
      value: JSON.parse(JSON.stringify(denied)),
    })
  })

  it('of the wrong shape is refused by path; its record is left to the one who uses it', () => {
    const bad = { ...line, seq: '1', revision: 1.5, route: '__proto__', extra: true, record: { canary: 'x' } }
    const c = checkAuditLine(bad)
    expect('problems' in c && c.problems).toEqual([
      expect.stringMatching(/^extra: is not a known setting/),
      'seq: must be a whole number from 0 to 9007199254740991 (got "1")',
      'route: is not a route name (got "__proto__")',
      'revision: must be a whole number from 0 to 9007199254740991 (got 1.5)',
    ])
  })
})
