/** The JSON shapes of routes and rollouts the API answers with (and the CLI reads). */
import { formatDuration } from '../config/duration.ts'
import { type AnalysisSettings, DEFAULT_ANALYSIS } from '../proxy/analysis/judge.ts'
import type { AnalysisView } from './analysis.ts'
import type { PrometheusAnalysis } from './promql.ts'
import {
  DEFAULT_INCONCLUSIVE,
  describe,
  type InconclusivePolicy,
  type Rollout,
  type View,
} from './rollout.ts'
import type { AuditEntry, RouteRecord, UpstreamInfo } from './store.ts'

export interface RolloutView {
  id: string
  mode: string
  phase: string
  /** What it waits for now: waiting-for-proxies, pausing, waiting-for-promote, paused, completed, aborted. */
  state: View
  /** 1-based step number, and the plan's step count. */
  step: number
  steps: number
  stepWeight: number
  stepPause: string | null
  pauseLeftMs: number | null
  pauseEndsAt: string | null
  stepRevision: number
  applied: boolean
  /** Times this step's pause was extended on an inconclusive verdict (plan `inconclusive: extend`). */
  extensions: number
  plan: {
    mode: string
    steps: { weight: number; pause: string | null }[]
    /** The plan's analysis settings (defaults filled in), and what an inconclusive verdict does. */
    analysis: {
      enabled: boolean
      settings: AnalysisSettings
      inconclusive: { action: InconclusivePolicy['action']; extend: string | null; limit: number }
      /** Only when the plan has Prometheus checks; their live states are in `analysis.prometheus`. */
      prometheus?: {
        url: string
        interval: string
        timeout: string
        checks: { name: string; query: string; max: number | null; min: number | null; for: string }[]
      }
    }
    /** Only when the plan has a smoke check. */
    smoke?: { url: string; requests: number; expectStatus: number[]; timeout: string }
  }
  reason: string | null
  /** The live verdict with its evidence, and the harm account of this rollout (analysis.ts). */
  analysis: AnalysisView | null
  startedAt: string
  updatedAt: string
  endedAt: string | null
}

export interface RouteView {
  name: string
  version: number
  revision: number
  weights: { stable: number; canary: number }
  stable: UpstreamInfo | null
  canary: UpstreamInfo | null
  /** The shadow upstream the proxies announced, and the percent they mirror (null: their file setting). */
  shadow: (UpstreamInfo & { percent: number | null }) | null
  /** After promote-shadow: `canary` is the shadow's release, served to users and no longer mirrored. */
  canaryFromShadow: boolean
  rollout: RolloutView | null
  /**
   * Live proxies serving the route's release pair, how many of them applied its last change, and the
   * ids of live proxies whose config serves another pair (stale: they serve the route by their file).
   */
  proxies: { live: number; inSync: number; stale: string[] }
  /** The route's last versioned change from the audit (kept across restarts): who did what, and why. */
  last: LastChange | null
  /** What the operator does next, when the route waits for them (a promoted canary, a rollback). */
  next: string | null
  updatedAt: string
}

export interface LastChange {
  action: string
  who: string
  why: string | null
  time: string
  /** The proxy that announced it (release changes, routes adopted). */
  proxy?: string
}

const iso = (ms: number): string => new Date(ms).toISOString()
const dur = (ms: number | null): string | null => (ms === null ? null : formatDuration(ms))

const inconclusiveView = (p: InconclusivePolicy) => ({
  action: p.action,
  extend: dur(p.extendMs),
  limit: p.limit,
})

const prometheusView = (p: PrometheusAnalysis) => ({
  url: p.url,
  interval: formatDuration(p.intervalMs),
  timeout: formatDuration(p.timeoutMs),
  checks: p.checks.map((c) => ({
    name: c.name,
    query: c.query,
    max: c.max ?? null,
    min: c.min ?? null,
    for: formatDuration(c.forMs),
  })),
})

export function rolloutView(r: Rollout, now: number, analysis: AnalysisView | null = null): RolloutView {
  const { state, pauseLeftMs } = describe(r, now)
  const step = r.plan.steps[r.step]!
  return {
    id: r.id,
    mode: r.plan.mode,
    phase: r.phase,
    state,
    step: r.step + 1,
    steps: r.plan.steps.length,
    stepWeight: step.weight,
    stepPause: dur(step.pause),
    pauseLeftMs,
    pauseEndsAt: r.deadline === null ? null : iso(r.deadline),
    stepRevision: r.stepRevision,
    applied: r.applied,
    extensions: r.extensions ?? 0,
    plan: {
      mode: r.plan.mode,
      steps: r.plan.steps.map((s) => ({ weight: s.weight, pause: dur(s.pause) })),
      analysis: {
        enabled: r.plan.analysis.enabled,
        settings: r.plan.analysis.settings ?? DEFAULT_ANALYSIS,
        inconclusive: inconclusiveView(r.plan.analysis.inconclusive ?? DEFAULT_INCONCLUSIVE),
        ...(r.plan.analysis.prometheus && { prometheus: prometheusView(r.plan.analysis.prometheus) }),
      },
      ...(r.plan.smoke && {
        smoke: {
          url: r.plan.smoke.url,
          requests: r.plan.smoke.requests,
          expectStatus: [...r.plan.smoke.expectStatus],
          timeout: formatDuration(r.plan.smoke.timeoutMs),
        },
      }),
    },
    reason: r.reason,
    analysis,
    startedAt: iso(r.startedAt),
    updatedAt: iso(r.updatedAt),
    endedAt: r.endedAt === null ? null : iso(r.endedAt),
  }
}

/**
 * The operator's next step for a route at rest: a canary at 100% is promoted and waits for the config to
 * make it the stable (the hand-off); a rolled-back canary waits for a fix (a new release in the config).
 */
export function nextStep(r: RouteRecord): string | null {
  const ended = r.rollout === null ? null : r.rollout.phase
  if (r.canaryUpstream === null || ended === 'progressing' || ended === 'paused') return null
  const release = r.canaryUpstream.release
  if (r.canary === 100)
    return `${release} serves 100%: make ${release} the stable in the proxies' config (with the next release as canary, or none); control records the hand-off and the new canary starts at its canaryWeight (0 when unset)`
  if (r.canary === 0 && ended === 'aborted')
    return `${release} was rolled back: start a new rollout of it, or name a fixed release as canary in the proxies' config (it starts at its canaryWeight, 0 when unset)`
  return null
}

function lastChange(e: AuditEntry | null): LastChange | null {
  if (e === null) return null
  return {
    action: e.action,
    who: e.who,
    why: e.why,
    time: e.time,
    ...(e.proxy !== undefined && { proxy: e.proxy }),
  }
}

export function routeView(
  r: RouteRecord,
  sync: { live: number; applied: number; stale: readonly string[] },
  now: number,
  analysis: AnalysisView | null = null,
  last: AuditEntry | null = null,
): RouteView {
  return {
    name: r.name,
    version: r.version,
    revision: r.revision,
    weights: { stable: 100 - r.canary, canary: r.canary },
    stable: r.stable,
    canary: r.canaryUpstream,
    shadow: r.shadowUpstream === null ? null : { ...r.shadowUpstream, percent: r.shadow },
    canaryFromShadow: r.canaryFromShadow,
    rollout: r.rollout === null ? null : rolloutView(r.rollout, now, analysis),
    proxies: { live: sync.live, inSync: sync.applied, stale: [...sync.stale] },
    last: lastChange(last),
    next: nextStep(r),
    updatedAt: iso(r.updatedAt),
  }
}
