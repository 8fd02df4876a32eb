/**
 * The seam for analysis: a function from a route's rollout to a verdict, as Argo Rollouts' evaluate
 * returns Successful / Failed / Inconclusive. The clock calls it on every tick of a running rollout
 * whose plan has analysis enabled: `fail` rolls back at once (the reason and evidence go to the audit
 * log), `inconclusive` at the end of a pause holds the rollout paused, `pass` lets it go on. In
 * `veer control` it is the AnalysisBook (analysis.ts), fed by the proxies' reports; tests may pass
 * their own.
 */
import type { Judgement } from '../proxy/analysis/judge.ts'
import type { Rollout } from './rollout.ts'

export type VerdictResult = 'pass' | 'fail' | 'inconclusive'

export interface Verdict {
  readonly result: VerdictResult
  /** For fail and inconclusive: which check, with its figures. */
  readonly reason: string
  /** Counts, rates, quantiles, statistics and thresholds behind the verdict. */
  readonly evidence?: Judgement
  /** On fail: the check that failed (errors, outcome, latency-p95, latency-p99): a metric label. */
  readonly check?: string
}

export interface JudgeInput {
  readonly route: string
  readonly rollout: Rollout
  readonly now: number
}

export type Judge = (input: JudgeInput) => Verdict
