/**
 * Control's half of the analysis: per route, the judge of its running rollout (proxy/analysis/judge.ts),
 * fed with every proxy's per-second report as it arrives — sums and merged histograms across proxies,
 * never averages of averages — and the rollout's harm account (canary failures users saw, and those the
 * fallback to stable rescued). Kept in memory: after a control restart a rollout's evidence starts
 * again from zero (the verdict is inconclusive until it has enough), its harm counts too. With a
 * Prometheus book, a plan's PromQL checks (control/prometheus.ts) join the verdict: either side's fail
 * fails it, either side's inconclusive makes it inconclusive.
 */
import type { FuseReport, RouteReport } from '../config/wire.ts'
import { Analysis, DEFAULT_ANALYSIS, type Judgement } from '../proxy/analysis/judge.ts'
import type { JudgeInput, Verdict } from './judge.ts'
import type { PrometheusBook, PromVerdict, PromView } from './prometheus.ts'
import { isActive, type Plan, type Rollout } from './rollout.ts'

export interface Harm {
  /** Canary failures users saw during the rollout (after fallback). */
  readonly harmed: number
  /** Canary failures the fallback to stable rescued. */
  readonly saved: number
  /** Canary requests over the rollout. */
  readonly canaryRequests: number
}

export interface AnalysisView extends Harm {
  /** Null when the plan's analysis is off, or nothing was judged yet. */
  readonly verdict: 'pass' | 'fail' | 'inconclusive' | null
  readonly reason: string | null
  readonly judgement: Judgement | null
  /** A fuse that tripped in a proxy during this rollout. */
  readonly fuse: (FuseReport & { readonly proxy: string }) | null
  /** The plan's Prometheus checks as last evaluated; null without any. */
  readonly prometheus: PromView | null
}

class Entry {
  readonly rollout: string
  readonly analysis: Analysis | null
  harmed = 0
  saved = 0
  canaryRequests = 0
  last: Judgement | null = null
  /** The last verdict given, Prometheus checks included. */
  verdict: Verdict | null = null
  fuse: (FuseReport & { proxy: string }) | null = null

  constructor(rollout: Rollout) {
    this.rollout = rollout.id
    this.analysis = rollout.plan.analysis.enabled ? new Analysis(settingsOf(rollout.plan)) : null
  }
}

export function settingsOf(plan: Plan) {
  return plan.analysis.settings ?? DEFAULT_ANALYSIS
}

export class AnalysisBook {
  readonly #routes = new Map<string, Entry>()
  readonly #prometheus: PrometheusBook | null

  constructor(prometheus: PrometheusBook | null = null) {
    this.#prometheus = prometheus
  }

  #entry(route: string, rollout: Rollout): Entry {
    let e = this.#routes.get(route)
    if (e === undefined || e.rollout !== rollout.id) {
      e = new Entry(rollout)
      this.#routes.set(route, e)
    }
    return e
  }

  /**
   * One proxy's report for one route. Counted only while the route has a rollout in progress; a report
   * with no canary traffic in it adds nothing to the comparison (proxy/analysis/stats.ts skips it).
   */
  feed(route: string, rollout: Rollout | null, report: RouteReport, proxy: string): void {
    // After the rollout ends its entry stays (the views show its last verdict and harm) until the next.
    if (!isActive(rollout)) return
    const e = this.#entry(route, rollout)
    const canary = report.canary
    if (report.fuse !== undefined && e.fuse === null) e.fuse = { ...report.fuse, proxy }
    if (canary === null) return
    e.harmed += canary.harmed ?? 0
    e.saved += canary.saved ?? 0
    e.canaryRequests += canary.requests
    if (
      e.analysis !== null &&
      rollout.phase === 'progressing' &&
      canary.requests + report.stable.requests > 0
    )
      e.analysis.add(report.stable, canary)
  }

  /** The verdict on the rollout so far (the clock asks every tick). */
  verdict(input: JudgeInput): Verdict {
    const { route, rollout, now } = input
    const e = this.#entry(route, rollout)
    if (e.analysis === null) return { result: 'pass', reason: 'analysis disabled' }
    const j = e.analysis.judge()
    e.last = j
    const own: Verdict = { result: j.result, reason: j.reason, evidence: j, check: failedCheck(j) }
    const vars = { route, stable: input.stable ?? '', canary: input.canary ?? '' }
    const prom = this.#prometheus?.verdict(route, rollout, vars, now) ?? null
    e.verdict = prom === null ? own : joined(own, j, prom)
    return e.verdict
  }

  view(route: string, rollout: Rollout | null): AnalysisView | null {
    if (rollout === null) return null
    const e = this.#routes.get(route)
    if (e === undefined || e.rollout !== rollout.id)
      return {
        verdict: null,
        reason: null,
        judgement: null,
        fuse: null,
        harmed: 0,
        saved: 0,
        canaryRequests: 0,
        prometheus: this.#prometheus?.view(route, rollout) ?? null,
      }
    return {
      verdict: e.verdict?.result ?? e.last?.result ?? null,
      reason: e.verdict?.reason ?? e.last?.reason ?? null,
      judgement: e.last,
      fuse: e.fuse,
      prometheus: this.#prometheus?.view(route, rollout) ?? null,
      harmed: e.harmed,
      saved: e.saved,
      canaryRequests: e.canaryRequests,
    }
  }

  harm(route: string, rollout: Rollout): Harm {
    const e = this.#routes.get(route)
    if (e === undefined || e.rollout !== rollout.id) return { harmed: 0, saved: 0, canaryRequests: 0 }
    return { harmed: e.harmed, saved: e.saved, canaryRequests: e.canaryRequests }
  }
}

/**
 * The proxies' verdict and the Prometheus checks' as one: a fail of either (the proxies' first, as
 * they are judged per second), else an inconclusive of either, else a check pending its `for` (wait),
 * else pass. The evidence is the judgement with the checks' states.
 */
export function joined(own: Verdict, j: Judgement, prom: PromVerdict): Verdict {
  const evidence = { ...j, prometheus: prom.checks }
  if (own.result === 'fail') return { ...own, evidence }
  if (prom.result === 'fail') return { result: 'fail', reason: prom.reason, evidence, check: 'prometheus' }
  const unsure = [own, prom].filter((v) => v.result === 'inconclusive').map((v) => v.reason)
  if (unsure.length > 0) return { result: 'inconclusive', reason: unsure.join('; '), evidence }
  if (prom.result === 'wait') return { result: 'inconclusive', reason: prom.reason, evidence, wait: true }
  return { result: 'pass', reason: `${own.reason}; ${prom.reason}`, evidence }
}

function failedCheck(j: Judgement): string | undefined {
  return j.checks.find((c) => c.result === 'fail')?.check
}
