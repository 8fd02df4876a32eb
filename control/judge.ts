/**
 * The seam for analysis: a pure function from a route's rollout and the live proxies' latest reports to
 * a verdict, as Argo Rollouts' evaluate returns Successful / Failed / Inconclusive. The engine calls it
 * on every tick of a running rollout whose plan has analysis enabled: `fail` rolls back at once (the
 * reason goes to the audit log), `inconclusive` at the end of a pause holds the rollout paused, `pass`
 * lets it go on. The statistics (merged proxy/analysis windows) are a later issue; until then every
 * verdict is a pass.
 */
import type { VersionReport } from '../config/wire.ts'
import type { Rollout } from './rollout.ts'

export type VerdictResult = 'pass' | 'fail' | 'inconclusive'

export interface Verdict {
  readonly result: VerdictResult
  /** For fail and inconclusive: which check, with its figures. */
  readonly reason: string
}

export interface JudgeInput {
  readonly route: string
  readonly rollout: Rollout
  readonly reports: readonly { readonly stable: VersionReport; readonly canary: VersionReport | null }[]
  readonly now: number
}

export type Judge = (input: JudgeInput) => Verdict

export const alwaysPass: Judge = () => ({ result: 'pass', reason: 'no analysis yet' })
