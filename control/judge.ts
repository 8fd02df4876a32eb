/**
 * The seam for analysis: a function from a route's rollout to a verdict, as Argo Rollouts' evaluate
 * returns Successful / Failed / Inconclusive. The clock calls it on every tick of a running rollout
 * whose plan has analysis enabled: `fail` rolls back at once (the reason and evidence go to the audit
 * log), `inconclusive` at the end of a pause holds the rollout paused, `pass` lets it go on. In
 * `veer control` it is the AnalysisBook (analysis.ts), fed by the proxies' reports; tests may pass
 * their own.
 */
import type { Judgement } from '../proxy/analysis/judge.ts'
import type { PromCheckView } from './prometheus.ts'
import type { Rollout } from './rollout.ts'

export type VerdictResult = 'pass' | 'fail' | 'inconclusive'

export interface Verdict {
  readonly result: VerdictResult
  /** For fail and inconclusive: which check, with its figures. */
  readonly reason: string
  /**
   * Counts, rates, quantiles, statistics and thresholds behind the verdict; with Prometheus checks in
   * the plan, `prometheus` has each check's query as sent, value, bound and state.
   */
  readonly evidence?: Judgement & { readonly prometheus?: readonly PromCheckView[] }
  /**
   * On fail: the check that failed (errors, outcome, latency-p95, latency-p99, or prometheus: one of a plan's PromQL checks, named in the reason):
   * a metric label.
   */
  readonly check?: string
  /**
   * On inconclusive: the verdict is due soon (a Prometheus check out of bounds for less than its
   * `for`, or not yet evaluated at this step): the step waits at the end of its pause, without the
   * plan's inconclusive policy.
   */
  readonly wait?: boolean
}

export interface JudgeInput {
  readonly route: string
  readonly rollout: Rollout
  readonly now: number
  /** The route's release ids (for query templates); null canary: none. */
  readonly stable?: string | null
  readonly canary?: string | null
}

export type Judge = (input: JudgeInput) => Verdict
