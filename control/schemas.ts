/**
 * Request bodies of the control API, described once with config/schema-kit.ts: one pass reports every
 * problem with its field path, and an unknown field is an error. The wire protocol's bodies are
 * described in config/wire.ts (the proxy checks control's answers with the same schemas).
 */

import {
  bool,
  check,
  duration,
  type Field,
  type Issue,
  int,
  isRouteName,
  list,
  num,
  obj,
  oneOf,
  str,
} from '../config/schema-kit.ts'
import {
  type AckRequest,
  ackRequest,
  type RegisterRequest,
  type ReportRequest,
  registerRequest,
  reportRequest,
} from '../config/wire.ts'
import { type AnalysisSettings, DEFAULT_ANALYSIS } from '../proxy/analysis/judge.ts'
import { ApiError } from './errors.ts'
import { PLACEHOLDERS, type PrometheusAnalysis, unknownPlaceholders } from './promql.ts'
import {
  blueGreenSteps,
  DEFAULT_INCONCLUSIVE,
  type InconclusivePolicy,
  type Plan,
  type SmokeCheck,
} from './rollout.ts'

export const MAX_PAUSE_MS = 7 * 24 * 3_600_000
const MAX_STEPS = 100

const reason = str('Why (goes to the audit log)')

/** A route's canary weight; also the stored one (control/state-schema.ts), as are the fields below. */
export const canaryWeight = int('Canary weight in percent, 0..100 (stable gets the rest)', 0, 100)
export const shadowPercent = num('Percent of requests the proxies mirror to the shadow, 0..100', 0, 100)
export const stepWeight = int('Canary weight of the step, 0..100', 0, 100)

const weightsBody = obj(
  'PUT /v1/routes/{route}/weights',
  { canary: canaryWeight, reason },
  { required: ['canary'] },
)

const shadowBody = obj(
  'PUT /v1/routes/{route}/shadow',
  { percent: shadowPercent, reason },
  { required: ['percent'] },
)

const promoteBody = obj('POST …/promote', {
  full: bool('Skip the remaining steps: canary 100% and the rollout completes', false),
  reason,
})

const actionBody = obj('POST …/pause, …/resume, …/abort', { reason })

const step = obj(
  'One step: a weight, then a pause (none: wait for promote)',
  {
    weight: stepWeight,
    pause: duration(
      'How long to hold the step once every live proxy applied it; omit to wait for promote',
      0,
      MAX_PAUSE_MS,
    ),
  },
  { required: ['weight'] },
)

export const MAX_SMOKE_TIMEOUT_MS = 60_000

export const smokeFields = {
  url: str("URL on a proxy's traffic listener (http or https), path of the app's smoke/health check"),
  requests: int('How many requests to send; every one must pass', 1, 100, 5),
  expectStatus: list('Statuses that pass', int('HTTP status, 100..599', 100, 599), { fallback: [200] }),
}

const smoke = obj(
  'Pre-step smoke check: GETs to the canary through a proxy before each step that raises its weight',
  { ...smokeFields, timeout: duration('Timeout of each request', 1, MAX_SMOKE_TIMEOUT_MS, 2000) },
  { required: ['url'], optional: true },
)

export const latencyFields = {
  enabled: bool('Check latency', DEFAULT_ANALYSIS.latency.enabled),
  p95Ratio: num(
    "Fail when canary's p95 is surely above this many times stable's (plus minDeltaMs)",
    1,
    100,
    DEFAULT_ANALYSIS.latency.p95Ratio,
  ),
  minDeltaMs: num('Slack in ms added to the p95 bound', 0, 600_000, DEFAULT_ANALYSIS.latency.minDeltaMs),
  p99MaxMs: num('Fail when canary p99 is surely above this many ms (absent: no bound)', 0.05, 3_600_000),
}

/** The analysis settings but latency, which the stored plan holds with `p99MaxMs: null` for none. */
export const analysisFields = {
  alpha: num(
    'Bound on the chance of a false rollback over the whole rollout (split over the checks)',
    0.000001,
    0.5,
    DEFAULT_ANALYSIS.alpha,
  ),
  minRequests: int(
    'Requests each version needs before any verdict; until then the verdict is inconclusive',
    1,
    1_000_000,
    DEFAULT_ANALYSIS.minRequests,
  ),
  errors: obj('Error rate (5xx, resets, timeouts) of canary against stable', {
    enabled: bool('Check the error rate', DEFAULT_ANALYSIS.errors.enabled),
    floor: num(
      "Canary error rate below which it never fails, whatever stable's",
      0,
      1,
      DEFAULT_ANALYSIS.errors.floor,
    ),
  }),
  outcome: obj('Failed business outcomes (outcome header) of canary against stable', {
    enabled: bool('Check the failed-outcome rate', DEFAULT_ANALYSIS.outcome.enabled),
    floor: num('Canary failed-outcome rate below which it never fails', 0, 1, DEFAULT_ANALYSIS.outcome.floor),
  }),
}

export const inconclusiveAction = oneOf(
  'pause the rollout (resume gives the step its pause again), extend the pause, or abort (roll back)',
  ['pause', 'extend', 'abort'] as const,
  DEFAULT_INCONCLUSIVE.action,
)
export const inconclusiveLimit = int(
  'With action extend: at most this many extensions a step, then it pauses',
  1,
  100,
  DEFAULT_INCONCLUSIVE.limit,
)

export const MAX_PROM_TIMEOUT_MS = 60_000
export const MAX_PROM_INTERVAL_MS = 3_600_000
const MAX_CHECKS = 20
const BIG = Number.MAX_VALUE
const placeholders = PLACEHOLDERS.map((p) => `{{${p}}}`).join(', ')

/** A PromQL check's fields but `for`, which the stored plan holds as `forMs`; also the stored ones. */
export const promCheckFields = {
  name: str('Check name (letters, digits, - and _): reasons and veer_rollbacks_total carry it'),
  query: str(`PromQL giving one value (a scalar or a one-series vector), with ${placeholders} replaced`),
  max: num('Out of bounds when the value is above this (give max or min)', -BIG, BIG),
  min: num('Out of bounds when the value is below this (give max or min)', -BIG, BIG),
}

const promCheck = obj(
  'A PromQL check: exactly one of max and min',
  {
    ...promCheckFields,
    for: duration(
      'How long the value must be out of bounds before the check fails (as a Prometheus alert’s for)',
      0,
      MAX_PAUSE_MS,
      0,
    ),
  },
  { required: ['name', 'query'] },
)

export const promUrl = str('Prometheus base URL (http or https); queries go to URL/api/v1/query')

const prometheusBody = obj(
  'PromQL checks against a Prometheus, evaluated while the rollout runs; a failed check rolls back',
  {
    url: promUrl,
    interval: duration(
      'How often the checks are evaluated while the rollout progresses',
      100,
      MAX_PROM_INTERVAL_MS,
      10_000,
    ),
    timeout: duration('Timeout of each query', 1, MAX_PROM_TIMEOUT_MS, 5000),
    checks: list('The checks', promCheck),
  },
  { required: ['url', 'checks'], optional: true },
)

export const planBody = obj('A rollout plan', {
  mode: oneOf(
    'canary (steps of weight) or blue-green (preview at 0%, then 100% at once)',
    ['canary', 'blue-green'],
    'canary',
  ),
  steps: list('Steps of the canary mode', step),
  preview: duration(
    'Blue-green only: how long the preview (override traffic only) lasts; omit to wait for promote',
    0,
    MAX_PAUSE_MS,
  ),
  analysis: obj(
    'Analysis settings; automatic rollback is on unless enabled is false',
    {
      enabled: bool('Judge the canary and roll back automatically when it fails', true),
      ...analysisFields,
      latency: obj('Latency of canary against stable', latencyFields),
      inconclusive: obj('What an inconclusive verdict (too little traffic) at the end of a pause does', {
        action: inconclusiveAction,
        extend: duration('With action extend: how much longer the pause runs each time', 1, MAX_PAUSE_MS),
        limit: inconclusiveLimit,
      }),
      prometheus: prometheusBody,
    },
    { optional: true },
  ),
  smoke,
  reason,
})

export interface WeightsInput {
  canary: number
  reason?: string
}
export interface ShadowInput {
  percent: number
  reason?: string
}
export interface PromoteInput {
  full: boolean
  reason?: string
}
export interface ActionInput {
  reason?: string
}

/** A refused body with each of its problems (`veer check` lists them one a line). */
export class BodyError extends ApiError {
  readonly issues: readonly Issue[]

  constructor(code: 'invalid_body' | 'invalid_plan', issues: Issue[]) {
    super(code, issues.map((i) => `${i.path || '(top level)'} ${i.message}`).join('; '))
    this.issues = issues
  }
}

function fail(code: 'invalid_body' | 'invalid_plan', issues: Issue[]): never {
  throw new BodyError(code, issues)
}

function parse<T>(
  field: Field<T>,
  value: unknown,
  code: 'invalid_body' | 'invalid_plan' = 'invalid_body',
): T {
  // An empty body stands for {} on the calls that need nothing; a required field still reports itself.
  const checked = check(field, value ?? {})
  if (!checked.ok) fail(code, checked.issues)
  return checked.value
}

export const parseWeights = (v: unknown): WeightsInput => parse(weightsBody, v)
export const parseShadow = (v: unknown): ShadowInput => parse(shadowBody, v)
export const parsePromote = (v: unknown): PromoteInput => parse(promoteBody, v)
export const parseAction = (v: unknown): ActionInput => parse(actionBody, v)

/** A plan in the contract's format, checked whole; blue-green is expanded to its two steps here. */
export function parsePlan(v: unknown): { plan: Plan; reason?: string } {
  const issues: Issue[] = []
  const raw = v as Record<string, unknown> | undefined
  const p = planBody.parse(v ?? {}, '', issues) as
    | {
        mode: 'canary' | 'blue-green'
        steps: { weight: number; pause?: number }[]
        preview?: number
        analysis?: { enabled: boolean } & Omit<AnalysisSettings, 'latency'> & {
            latency: Omit<AnalysisSettings['latency'], 'p99MaxMs'> & { p99MaxMs?: number }
            inconclusive: { action: InconclusivePolicy['action']; extend?: number; limit: number }
            prometheus?: {
              url: string
              interval: number
              timeout: number
              checks: { name: string; query: string; max?: number; min?: number; for: number }[]
            }
          }
        smoke?: { url: string; requests: number; expectStatus: number[]; timeout: number }
        reason?: string
      }
    | undefined
  if (raw !== null && typeof raw === 'object') {
    checkSmoke(raw.smoke, issues, 'smoke')
    const a = raw.analysis as Record<string, unknown> | null | undefined
    if (a !== null && typeof a === 'object') {
      checkPrometheus(a.prometheus, issues, 'analysis.prometheus')
      if (a.enabled === false && a.prometheus !== undefined && a.prometheus !== null)
        issues.push({
          path: 'analysis.prometheus',
          message: 'is never evaluated with analysis.enabled false; remove one of them',
        })
    }
  }
  if (p && issues.length === 0) {
    const given = raw !== null && typeof raw === 'object' && raw.steps !== undefined && raw.steps !== null
    if (p.mode === 'canary') {
      checkSteps(p.steps, issues, 'steps')
      if (p.preview !== undefined)
        issues.push({
          path: 'preview',
          message: 'is for "mode": "blue-green" only; give the canary steps a pause instead',
        })
    } else if (given) {
      issues.push({
        path: 'steps',
        message: 'blue-green plans have no steps (preview at 0%, then 100%); remove it',
      })
    }
    const inc = p.analysis?.inconclusive
    if (inc?.action === 'extend' && inc.extend === undefined)
      issues.push({
        path: 'analysis.inconclusive.extend',
        message: 'is required with action extend: how much longer the pause runs, e.g. "2m"',
      })
  }
  if (issues.length > 0 || !p) fail('invalid_plan', issues)
  const steps =
    p.mode === 'blue-green'
      ? blueGreenSteps(p.preview ?? null)
      : p.steps.map((s) => ({ weight: s.weight, pause: s.pause ?? null }))
  const a = p.analysis
  const analysis: Plan['analysis'] =
    a === undefined
      ? { enabled: true, settings: DEFAULT_ANALYSIS }
      : {
          enabled: a.enabled,
          settings: {
            alpha: a.alpha,
            minRequests: a.minRequests,
            errors: a.errors,
            outcome: a.outcome,
            latency: { ...a.latency, p99MaxMs: a.latency.p99MaxMs ?? null },
          },
          inconclusive: {
            action: a.inconclusive.action,
            extendMs: a.inconclusive.extend ?? null,
            limit: a.inconclusive.limit,
          },
          ...(a.prometheus && { prometheus: prometheusOf(a.prometheus) }),
        }
  const plan: Plan = { mode: p.mode, steps, analysis }
  if (p.smoke !== undefined) {
    const s = p.smoke
    const check: SmokeCheck = {
      url: s.url,
      requests: s.requests,
      expectStatus: s.expectStatus,
      timeoutMs: s.timeout,
    }
    return withReason({ ...plan, smoke: check }, p.reason)
  }
  return withReason(plan, p.reason)
}

function prometheusOf(p: {
  url: string
  interval: number
  timeout: number
  checks: { name: string; query: string; max?: number; min?: number; for: number }[]
}): PrometheusAnalysis {
  return {
    url: p.url,
    intervalMs: p.interval,
    timeoutMs: p.timeout,
    checks: p.checks.map(({ for: forMs, ...c }) => ({ ...c, forMs })),
  }
}

function withReason(plan: Plan, reason: string | undefined): { plan: Plan; reason?: string } {
  return reason === undefined ? { plan } : { plan, reason }
}

/** What the step schema cannot say of a canary plan's steps (at `path`): 1..100 of them, weights never down. */
export function checkSteps(steps: readonly { weight: number }[], issues: Issue[], path: string): void {
  if (steps.length === 0)
    issues.push({
      path,
      message:
        'a plan needs at least one step, e.g. [{"weight": 10, "pause": "5m"}, {"weight": 50, "pause": "10m"}, {"weight": 100}]',
    })
  if (steps.length > MAX_STEPS) issues.push({ path, message: `has more than ${MAX_STEPS} steps` })
  steps.forEach((s, i) => {
    const before = steps[i - 1]
    if (before && s.weight < before.weight)
      issues.push({
        path: `${path}[${i}].weight`,
        message: `is below the step before (${s.weight} < ${before.weight}); weights must not go down (abort rolls back)`,
      })
  })
}

/** What the smoke schema cannot say (of the check at `path`): the url is an http(s) URL, the status list is not empty. */
export function checkSmoke(raw: unknown, issues: Issue[], path: string): void {
  if (raw === null || typeof raw !== 'object') return
  const { url, expectStatus } = raw as { url?: unknown; expectStatus?: unknown }
  if (Array.isArray(expectStatus) && expectStatus.length === 0)
    issues.push({ path: `${path}.expectStatus`, message: 'must list at least one status, e.g. [200]' })
  checkUrl(url, issues, `${path}.url`)
}

/**
 * What the Prometheus schema cannot say (of the settings at `path`, as given or as stored): an http(s)
 * URL, 1..20 checks with distinct label-safe names, exactly one of max and min each, and no unknown
 * placeholder in a query.
 */
export function checkPrometheus(raw: unknown, issues: Issue[], path: string): void {
  if (raw === null || typeof raw !== 'object') return
  const { url, checks } = raw as { url?: unknown; checks?: unknown }
  checkUrl(url, issues, `${path}.url`)
  if (!Array.isArray(checks)) return
  if (checks.length === 0)
    issues.push({
      path: `${path}.checks`,
      message:
        'needs at least one check, e.g. [{"name": "checkout-errors", "query": "sum(rate(shop_checkouts_total{result="error",release="{{canary}}"}[1m]))", "max": 0.1, "for": "1m"}]',
    })
  if (checks.length > MAX_CHECKS)
    issues.push({ path: `${path}.checks`, message: `has more than ${MAX_CHECKS} checks` })
  const names = new Set<string>()
  checks.forEach((c: unknown, i) => {
    if (c === null || typeof c !== 'object') return
    const at = `${path}.checks[${i}]`
    const { name, query, max, min } = c as Record<string, unknown>
    if (typeof name === 'string' && name !== '') {
      if (!isRouteName(name))
        issues.push({
          path: `${at}.name`,
          message: `must be 1-64 letters, digits, - and _ (got ${JSON.stringify(name)})`,
        })
      else if (names.has(name))
        issues.push({ path: `${at}.name`, message: `names another check ${name} too` })
      names.add(name)
    }
    if (typeof query === 'string')
      for (const p of unknownPlaceholders(query))
        issues.push({
          path: `${at}.query`,
          message: `has an unknown placeholder {{${p}}} (known: ${placeholders})`,
        })
    if ((max === undefined || max === null) === (min === undefined || min === null))
      issues.push({
        path: `${at}.max`,
        message: 'give exactly one of max and min: the bound the value must stay under (max) or over (min)',
      })
  })
}

function checkUrl(url: unknown, issues: Issue[], path: string): void {
  if (typeof url !== 'string' || url === '') return
  let u: URL
  try {
    u = new URL(url)
  } catch {
    issues.push({ path, message: `is not a URL (got ${JSON.stringify(url)})` })
    return
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    issues.push({ path, message: `must be http:// or https:// (got ${JSON.stringify(url)})` })
  // Queries send no credentials from a URL, and the plan is shown to every read token: refuse them.
  else if (u.username !== '' || u.password !== '')
    issues.push({
      path,
      message: 'must not carry a user or password (they would be shown with the plan, and are not sent)',
    })
}

export function parseRegister(v: unknown): RegisterRequest {
  const req = parse(registerRequest, v)
  // What the schema cannot say: the id fits a URL path segment, route names are names and not repeated.
  const issues: Issue[] = []
  if (req.id.length > 256 || /[\s/]/.test(req.id))
    issues.push({ path: 'id', message: 'must be at most 256 characters without spaces or /' })
  const seen = new Set<string>()
  req.routes.forEach((r, i) => {
    if (!isRouteName(r.name))
      issues.push({ path: `routes[${i}].name`, message: 'must be letters, digits, - and _' })
    if (seen.has(r.name)) issues.push({ path: `routes[${i}].name`, message: `announces ${r.name} twice` })
    seen.add(r.name)
  })
  if (issues.length > 0) fail('invalid_body', issues)
  return req
}

export const parseAck = (v: unknown): AckRequest => parse(ackRequest, v)
export const parseReport = (v: unknown): ReportRequest => parse(reportRequest, v)
