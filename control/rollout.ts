/**
 * A staged rollout as a pure state machine: (rollout, event, now, revision) → next rollout, the canary
 * weight it wants and the notices it raises. No timers, no I/O: the engine (engine.ts) feeds it operator
 * actions, "every live proxy applied the step" and clock ticks, and persists what it returns.
 *
 * A step is applied once every live proxy has acknowledged the revision that set its weight; only then
 * does its pause start (as Argo Rollouts waits for the traffic router to verify a weight). The pause is
 * a wall-clock deadline, persisted, so a control restart resumes the step with the time that is left.
 */
import type { AnalysisSettings } from '../proxy/analysis/judge.ts'
import type { PrometheusAnalysis } from './promql.ts'

export interface Step {
  readonly weight: number
  /** Milliseconds to hold the step once applied; null waits for promote. */
  readonly pause: number | null
}

export type Mode = 'canary' | 'blue-green'

/**
 * A pre-step smoke check: before a change that raises the canary weight, control sends `requests` GETs
 * to `url` (a proxy's traffic listener) with the override header asking for the canary; every answer
 * must have one of `expectStatus` and come from the canary, or the rollout aborts. The I/O is the
 * engine's (smoke.ts); this machine only sees the abort it leads to.
 */
export interface SmokeCheck {
  readonly url: string
  readonly requests: number
  readonly expectStatus: readonly number[]
  readonly timeoutMs: number
}

/**
 * What an inconclusive verdict at the end of a step's pause does (as Argo Rollouts' inconclusive
 * limits): `pause` the rollout (the default; `resume` gives the step its pause again), `extend` the
 * pause by `extendMs`, at most `limit` times a step (then pause), or `abort` (roll back).
 */
export interface InconclusivePolicy {
  readonly action: 'pause' | 'extend' | 'abort'
  readonly extendMs: number | null
  readonly limit: number
}

export const DEFAULT_INCONCLUSIVE: InconclusivePolicy = { action: 'pause', extendMs: null, limit: 3 }

export interface Plan {
  readonly mode: Mode
  readonly steps: readonly Step[]
  /**
   * `settings` absent (plans stored by older versions): the defaults (proxy/analysis/judge.ts);
   * `inconclusive` absent: DEFAULT_INCONCLUSIVE.
   */
  readonly analysis: {
    readonly enabled: boolean
    readonly settings?: AnalysisSettings
    readonly inconclusive?: InconclusivePolicy
    /** PromQL checks evaluated against a Prometheus while the rollout runs (absent: none). */
    readonly prometheus?: PrometheusAnalysis
  }
  /** Absent: no smoke check. */
  readonly smoke?: SmokeCheck
}

export type Phase = 'progressing' | 'paused' | 'completed' | 'aborted'

export interface Rollout {
  readonly id: string
  readonly plan: Plan
  readonly phase: Phase
  /** Index into plan.steps. */
  readonly step: number
  /** The control revision that set this step's weight; the step is applied when live proxies acked it. */
  readonly stepRevision: number
  readonly applied: boolean
  /** Epoch ms when the running pause ends: set only while progressing, applied, on a timed step. */
  readonly deadline: number | null
  /** The pause still to run while it is not running (not applied yet, or paused); null on a promote step. */
  readonly leftMs: number | null
  readonly startedAt: number
  readonly updatedAt: number
  readonly endedAt: number | null
  /** Why it was paused or aborted. */
  readonly reason: string | null
  /** How many times this step's pause was extended on an inconclusive verdict (absent: none). */
  readonly extensions?: number
}

export type Notice =
  | 'started'
  | 'step'
  | 'paused'
  | 'resumed'
  | 'promoted'
  | 'rolled-back'
  | 'completed'
  /** Not of a rollout: a route's stable or canary changed (control/release.ts); one it ran is aborted. */
  | 'release-changed'

export type RolloutEvent =
  | { readonly type: 'promote'; readonly full: boolean }
  | { readonly type: 'pause'; readonly reason: string | null }
  | { readonly type: 'resume' }
  | { readonly type: 'abort'; readonly reason: string | null }
  | { readonly type: 'applied' }
  | { readonly type: 'tick' }
  /** The running pause gets `ms` more from now (an inconclusive verdict, plan `inconclusive: extend`). */
  | { readonly type: 'extend'; readonly ms: number }

export interface Ctx {
  readonly now: number
  /** The revision this change is committed as, if it is a versioned change. */
  readonly revision: number
}

/**
 * `versioned`: the weight or the phase or step changed (bumps the revision, audited, proxies told);
 * `progress`: only bookkeeping changed (a pause started) — persisted, not versioned; `none`: nothing.
 */
export type Change = 'versioned' | 'progress' | 'none'

export type RefusalCode = 'no_rollout' | 'already_paused' | 'not_paused'

export type Outcome =
  | {
      readonly ok: true
      readonly rollout: Rollout
      readonly weight: number
      readonly notices: readonly Notice[]
      readonly change: Change
    }
  | { readonly ok: false; readonly code: RefusalCode; readonly message: string }

export function isActive(r: Rollout | null): r is Rollout {
  return r !== null && (r.phase === 'progressing' || r.phase === 'paused')
}

/** The canary weight a rollout asks for. */
export function weightOf(r: Rollout): number {
  if (r.phase === 'aborted') return 0
  if (r.phase === 'completed') return 100
  return r.plan.steps[r.step]!.weight
}

function enter(r: Rollout, step: number, ctx: Ctx): Rollout {
  return {
    ...r,
    phase: 'progressing',
    step,
    stepRevision: ctx.revision,
    applied: false,
    deadline: null,
    leftMs: r.plan.steps[step]!.pause,
    updatedAt: ctx.now,
    reason: null,
    extensions: 0,
  }
}

export function start(plan: Plan, id: string, ctx: Ctx): Outcome & { ok: true } {
  const base: Rollout = {
    id,
    plan,
    phase: 'progressing',
    step: 0,
    stepRevision: ctx.revision,
    applied: false,
    deadline: null,
    leftMs: null,
    startedAt: ctx.now,
    updatedAt: ctx.now,
    endedAt: null,
    reason: null,
  }
  const rollout = enter(base, 0, ctx)
  return { ok: true, rollout, weight: weightOf(rollout), notices: ['started'], change: 'versioned' }
}

function done(r: Rollout, phase: 'completed' | 'aborted', ctx: Ctx, reason: string | null): Rollout {
  return {
    ...r,
    phase,
    stepRevision: ctx.revision,
    applied: false,
    deadline: null,
    leftMs: null,
    updatedAt: ctx.now,
    endedAt: ctx.now,
    reason,
  }
}

function ok(r: Rollout, notices: Notice[], change: Change): Outcome {
  return { ok: true, rollout: r, weight: weightOf(r), notices, change }
}

/** Move to the next step, or complete after the last (completion gives the canary 100%, as Argo does). */
function next(r: Rollout, ctx: Ctx, notices: Notice[]): Outcome {
  if (r.step + 1 >= r.plan.steps.length)
    return ok(done(r, 'completed', ctx, null), [...notices, 'completed'], 'versioned')
  return ok(enter(r, r.step + 1, ctx), [...notices, 'step'], 'versioned')
}

const refuse = (code: RefusalCode, message: string): Outcome => ({ ok: false, code, message })

export function advance(r: Rollout, event: RolloutEvent, ctx: Ctx): Outcome {
  const unchanged = ok(r, [], 'none')
  if (r.phase === 'completed' || r.phase === 'aborted') {
    if (event.type === 'applied' || event.type === 'tick') return unchanged
    return refuse('no_rollout', `there is no rollout in progress (the last one ${r.phase})`)
  }
  switch (event.type) {
    case 'promote':
      if (event.full) return ok(done(r, 'completed', ctx, null), ['promoted', 'completed'], 'versioned')
      return next(r, ctx, ['promoted'])
    case 'abort':
      return ok(done(r, 'aborted', ctx, event.reason), ['rolled-back'], 'versioned')
    case 'pause': {
      if (r.phase === 'paused') return refuse('already_paused', 'the rollout is already paused; resume it')
      const leftMs = r.deadline === null ? r.leftMs : Math.max(0, r.deadline - ctx.now)
      const paused: Rollout = {
        ...r,
        phase: 'paused',
        deadline: null,
        leftMs,
        updatedAt: ctx.now,
        reason: event.reason,
      }
      return ok(paused, ['paused'], 'versioned')
    }
    case 'resume': {
      if (r.phase !== 'paused') return refuse('not_paused', 'the rollout is not paused')
      // A step paused after its pause had run out (analysis held it: inconclusive) gets its whole pause
      // again, to gather the traffic it lacked; otherwise the time that was left.
      const step = r.plan.steps[r.step]!.pause
      const leftMs = r.leftMs === 0 && step !== null ? step : r.leftMs
      const running = r.applied && leftMs !== null
      const resumed: Rollout = {
        ...r,
        phase: 'progressing',
        deadline: running ? ctx.now + leftMs! : null,
        leftMs: running ? null : leftMs,
        updatedAt: ctx.now,
        reason: null,
      }
      return ok(resumed, ['resumed'], 'versioned')
    }
    case 'applied': {
      if (r.applied) return unchanged
      // While paused the step is applied but its pause does not run until resume.
      const running = r.phase === 'progressing' && r.leftMs !== null
      const applied: Rollout = {
        ...r,
        applied: true,
        deadline: running ? ctx.now + r.leftMs! : null,
        leftMs: running ? null : r.leftMs,
        updatedAt: ctx.now,
      }
      return ok(applied, [], 'progress')
    }
    case 'tick':
      if (r.phase !== 'progressing' || r.deadline === null || ctx.now < r.deadline) return unchanged
      return next(r, ctx, [])
    case 'extend': {
      if (r.phase !== 'progressing' || r.deadline === null) return unchanged
      const extended: Rollout = {
        ...r,
        deadline: ctx.now + event.ms,
        extensions: (r.extensions ?? 0) + 1,
        updatedAt: ctx.now,
      }
      return ok(extended, [], 'versioned')
    }
  }
}

export type View =
  | 'waiting-for-proxies'
  | 'pausing'
  | 'waiting-for-promote'
  | 'paused'
  | 'completed'
  | 'aborted'

/** What the rollout is doing, and the pause left (ms) when it has a timed pause ahead or running. */
export function describe(r: Rollout, now: number): { state: View; pauseLeftMs: number | null } {
  if (r.phase === 'completed' || r.phase === 'aborted') return { state: r.phase, pauseLeftMs: null }
  const pauseLeftMs = r.deadline !== null ? Math.max(0, r.deadline - now) : r.leftMs
  if (r.phase === 'paused') return { state: 'paused', pauseLeftMs }
  if (!r.applied) return { state: 'waiting-for-proxies', pauseLeftMs }
  return { state: r.deadline !== null ? 'pausing' : 'waiting-for-promote', pauseLeftMs }
}

/** A blue-green plan as steps: preview (override traffic only) at 0%, then 100% in one step, held for promote. */
export function blueGreenSteps(preview: number | null): Step[] {
  return [
    { weight: 0, pause: preview },
    { weight: 100, pause: null },
  ]
}
