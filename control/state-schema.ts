/**
 * The shape of the state dir's contents (control/store.ts), described with config/schema-kit.ts: state.json
 * whole, and each audit line with the route it records. A weight or a plan has the very fields the API
 * checks it with (control/schemas.ts), so a stored value is one the API could have taken; the rest is
 * described here. Checked whole at start, every problem with its field path: a hand-edited or damaged
 * file refuses the start instead of serving 500s later.
 *
 * Each object's keys are tied to its TypeScript type (`fields<T>()`): a field added to the type and not
 * here, or the other way round, does not compile.
 */
import {
  type Always,
  bool,
  check,
  type Field,
  type Infer,
  type Issue,
  int,
  isRouteName,
  list,
  num,
  obj,
  oneOf,
  record,
  routeKey,
  str,
} from '../config/schema-kit.ts'
import { announcedRoute, type ReleasePair, type Upstream } from '../config/wire.ts'
import type { AnalysisSettings } from '../proxy/analysis/judge.ts'
import type { PromCheck, PrometheusAnalysis } from './promql.ts'
import type { InconclusivePolicy, Plan, Rollout, SmokeCheck, Step } from './rollout.ts'
import {
  analysisFields,
  canaryWeight,
  checkPrometheus,
  checkSmoke,
  checkSteps,
  inconclusiveAction,
  inconclusiveLimit,
  latencyFields,
  MAX_PAUSE_MS,
  MAX_PROM_INTERVAL_MS,
  MAX_PROM_TIMEOUT_MS,
  MAX_SMOKE_TIMEOUT_MS,
  promCheckFields,
  promUrl,
  shadowPercent,
  smokeFields,
  stepWeight,
} from './schemas.ts'
import type { AuditEntry, ControlState, RouteRecord } from './store.ts'

const MAX = Number.MAX_SAFE_INTEGER

/**
 * A shape whose keys are exactly T's, each field giving (a subtype of) T's type there. Optional keys of
 * T are fields that may be absent.
 */
function fields<T>() {
  return <S extends { readonly [K in keyof T]-?: Field<T[K]> }>(
    shape: S & Record<Exclude<keyof S, keyof T>, never>,
  ): S => shape
}

/**
 * `f`, or null. Absent: null when `absent` is 'null' (a field added within format 1, so a file written
 * before it reads as "none"), else a problem.
 */
function orNull<T>(f: Field<T>, absent: 'null' | 'required' = 'required'): Always<T | null> {
  return {
    always: true,
    nullable: true,
    json: { anyOf: [f.json, { type: 'null' }], description: f.json.description },
    parse(value, path, issues) {
      if (value === null) return null
      if (value === undefined) {
        if (absent === 'null') return null
        issues.push({ path, message: `is required (or null): ${String(f.json.description ?? '')}` })
        return undefined
      }
      return f.parse(value, path, issues)
    },
  }
}

/** Any JSON value: what an audit entry says a change was from and to is for people, not for control. */
function anything(description: string): Always<unknown> {
  return { json: { description }, always: true, parse: (value) => value }
}

/** `f`, then `check` on what it gave when that had no problem: what a field alone cannot say. */
function refine<T>(f: Field<T>, check: (value: T, path: string, issues: Issue[]) => void): Field<T> {
  return {
    ...f,
    parse(value, path, issues) {
      const before = issues.length
      const out = f.parse(value, path, issues)
      if (out !== undefined && issues.length === before) check(out, path, issues)
      return out
    },
  }
}

const at = (path: string, key: string): string => (path ? `${path}.${key}` : key)
const count = (description: string) => int(description, 0, MAX)
const epochMs = (description: string) => int(`${description} (epoch ms)`, 0, MAX)
const ms = (description: string, min: number, max: number) => num(`${description} (ms)`, min, max)

const routeName = refine(str('Route name'), (name, path, issues) => {
  if (!isRouteName(name)) issues.push({ path, message: `is not a route name (got ${JSON.stringify(name)})` })
})

const upstream: Field<Upstream> = obj(
  'An upstream as a proxy announced it',
  fields<Upstream>()({ url: str('Origin of the upstream'), release: str('Release id') }),
  { required: ['url', 'release'] },
)

const pair: Field<ReleasePair> = obj(
  'A release pair: stable and the canary served',
  fields<ReleasePair>()({ stable: upstream, canary: orNull(upstream) }),
  { required: ['stable'] },
)

const step: Field<Step> = obj(
  'A step of the plan',
  fields<Step>()({
    weight: stepWeight,
    pause: orNull(ms('How long to hold the step once applied; null: wait for promote', 0, MAX_PAUSE_MS)),
  }),
  { required: ['weight'] },
)

const settings: Field<AnalysisSettings> = obj(
  'Analysis settings',
  fields<AnalysisSettings>()({
    ...analysisFields,
    latency: obj('Latency of canary against stable', {
      ...latencyFields,
      p99MaxMs: orNull(latencyFields.p99MaxMs, 'null'),
    }),
  }),
  { optional: true },
)

const inconclusive: Field<InconclusivePolicy> = obj(
  'What an inconclusive verdict at the end of a pause does',
  fields<InconclusivePolicy>()({
    action: inconclusiveAction,
    extendMs: orNull(ms('With action extend: how much longer the pause runs', 1, MAX_PAUSE_MS), 'null'),
    limit: inconclusiveLimit,
  }),
  { optional: true },
)

const smoke: Field<SmokeCheck> = obj(
  'Pre-step smoke check',
  fields<SmokeCheck>()({
    ...smokeFields,
    timeoutMs: ms('Timeout of each request', 1, MAX_SMOKE_TIMEOUT_MS),
  }),
  { required: ['url', 'requests', 'expectStatus', 'timeoutMs'], optional: true },
)

const promCheck: Field<PromCheck> = obj(
  'A PromQL check',
  fields<PromCheck>()({
    ...promCheckFields,
    forMs: ms('How long out of bounds before it fails', 0, MAX_PAUSE_MS),
  }),
  { required: ['name', 'query', 'forMs'] },
)

const prometheus: Field<PrometheusAnalysis> = obj(
  'PromQL checks against a Prometheus',
  fields<PrometheusAnalysis>()({
    url: promUrl,
    checks: list('The checks', promCheck),
    intervalMs: ms('How often the checks are evaluated', 100, MAX_PROM_INTERVAL_MS),
    timeoutMs: ms('Timeout of each query', 1, MAX_PROM_TIMEOUT_MS),
  }),
  { required: ['url', 'checks', 'intervalMs', 'timeoutMs'], optional: true },
)

/** A plan as stored: a blue-green one is already its two steps (control/rollout.ts blueGreenSteps). */
const plan: Field<Plan> = refine(
  obj(
    'The rollout plan',
    fields<Plan>()({
      mode: oneOf('canary or blue-green', ['canary', 'blue-green'] as const),
      steps: list('Steps', step),
      analysis: obj(
        'Analysis',
        fields<Plan['analysis']>()({
          enabled: bool('Judge the canary and roll back automatically'),
          settings,
          inconclusive,
          prometheus,
        }),
        { required: ['enabled'] },
      ),
      smoke,
    }),
    { required: ['mode', 'steps', 'analysis'] },
  ),
  (p, path, issues) => {
    if (p.mode === 'canary') checkSteps(p.steps, issues, at(path, 'steps'))
    else if (p.steps.length !== 2 || p.steps[0]!.weight !== 0 || p.steps[1]!.weight !== 100)
      issues.push({
        path: at(path, 'steps'),
        message: 'of a blue-green plan must be its preview at 0 and then 100',
      })
    if (p.analysis.inconclusive?.action === 'extend' && p.analysis.inconclusive.extendMs === null)
      issues.push({
        path: at(path, 'analysis.inconclusive.extendMs'),
        message: 'is required with action extend',
      })
    checkSmoke(p.smoke, issues, at(path, 'smoke'))
    checkPrometheus(p.analysis.prometheus, issues, at(path, 'analysis.prometheus'))
  },
)

const rollout: Field<Rollout> = refine(
  obj(
    'The route’s rollout',
    fields<Rollout>()({
      id: str('Rollout id'),
      plan,
      phase: oneOf('Phase', ['progressing', 'paused', 'completed', 'aborted'] as const),
      step: count('Index into plan.steps'),
      stepRevision: count('Revision that set the step’s weight'),
      applied: bool('Every live proxy applied the step'),
      deadline: orNull(num('When the running pause ends (epoch ms)', 0, MAX)),
      leftMs: orNull(ms('Pause still to run', 0, MAX_PAUSE_MS)),
      startedAt: epochMs('Started'),
      updatedAt: epochMs('Last changed'),
      endedAt: orNull(epochMs('Ended')),
      reason: orNull(str('Why it was paused or aborted', { minLength: 0 })),
      extensions: count('Pause extensions of this step'),
    }),
    { required: ['id', 'plan', 'phase', 'step', 'stepRevision', 'applied', 'startedAt', 'updatedAt'] },
  ),
  (r, path, issues) => {
    if (r.step >= r.plan.steps.length)
      issues.push({
        path: at(path, 'step'),
        message: `is beyond the plan's ${r.plan.steps.length} step(s) (got ${r.step})`,
      })
  },
)

/** A route as state.json and audit records hold it; `name` is checked against its key by the caller. */
export const routeRecord: Field<RouteRecord> = obj(
  'A route',
  fields<RouteRecord>()({
    name: routeName,
    version: count('Config version (ETag)'),
    revision: count('Revision of its last versioned change'),
    canary: canaryWeight,
    shadow: orNull(shadowPercent, 'null'),
    stable: orNull(upstream),
    canaryUpstream: orNull(upstream),
    shadowUpstream: orNull(upstream, 'null'),
    canaryFromShadow: bool('The canary is the shadow', false),
    superseded: list('Release pairs moved away from, newest first', pair),
    rollout: orNull(rollout),
    createdAt: epochMs('Created'),
    updatedAt: epochMs('Last changed'),
  }),
  { required: ['name', 'version', 'revision', 'canary', 'createdAt', 'updatedAt'] },
)

const state: Field<ControlState> = refine(
  obj(
    'state.json',
    fields<ControlState>()({
      formatVersion: int('State format', 1, 1) as Field<1>,
      revision: count('Global revision'),
      routes: record('Every route, by name', routeKey, routeRecord),
    }),
    { required: ['formatVersion', 'revision', 'routes'] },
  ),
  (s, _path, issues) => {
    for (const [key, r] of Object.entries(s.routes)) {
      if (r.name !== key)
        issues.push({ path: `routes.${key}.name`, message: `must be the route's key ${key} (got ${r.name})` })
      if (r.revision > s.revision)
        issues.push({
          path: `routes.${key}.revision`,
          message: `is beyond the state's revision ${s.revision} (got ${r.revision})`,
        })
    }
  },
)

/** An audit line: the entry, and on a committed change of a route the route as it left it (null: removed). */
const auditLine: Field<AuditEntry & { record?: RouteRecord | null }> = obj(
  'An audit.log line',
  fields<AuditEntry & { record?: RouteRecord | null }>()({
    seq: count('Sequence number'),
    time: str('When'),
    who: str('Who'),
    role: str('Their role'),
    action: str('What'),
    route: orNull(routeName),
    from: anything('Before'),
    to: anything('After'),
    why: orNull(str('Why', { minLength: 0 })),
    revision: count('Revision the change was committed as'),
    evidence: anything('Analysis verdict'),
    harm: obj(
      'Canary failures during the rollout',
      {
        harmed: count('Users saw'),
        saved: count('Fallback rescued'),
        canaryRequests: count('Canary requests'),
      },
      { required: ['harmed', 'saved', 'canaryRequests'], optional: true },
    ),
    fuse: anything('What tripped the fuse'),
    rollback: str('Why an automatic rollback was made'),
    proxy: str('Which proxy'),
    count: count('Refusals it stands for'),
    replica: str('The control replica that wrote it (etcd)'),
    // Checked only where it is used (the last change at start, each route's last on --recover).
    record: anything('The route as the change left it') as Field<RouteRecord | null>,
  }),
  { required: ['seq', 'time', 'who', 'role', 'action'] },
)

/**
 * A proxy as etcd holds it (`proxies/<id>`, on its replica's lease): written by the replica the proxy
 * talks to when it registers, acks or NACKs, and when it stops or starts being live; every replica's
 * registry reads it (control/proxy-book.ts).
 */
const proxyRecord = obj(
  'A proxy in etcd',
  {
    id: str('Proxy id'),
    who: str('Name of the token it authenticated with'),
    routes: list('Routes it announced', announcedRoute),
    appliedRevision: count('Revision it applied'),
    lastError: orNull(str('Its NACK of the last revision it refused', { minLength: 0 })),
    registeredAt: epochMs('Registered'),
    replica: str('The control replica it talks to'),
    live: bool('Whether that replica has heard from it within the live window'),
  },
  { required: ['id', 'who', 'routes', 'appliedRevision', 'lastError', 'registeredAt', 'replica', 'live'] },
)
export type ProxyRecord = Infer<typeof proxyRecord>
export const checkProxyRecord = (v: unknown) => problemsOf(proxyRecord, v)

/** The problems of a value by `field`, each as `PATH: MESSAGE`; the value as parsed when there are none. */
function problemsOf<T>(field: Field<T>, value: unknown, path = ''): { value: T } | { problems: string[] } {
  const checked = check(field, value, path)
  if (checked.ok) return { value: checked.value }
  return { problems: checked.issues.map((i) => `${i.path || '(top level)'}: ${i.message}`) }
}

export const checkState = (v: unknown) => problemsOf(state, v)
export const checkAuditLine = (v: unknown) => problemsOf(auditLine, v)
/** A route record of an audit line (its path starts `record`). */
export const checkRecord = (v: unknown) => problemsOf(routeRecord, v, 'record')
