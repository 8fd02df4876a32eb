/**
 * The rollout clock: on every tick (and at once after an ack) each running rollout is checked. A step
 * whose revision every live proxy serving the route has acked becomes applied and its pause starts; a
 * pause that has run out moves the rollout on; with analysis enabled the judge is asked, applied or not,
 * and a `fail` rolls back at once while an `inconclusive` at the end of a pause holds the rollout paused. Every
 * change goes through the engine's one queue, so the clock never races an operator's call. With several
 * replicas (etcd) only the leader's clock runs (control/leader.ts), and its writes are fenced.
 */
import type { Logger } from 'pino'
import { formatDuration } from '../config/duration.ts'
import type { FuseReport } from '../config/wire.ts'
import type { AnalysisBook } from './analysis.ts'
import { NotLeaderError, StaleStateError } from './control-store.ts'
import { findRoute } from './decide.ts'
import type { Actor, Engine, Lead } from './engine.ts'
import type { Judge, Verdict } from './judge.ts'
import type { ProxyRegistry } from './proxies.ts'
import { DEFAULT_INCONCLUSIVE, isActive } from './rollout.ts'

const ROLLOUT: Actor = { name: 'rollout', role: 'system' }
const ANALYSIS: Actor = { name: 'analysis', role: 'system' }
const FUSE: Actor = { name: 'fuse', role: 'system' }

export interface ClockDeps {
  readonly engine: Engine
  readonly proxies: ProxyRegistry
  /** The verdicts and harm counts; absent in tests that judge with `judge` alone. */
  readonly analysis?: AnalysisBook
  /** Default: the analysis book's verdict. */
  readonly judge?: Judge
  readonly log: Logger
  /** After a start, how long before a step may count as applied: proxies need time to register again. */
  readonly graceMs: number
  /** Who leads; absent: this control always does. */
  readonly lead?: Lead
}

export class RolloutClock {
  private readonly engine: Engine
  private readonly proxies: ProxyRegistry
  private readonly judge: Judge
  private readonly analysis: AnalysisBook | null
  private readonly log: Logger
  private readonly graceMs: number
  private startedAt: number
  private readonly lead: Lead | null
  private ticking = false
  private tickAgain = false
  /** Route and proxy → the `at` of the last fuse trip rolled back (reports repeat a trip until applied). */
  private readonly fusesActedOn = new Map<string, number>()

  constructor(deps: ClockDeps) {
    this.engine = deps.engine
    this.proxies = deps.proxies
    this.analysis = deps.analysis ?? null
    const book = this.analysis
    this.judge = deps.judge ?? ((i) => book?.verdict(i) ?? { result: 'pass', reason: '' })
    this.log = deps.log
    this.graceMs = deps.graceMs
    this.startedAt = this.engine.now()
    this.lead = deps.lead ?? null
  }

  /**
   * This replica was elected: the start-up grace begins again, for the proxies of the old leader to
   * find another replica.
   */
  elected(): void {
    this.startedAt = this.engine.now()
    this.tick()
  }

  /** Check every running rollout; never runs twice at once (a tick asked for meanwhile runs after). */
  tick(): void {
    if (this.lead !== null && !this.lead.leading()) return
    if (this.ticking) {
      this.tickAgain = true
      return
    }
    this.ticking = true
    void this.engine
      .queue(() => this.tickRoutes())
      .catch((err) => {
        if (err instanceof NotLeaderError) this.log.info({ reason: err.message }, 'rollout tick not written')
        else if (err instanceof StaleStateError) {
          // Another replica wrote first: decide again, from its state, with every check run again.
          this.log.info('rollout tick lost to another write; ticking again on the new state')
          this.tickAgain = true
        } else this.log.error({ err }, 'rollout tick failed')
      })
      .finally(() => {
        this.ticking = false
        if (this.tickAgain) {
          this.tickAgain = false
          this.tick()
        }
      })
  }

  /**
   * A proxy's fuse tripped (N consecutive canary errors): roll the route back at once, without waiting
   * for statistics. The proxy holds its fuse (and reports it) until control sets the canary to 0, so a
   * step that raced the report (a newer version, canary still > 0) is rolled back too. Ignored: a fuse of
   * a canary control no longer serves, one from before the route's version it reports (impossible unless
   * state was restored), and a trip already acted on (its report repeats until the proxy applies the
   * rollback; an operator who raises the canary again after that is not overruled by a stale report).
   */
  fuse(name: string, fuse: FuseReport, proxy: string): void {
    if (this.lead !== null && !this.lead.leading()) return
    const key = `${name}\u0000${proxy}`
    if (this.fusesActedOn.get(key) === fuse.at) return
    void this.engine
      .queue(async () => {
        const r = findRoute(this.engine.state, name)
        if (r === undefined || r.canary === 0 || fuse.version > r.version) return
        if (this.fusesActedOn.get(key) === fuse.at) return
        if (
          fuse.release !== undefined &&
          r.canaryUpstream !== null &&
          r.canaryUpstream.release !== fuse.release
        )
          return
        this.fusesActedOn.set(key, fuse.at)
        const why = `fuse tripped in proxy ${proxy}: ${fuse.reason}`
        const harm = isActive(r.rollout) ? this.analysis?.harm(name, r.rollout) : undefined
        await this.engine.abortInQueue(r, FUSE, why, {
          fuse: { ...fuse, proxy },
          rollback: 'fuse',
          ...(harm && { harm }),
        })
        this.log.warn({ route: name, proxy, reason: fuse.reason }, 'canary rolled back by a proxy fuse')
      })
      .catch((err) => {
        // Lost to another replica's write: the proxy repeats its fuse until it applies the rollback,
        // and that report is judged again on the new state.
        if (err instanceof StaleStateError) this.fusesActedOn.delete(key)
        else this.log.error({ err }, 'fuse rollback failed')
      })
  }

  private async tickRoutes(): Promise<void> {
    for (const name of Object.keys(this.engine.state.routes)) {
      // A few transitions per route and tick: applied, then a zero pause can end at once.
      for (let i = 0; i < 3; i++) if (!(await this.tickRoute(name))) break
    }
  }

  private async tickRoute(name: string): Promise<boolean> {
    const r = this.engine.state.routes[name]!
    const ro = r.rollout
    if (!isActive(ro)) return false
    const now = this.engine.now()
    // The canary is judged from its first request: a step the proxies serve but that does not count as
    // applied yet (the start-up grace, a proxy still to ack) is rolled back on a failed check too. Only
    // a pass waits for the step to be applied and its pause to run.
    let verdict: Verdict = { result: 'pass', reason: '' }
    if (ro.phase === 'progressing' && ro.plan.analysis.enabled) {
      const releases = { stable: r.stable?.release ?? null, canary: r.canaryUpstream?.release ?? null }
      verdict = this.judge({ route: name, rollout: ro, now, ...releases })
      if (verdict.result === 'fail') {
        const harm = this.analysis?.harm(name, ro)
        await this.engine.transition(
          r,
          { type: 'abort', reason: verdict.reason },
          ANALYSIS,
          `analysis failed: ${verdict.reason}`,
          now,
          {
            ...(verdict.evidence && { evidence: verdict.evidence }),
            ...(harm && { harm }),
            rollback: verdict.check ?? 'analysis',
          },
        )
        this.log.warn(
          { route: name, reason: verdict.reason, harm, applied: ro.applied },
          'canary rolled back by analysis',
        )
        return false
      }
    }
    if (!ro.applied) {
      if (now - this.startedAt < this.graceMs || !this.proxies.ready) return false
      const sync = this.proxies.sync(r, ro.stepRevision, now)
      if (sync.applied < sync.live) return false
      await this.engine.transition(r, { type: 'applied' }, ROLLOUT, null, now)
      return true
    }
    if (ro.phase !== 'progressing') return false
    if (ro.deadline === null || now < ro.deadline) return false
    // A Prometheus check pending its `for`, or not evaluated at this step yet: its verdict is due soon.
    if (verdict.result === 'inconclusive' && verdict.wait === true) return false
    if (verdict.result === 'inconclusive') {
      const policy = ro.plan.analysis.inconclusive ?? DEFAULT_INCONCLUSIVE
      const done = ro.extensions ?? 0
      const why = `analysis inconclusive: ${verdict.reason}`
      if (policy.action === 'abort') {
        await this.engine.transition(r, { type: 'abort', reason: why }, ANALYSIS, why, now, {
          rollback: 'inconclusive',
        })
        this.log.warn({ route: name, reason: verdict.reason }, 'canary rolled back: analysis inconclusive')
      } else if (policy.action === 'extend' && policy.extendMs !== null && done < policy.limit) {
        const more = `${why}; the step's pause is extended by ${formatDuration(policy.extendMs)} (${done + 1} of ${policy.limit})`
        await this.engine.transition(r, { type: 'extend', ms: policy.extendMs }, ANALYSIS, more, now)
      } else {
        const held = policy.action === 'extend' ? `${why} (after ${done} extensions)` : why
        await this.engine.transition(r, { type: 'pause', reason: held }, ANALYSIS, held, now)
      }
      return false
    }
    const held = ro.plan.steps[ro.step]!.pause ?? 0
    const why = `step ${ro.step + 1} held ${formatDuration(held)}`
    await this.engine.transition(r, { type: 'tick' }, ROLLOUT, why, now)
    return true
  }
}
