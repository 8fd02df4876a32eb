/**
 * The engine's decisions as one pure function: `decide(state, command, now)` → the changes to commit
 * (each with its audit) and the effects to run. No I/O, no clock, no queue: the engine (engine.ts) runs
 * one decision at a time, commits its changes (`applyChanges`: one revision per decision, one audit
 * entry per versioned change), then runs its effects outside the queue. A smoke check is such an
 * effect: the raise that needs it waits in `smokes`, and the check's result comes back as a
 * `smoke-result` command, decided against the state as it is then.
 */
import { ApiError } from './errors.ts'
import {
  advance,
  type Ctx,
  isActive,
  type Notice,
  type Plan,
  type RolloutEvent,
  type SmokeCheck,
  start,
} from './rollout.ts'
import type { AuditDraft, AuditEntry, ControlState, RouteRecord } from './store.ts'

export interface Actor {
  readonly name: string
  readonly role: string
}

const SMOKE: Actor = { name: 'smoke', role: 'system' }

/** What an automatic rollback adds to its audit entry: the verdict's evidence, harm counts, the fuse, why. */
export type AuditExtra = Pick<AuditEntry, 'evidence' | 'harm' | 'fuse' | 'rollback'>

/** A versioned change's audit entry as decided; `applyChanges` makes it a draft (role, route, revision). */
export interface Audit {
  readonly who: Actor
  readonly action: string
  readonly from: unknown
  readonly to: unknown
  readonly why: string | null
  /** An automatic rollback's evidence, or the proxy whose registration made the change. */
  readonly extra?: AuditExtra & Pick<AuditEntry, 'proxy'>
}

export interface Change {
  readonly next: RouteRecord
  readonly previousWeight: number
  /** Null for bookkeeping that is persisted but not versioned (a pause started, upstream info). */
  readonly audit: Audit | null
  readonly notices: readonly Notice[]
  /** A rollout step became applied (its pause starts): published as an `applied` event. */
  readonly applied?: boolean
}

type Said = { readonly route: string; readonly who: Actor; readonly why: string | null }

export type Command =
  | (Said & { readonly type: 'set-weight'; readonly canary: number; readonly ifMatch?: string })
  | (Said & { readonly type: 'set-shadow'; readonly percent: number; readonly ifMatch?: string })
  | (Said & { readonly type: 'start'; readonly plan: Plan })
  | (Said & { readonly type: 'promote-shadow'; readonly plan: Plan })
  /** Feed the route's rollout one event (promote, pause, resume, applied, tick, extend, or abort it). */
  | (Said & { readonly type: 'event'; readonly event: RolloutEvent; readonly extra?: AuditExtra })
  /** The rollback lever: abort the rollout, or with none set canary 0. */
  | (Said & { readonly type: 'abort'; readonly extra?: AuditExtra })
  /** A smoke check's result: `failed` null when it passed. */
  | {
      readonly type: 'smoke-result'
      readonly route: string
      readonly id: number
      readonly step: number
      readonly failed: string | null
    }

/** A command whose raise can wait for a smoke check. */
type Raise = Extract<Command, { type: 'start' | 'promote-shadow' | 'event' }>

/** A raise decided but waiting for its smoke check; `at`: the route then. */
export interface PendingSmoke {
  readonly id: number
  readonly step: number
  readonly command: Raise
  readonly at: RouteRecord
}

export interface DecideState {
  readonly control: ControlState
  /** Per route, the raise waiting for its smoke check (at most one). */
  readonly smokes: Readonly<Record<string, PendingSmoke>>
  /** The id the next smoke check gets. */
  readonly nextSmoke: number
}

export type Effect =
  /** Run the check; feed its result back as `smoke-result` with this id and step. */
  | {
      readonly type: 'smoke'
      readonly route: string
      readonly id: number
      readonly step: number
      readonly check: SmokeCheck
    }
  /** A smoke result came back stale (an abort, pause or promote came first): nothing changed. */
  | {
      readonly type: 'smoke-dropped'
      readonly route: string
      readonly id: number
      readonly step: number
      /** The dropped result (null: passed). */
      readonly failed: string | null
      readonly error: ApiError
    }

export interface Decision {
  /** The time and revision of this decision: every versioned change of it has them. */
  readonly ctx: Ctx
  readonly changes: readonly Change[]
  readonly effects: readonly Effect[]
  readonly smokes: DecideState['smokes']
  readonly nextSmoke: number
}

/** The time and revision of the change being decided: the one place the revision is bumped. */
export function nextCtx(state: ControlState, now: number): Ctx {
  return { now, revision: state.revision + 1 }
}

/** `r` with `patch` as a versioned change at `ctx`: its version +1, the change's revision and time. */
export function bump(r: RouteRecord, patch: Partial<RouteRecord>, ctx: Ctx): RouteRecord {
  return { ...r, ...patch, version: r.version + 1, revision: ctx.revision, updatedAt: ctx.now }
}

/**
 * The state once `changes` are committed at `ctx`, and the audit drafts: the one place they are made,
 * one per versioned change. The revision moves on by one if any change is versioned.
 */
export function applyChanges(
  state: ControlState,
  changes: readonly Change[],
  ctx: Ctx,
): { state: ControlState; drafts: AuditDraft[] } {
  const routes = { ...state.routes }
  for (const c of changes) routes[c.next.name] = c.next
  const versioned = changes.some((c) => c.audit !== null)
  const drafts: AuditDraft[] = []
  for (const c of changes) {
    if (c.audit === null) continue
    const { who, action, from, to, why, extra } = c.audit
    drafts.push({
      who: who.name,
      role: who.role,
      action,
      route: c.next.name,
      from,
      to,
      why,
      ...extra,
      revision: ctx.revision,
    })
  }
  return { state: { ...state, revision: versioned ? ctx.revision : state.revision, routes }, drafts }
}

/** The route of that name, or undefined: own keys only (a route may be called `constructor`). */
export function findRoute(state: ControlState, name: string): RouteRecord | undefined {
  return Object.hasOwn(state.routes, name) ? state.routes[name] : undefined
}

export function routeOf(state: ControlState, name: string): RouteRecord {
  const r = findRoute(state, name)
  if (r === undefined)
    throw new ApiError(
      'unknown_route',
      `no route named ${JSON.stringify(name)}; known: ${Object.keys(state.routes).sort().join(', ') || 'none yet (routes appear when a proxy registers them)'}`,
    )
  return r
}

/** Decide `command` on `s` at `now`. A refusal throws its ApiError and decides nothing. */
export function decide(s: DecideState, command: Command, now: number): Decision {
  return dispatch(s, command, nextCtx(s.control, now), undefined)
}

function decision(
  s: DecideState,
  ctx: Ctx,
  changes: readonly Change[] = [],
  effects: readonly Effect[] = [],
  smokes: DecideState['smokes'] = s.smokes,
): Decision {
  return { ctx, changes, effects, smokes, nextSmoke: s.nextSmoke }
}

export function without(smokes: DecideState['smokes'], route: string): DecideState['smokes'] {
  if (!Object.hasOwn(smokes, route)) return smokes
  const { [route]: _, ...rest } = smokes
  return rest
}

/** `failed`: undefined before the smoke check, else its result (null: passed). */
function dispatch(s: DecideState, c: Command, ctx: Ctx, failed: string | null | undefined): Decision {
  switch (c.type) {
    case 'set-weight':
      return setWeight(s, c, ctx)
    case 'set-shadow':
      return setShadow(s, c, ctx)
    case 'start': {
      const r = routeOf(s.control, c.route)
      checkNoRollout(r)
      return startOn(s, c, r, null, ctx, failed)
    }
    case 'promote-shadow':
      return promoteShadow(s, c, ctx, failed)
    case 'event':
      return transition(s, c, ctx, failed)
    case 'abort': {
      // Even with nothing to roll back, an abort wins over a raise waiting for its smoke check.
      const r = routeOf(s.control, c.route)
      const rest = { ...s, smokes: without(s.smokes, r.name) }
      if (isActive(r.rollout))
        return transition(
          rest,
          { ...c, type: 'event', event: { type: 'abort', reason: c.why } },
          ctx,
          undefined,
        )
      if (r.canary === 0) return decision(rest, ctx)
      const audit = {
        who: c.who,
        action: 'abort',
        from: { canary: r.canary },
        to: { canary: 0 },
        why: c.why,
        extra: c.extra,
      }
      const next = bump(r, { canary: 0 }, ctx)
      return decision(rest, ctx, [{ next, previousWeight: r.canary, audit, notices: ['rolled-back'] }])
    }
    case 'smoke-result':
      return smokeResult(s, c, ctx)
  }
}

function setWeight(s: DecideState, c: Extract<Command, { type: 'set-weight' }>, ctx: Ctx): Decision {
  const r = routeOf(s.control, c.route)
  checkIfMatch(r, c.ifMatch)
  if (isActive(r.rollout))
    throw new ApiError(
      'rollout_active',
      `route ${r.name} has a rollout in progress (step ${r.rollout.step + 1}/${r.rollout.plan.steps.length}); promote, abort or let it finish before setting a weight by hand`,
    )
  if (c.canary > 0 && r.canaryUpstream === null)
    throw new ApiError(
      'no_canary',
      `route ${r.name} has no canary upstream; add one to the proxies' config first`,
    )
  if (c.canary === r.canary) return decision(s, ctx)
  return byHand(s, c, r, 'set-weight', { canary: r.canary }, { canary: c.canary }, ctx)
}

/** The share of the route's requests the proxies mirror to its shadow. Rollouts do not hold it up. */
function setShadow(s: DecideState, c: Extract<Command, { type: 'set-shadow' }>, ctx: Ctx): Decision {
  const r = routeOf(s.control, c.route)
  checkIfMatch(r, c.ifMatch)
  if (r.shadowUpstream === null)
    throw new ApiError(
      'no_shadow',
      `route ${r.name} has no shadow upstream; add shadow.url to the route in the proxies' config first`,
    )
  if (r.canaryFromShadow)
    throw new ApiError(
      'no_shadow',
      `route ${r.name}'s shadow (${r.shadowUpstream.release}) serves as its canary since promote-shadow, so nothing is mirrored; to mirror again, put a new release in the proxies' shadow config`,
    )
  if (c.percent === r.shadow) return decision(s, ctx)
  return byHand(s, c, r, 'set-shadow', { shadow: r.shadow }, { shadow: c.percent }, ctx)
}

/** An operator's change of one setting (weight, shadow percent): a new version, audited from → to. */
function byHand(
  s: DecideState,
  c: Said,
  r: RouteRecord,
  action: string,
  from: Partial<RouteRecord>,
  to: Partial<RouteRecord>,
  ctx: Ctx,
): Decision {
  const audit = { who: c.who, action, from, to, why: c.why }
  return decision(s, ctx, [{ next: bump(r, to, ctx), previousWeight: r.canary, audit, notices: [] }])
}

/**
 * `promote-shadow`: the route's shadow becomes its canary at weight 0, mirroring stops (shadow percent
 * 0), and the plan starts on it as `start` starts one: one revision, so proxies never see the promotion
 * without the plan's first step. The route remembers it (`canaryFromShadow`), so proxies serve their
 * configured shadow as the canary.
 */
function promoteShadow(
  s: DecideState,
  c: Extract<Command, { type: 'promote-shadow' }>,
  ctx: Ctx,
  failed: string | null | undefined,
): Decision {
  const r = routeOf(s.control, c.route)
  const plan = c.plan
  if (r.shadowUpstream === null)
    throw new ApiError(
      'no_shadow',
      `route ${r.name} has no shadow upstream to promote; add shadow.url to the route in the proxies' config first`,
    )
  checkNoRollout(r)
  // The proxies serve the shadow as the canary only once they apply this revision: a smoke check
  // before step 1 would reach the canary they had before.
  if (plan.smoke !== undefined && plan.steps[0]!.weight > 0)
    throw new ApiError(
      'invalid_plan',
      `steps[0].weight is ${plan.steps[0]!.weight}, but with a smoke check a promote-shadow plan starts at weight 0 (e.g. {"weight": 0, "pause": "30s"}): before step 1 the proxies do not serve the shadow as the canary yet, so the check could not reach it`,
    )
  const canaryUpstream = r.shadowUpstream
  const prelude = {
    action: 'promote-shadow',
    patch: { canary: 0, shadow: 0, canaryUpstream, canaryFromShadow: true },
    from: {
      canary: r.canary,
      shadow: r.shadow,
      canaryUpstream: r.canaryUpstream,
      shadowUpstream: r.shadowUpstream,
      canaryFromShadow: r.canaryFromShadow,
    },
    to: { canary: 0, shadow: 0, canaryUpstream, canaryFromShadow: true },
  }
  return startOn(s, c, r, prelude, ctx, failed)
}

/**
 * Start the plan on `r` (the caller checked that no rollout runs): the start, its abort when the smoke
 * check failed, and before both `prelude` when given: a change of the same revision and reason that
 * the start builds on (promote-shadow's). With a smoke check due and not run yet: only the check.
 */
function startOn(
  s: DecideState,
  c: Extract<Command, { type: 'start' | 'promote-shadow' }>,
  r: RouteRecord,
  prelude: { action: string; patch: Partial<RouteRecord>; from: unknown; to: unknown } | null,
  ctx: Ctx,
  failed: string | null | undefined,
): Decision {
  const { plan, who, why } = c
  const name = r.name
  const base = prelude === null ? r : { ...r, ...prelude.patch }
  if (base.canaryUpstream === null && plan.steps.some((step) => step.weight > 0))
    throw new ApiError(
      'no_canary',
      `route ${name} has no canary upstream; add one to the proxies' config first`,
    )
  if (failed === undefined && needsSmoke(plan, base.canary, plan.steps[0]!.weight))
    return pend(s, c, r, 1, plan.smoke!, ctx)
  const changes: Change[] = []
  if (prelude !== null) {
    const { action, patch, from, to } = prelude
    const next = bump(r, patch, ctx)
    changes.push({ next, previousWeight: r.canary, audit: { who, action, from, to, why }, notices: [] })
    r = next
  }
  const out = start(plan, `${name}-${ctx.revision}`, ctx)
  const next = bump(r, { canary: out.weight, rollout: out.rollout }, ctx)
  const to = { canary: out.weight, step: 1, steps: plan.steps.length, mode: plan.mode }
  const audit = { who, action: 'rollout-start', from: { canary: r.canary }, to, why }
  changes.push({ next, previousWeight: r.canary, audit, notices: out.notices })
  if (failed !== null && failed !== undefined) {
    // Step 1 never reaches the proxies: the rollout is recorded as started and aborted at once.
    const reason = smokeWhy(1, failed)
    const abort = advance(out.rollout, { type: 'abort', reason }, ctx)
    if (!abort.ok) throw new Error('abort of a new rollout was refused')
    changes.push({
      next: bump(next, { canary: abort.weight, rollout: abort.rollout }, ctx),
      previousWeight: r.canary,
      audit: {
        who: SMOKE,
        action: 'rollout-abort',
        from: { canary: r.canary, step: 1, phase: 'progressing' },
        to: { canary: abort.weight, step: 1, phase: abort.rollout.phase },
        why: reason,
        extra: { rollback: 'smoke' },
      },
      notices: abort.notices,
    })
  }
  return decision(s, ctx, changes)
}

/**
 * Feed the route's rollout one event. A raise that needs the smoke check only asks for it (`pend`); a
 * clock step decided while a check for this route runs waits for that one, anything else the rollout
 * does meanwhile (a versioned change) makes that check's result stale.
 */
function transition(
  s: DecideState,
  c: Extract<Command, { type: 'event' }>,
  ctx: Ctx,
  failed: string | null | undefined,
): Decision {
  const r = routeOf(s.control, c.route)
  if (r.rollout === null)
    throw new ApiError(
      'no_rollout',
      `route ${r.name} has no rollout; start one with POST /v1/routes/${r.name}/rollout`,
    )
  let { event, who, why, extra } = c
  let out = advance(r.rollout, event, ctx)
  if (!out.ok) throw new ApiError(out.code, `route ${r.name}: ${out.message}`)
  if (out.change === 'none') return decision(s, ctx)
  if (failed === undefined && needsSmoke(r.rollout.plan, r.canary, out.weight)) {
    // An operator's promote goes ahead of a step the clock decided; the clock's waits for the check.
    if (event.type === 'tick' && Object.hasOwn(s.smokes, r.name)) return decision(s, ctx)
    return pend(s, c, r, out.rollout.step + 1, r.rollout.plan.smoke!, ctx)
  }
  const smokes = out.change === 'versioned' ? without(s.smokes, r.name) : s.smokes
  if (failed !== null && failed !== undefined) {
    // The raise never happens: the smoke check's failure aborts the rollout as `abort` does.
    why = smokeWhy(out.rollout.step + 1, failed)
    event = { type: 'abort', reason: why }
    who = SMOKE
    extra = { ...extra, rollback: 'smoke' }
    out = advance(r.rollout, event, ctx)
    if (!out.ok) throw new ApiError(out.code, `route ${r.name}: ${out.message}`)
  }
  if (out.change === 'progress') {
    const next = { ...r, rollout: out.rollout }
    return decision(
      s,
      ctx,
      [{ next, previousWeight: r.canary, audit: null, notices: [], applied: true }],
      [],
      smokes,
    )
  }
  const next = bump(r, { canary: out.weight, rollout: out.rollout }, ctx)
  const from = { canary: r.canary, step: r.rollout.step + 1, phase: r.rollout.phase }
  const to = { canary: out.weight, step: out.rollout.step + 1, phase: out.rollout.phase }
  const action =
    event.type === 'tick'
      ? out.rollout.phase === 'completed'
        ? 'rollout-complete'
        : 'rollout-step'
      : `rollout-${event.type}`
  const audit = { who, action, from, to, why, extra }
  return decision(s, ctx, [{ next, previousWeight: r.canary, audit, notices: out.notices }], [], smokes)
}

/** Nothing changes yet: the raise waits for the smoke check (an effect), replacing one waiting. */
function pend(
  s: DecideState,
  command: Raise,
  at: RouteRecord,
  step: number,
  check: SmokeCheck,
  ctx: Ctx,
): Decision {
  const id = s.nextSmoke
  const smokes = { ...s.smokes, [at.name]: { id, step, command, at } }
  return {
    ctx,
    changes: [],
    effects: [{ type: 'smoke', route: at.name, id, step, check }],
    smokes,
    nextSmoke: id + 1,
  }
}

/**
 * A smoke check's result: its raise is decided again, with the result, if it is still the one waiting
 * and the route is where it was (same rollout, step, phase and weight; for a start: the same version
 * and still no rollout). Else the result is dropped: an effect that says why, nothing changed.
 */
function smokeResult(s: DecideState, c: Extract<Command, { type: 'smoke-result' }>, ctx: Ctx): Decision {
  const p = Object.hasOwn(s.smokes, c.route) ? s.smokes[c.route] : undefined
  const current = p !== undefined && p.id === c.id
  const rest = current ? { ...s, smokes: without(s.smokes, c.route) } : s
  const r = routeOf(s.control, c.route)
  const stale = current
    ? staleness(p, r)
    : new ApiError(
        isActive(r.rollout) ? 'version_mismatch' : 'no_rollout',
        `route ${c.route} changed while the smoke check before step ${c.step} ran (an abort, pause or promote came first), so its result was dropped; GET it and retry`,
      )
  if (stale !== null)
    return decision(
      rest,
      ctx,
      [],
      [{ type: 'smoke-dropped', route: c.route, id: c.id, step: c.step, failed: c.failed, error: stale }],
    )
  return dispatch(rest, p!.command, ctx, c.failed)
}

function staleness(p: PendingSmoke, r: RouteRecord): ApiError | null {
  const was = p.at
  const name = r.name
  if (p.command.type !== 'event') {
    if (isActive(r.rollout))
      return new ApiError(
        'rollout_active',
        `route ${name} had a rollout started (${r.rollout.id}) while the smoke check before step 1 ran; abort or promote it first`,
      )
    if (r.version !== was.version)
      return new ApiError(
        'version_mismatch',
        `route ${name} changed (version ${was.version} → ${r.version}) while the smoke check before step 1 ran, so the rollout was not started; GET it and start again`,
      )
    return null
  }
  const ro = r.rollout
  const then = was.rollout!
  if (
    ro !== null &&
    ro.id === then.id &&
    ro.step === then.step &&
    ro.phase === then.phase &&
    r.canary === was.canary
  )
    return null
  const now = ro === null || ro.id !== then.id ? 'another rollout' : `${ro.phase} at step ${ro.step + 1}`
  return new ApiError(
    isActive(ro) ? 'version_mismatch' : 'no_rollout',
    `route ${name}'s rollout changed while the smoke check before step ${p.step} ran (it is now ${now}), so its result was dropped; GET the route and retry`,
  )
}

/** A change that raises the canary weight (`from` → `to`) needs the plan's smoke check first. */
function needsSmoke(plan: Plan, from: number, to: number): boolean {
  return plan.smoke !== undefined && to > from
}

function checkNoRollout(r: RouteRecord): void {
  if (isActive(r.rollout))
    throw new ApiError(
      'rollout_active',
      `route ${r.name} already has a rollout in progress (${r.rollout.id}); abort or promote it first`,
    )
}

/** If-Match (RFC 9110 §13.1.1): `*`, or a list of entity tags of which one must be the route's version. */
function checkIfMatch(r: RouteRecord, header: string | undefined): void {
  if (header === undefined) return
  const tags = header.split(',').map((t) => t.trim())
  if (tags.includes('*')) return
  // Strong comparison: a weak tag (W/"3") never matches.
  if (tags.some((t) => t === `"${r.version}"` || t === String(r.version))) return
  throw new ApiError(
    'version_mismatch',
    `route ${r.name} is at version ${r.version}, If-Match said ${header}; GET it again and retry with the new ETag`,
  )
}

function smokeWhy(step: number, reason: string): string {
  return `smoke check before step ${step} failed: ${reason}`
}
