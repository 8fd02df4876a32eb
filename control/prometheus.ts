/**
 * Prometheus as an analysis source, the I/O half: per route, the PromQL checks of its running
 * rollout's plan (`analysis.prometheus`), evaluated every `interval` against `/api/v1/query`, each
 * query bounded by the plan's timeout. The clock asks for the verdict inside the write queue, and the
 * answer is what the last evaluation left (`verdict` never waits); an evaluation that is due is started
 * then and runs outside the queue, as a smoke check does, so a slow or dead Prometheus never holds up
 * an abort. Kept in memory, like the analysis book: after a restart the `for` runs start again.
 */
import { request } from 'undici'
import { formatDuration } from '../config/duration.ts'
import {
  type CheckState,
  expandQuery,
  observe,
  type PrometheusAnalysis,
  type PromResult,
  readAnswer,
  reasonOf,
  type Sample,
  type TemplateVars,
  verdictOf,
} from './promql.ts'
import { isActive, type Rollout } from './rollout.ts'

/** One instant query: the value, or why there is none (never throws). */
export type PromQuery = (url: string, expr: string, timeoutMs: number) => Promise<Sample>

export const queryPrometheus: PromQuery = async (url, expr, timeoutMs) => {
  const target = new URL('api/v1/query', url.endsWith('/') ? url : `${url}/`)
  target.searchParams.set('query', expr)
  target.searchParams.set('timeout', `${timeoutMs}ms`)
  try {
    const res = await request(target, { method: 'GET', signal: AbortSignal.timeout(timeoutMs) })
    const text = await res.body.text()
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {}
    return readAnswer(res.statusCode, body)
  } catch (err) {
    const e = err as Error & { code?: string }
    if (e.name === 'TimeoutError' || e.name === 'AbortError')
      return { ok: false, reason: `Prometheus at ${url} did not answer within ${formatDuration(timeoutMs)}` }
    return { ok: false, reason: `Prometheus at ${url} unreachable (${e.code ?? e.message})` }
  }
}

export interface PromVerdict {
  readonly result: PromResult
  readonly reason: string
  /** On fail: the failed check's name. */
  readonly check?: string
  readonly checks: readonly PromCheckView[]
}

/** A check as the rollout view and the audit's evidence show it. */
export interface PromCheckView {
  readonly name: string
  readonly query: string
  readonly max: number | null
  readonly min: number | null
  readonly for: string
  readonly state: CheckState['state']
  /** Null when the last evaluation gave no value (its reason says why). */
  readonly value: number | null
  readonly reason: string
  readonly outSince: string | null
  readonly evaluatedAt: string
}

export interface PromView extends PromVerdict {
  /** Evaluations completed for this rollout, and how long the last one took (ms). */
  readonly evaluations: number
  readonly lastLatencyMs: number | null
}

class Run {
  readonly rollout: string
  readonly plan: PrometheusAnalysis
  states: CheckState[] = []
  /** The stepRevision the last completed evaluation began at (its step). */
  evaluatedStep = -1
  startedAt = Number.NEGATIVE_INFINITY
  startedStep = -1
  inFlight = false
  evaluations = 0
  lastLatencyMs: number | null = null

  constructor(rollout: Rollout, plan: PrometheusAnalysis) {
    this.rollout = rollout.id
    this.plan = plan
  }
}

export interface PrometheusBookOptions {
  readonly query?: PromQuery
  /** An evaluation came back (main.ts ticks the clock, so a verdict is acted on without waiting a tick). */
  readonly evaluated?: (route: string) => void
  /** Wall time for the latency figure. Default performance.now. */
  readonly elapsed?: () => number
}

const iso = (ms: number): string => new Date(ms).toISOString()

export class PrometheusBook {
  readonly #runs = new Map<string, Run>()
  readonly #query: PromQuery
  readonly #evaluated: (route: string) => void
  readonly #elapsed: () => number

  constructor(opts: PrometheusBookOptions = {}) {
    this.#query = opts.query ?? queryPrometheus
    this.#evaluated = opts.evaluated ?? (() => {})
    this.#elapsed = opts.elapsed ?? (() => performance.now())
  }

  /**
   * The verdict on the route's rollout from the last evaluation, null when its plan has no Prometheus
   * checks. Starts an evaluation (not awaited) when one is due: none in flight, and the interval has
   * passed or the step changed since the last one started.
   */
  verdict(route: string, rollout: Rollout, vars: TemplateVars, now: number): PromVerdict | null {
    const plan = rollout.plan.analysis.prometheus
    if (plan === undefined) return null
    let run = this.#runs.get(route)
    if (run === undefined || run.rollout !== rollout.id) {
      run = new Run(rollout, plan)
      this.#runs.set(route, run)
    }
    const due = now - run.startedAt >= plan.intervalMs || run.startedStep !== rollout.stepRevision
    if (!run.inFlight && due) void this.#evaluate(route, run, rollout.stepRevision, vars, now)
    return this.#verdictOf(run, rollout.stepRevision)
  }

  view(route: string, rollout: Rollout | null): PromView | null {
    const run = this.#runs.get(route)
    if (rollout === null || run === undefined || run.rollout !== rollout.id) return null
    // An ended rollout shows what its last evaluation left, of whichever step it was.
    const step = isActive(rollout) ? rollout.stepRevision : run.evaluatedStep
    return {
      ...this.#verdictOf(run, step),
      evaluations: run.evaluations,
      lastLatencyMs: run.lastLatencyMs,
    }
  }

  #verdictOf(run: Run, step: number): PromVerdict {
    const v = verdictOf(run.states, run.evaluatedStep === step)
    return { ...v, checks: run.states.map(checkView) }
  }

  async #evaluate(route: string, run: Run, step: number, vars: TemplateVars, now: number): Promise<void> {
    run.inFlight = true
    run.startedAt = now
    run.startedStep = step
    const t0 = this.#elapsed()
    const { url, timeoutMs, checks } = run.plan
    const queries = checks.map((c) => expandQuery(c.query, vars))
    // A query that throws (a replaced PromQuery) is an inconclusive sample, never a run stuck in flight.
    const ask = (q: string) =>
      this.#query(url, q, timeoutMs).catch((err: unknown): Sample => ({ ok: false, reason: String(err) }))
    const samples = await Promise.all(queries.map(ask))
    run.lastLatencyMs = Math.round((this.#elapsed() - t0) * 10) / 10
    // The samples are of `now`, when the queries were sent: the `for` runs are timed by it.
    run.states = checks.map((c, i) => observe(run.states[i] ?? null, c, queries[i]!, samples[i]!, now))
    run.evaluatedStep = step
    run.evaluations++
    run.inFlight = false
    if (this.#runs.get(route) === run) this.#evaluated(route)
  }
}

function checkView(s: CheckState): PromCheckView {
  return {
    name: s.check.name,
    query: s.query,
    max: s.check.max ?? null,
    min: s.check.min ?? null,
    for: formatDuration(s.check.forMs),
    state: s.state,
    value: s.sample.ok ? s.sample.value : null,
    reason: reasonOf(s),
    outSince: s.outSince === null ? null : iso(s.outSince),
    evaluatedAt: iso(s.at),
  }
}
