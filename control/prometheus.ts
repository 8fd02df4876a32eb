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

const MIB = 1024 * 1024
/** The largest answer read: one series is a few hundred bytes. */
const MAX_ANSWER = MIB

export const queryPrometheus: PromQuery = async (url, expr, timeoutMs) => {
  const target = new URL('api/v1/query', url.endsWith('/') ? url : `${url}/`)
  target.searchParams.set('query', expr)
  target.searchParams.set('timeout', `${timeoutMs}ms`)
  try {
    const res = await request(target, { method: 'GET', signal: AbortSignal.timeout(timeoutMs) })
    // A query that matches many series answers with a large vector, which is inconclusive anyway:
    // it is not read past MAX_ANSWER.
    const chunks: Buffer[] = []
    let size = 0
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      size += chunk.length
      if (size > MAX_ANSWER) {
        res.body.destroy()
        return {
          ok: false,
          reason: `Prometheus at ${url} answered more than ${MAX_ANSWER / MIB} MiB: the query matches too many series (aggregate it, e.g. sum(...))`,
        }
      }
      chunks.push(chunk)
    }
    const text = Buffer.concat(chunks).toString('utf8')
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
  /** Whether that step was applied (every live proxy serving its weight) when the evaluation began. */
  evaluatedApplied = false
  startedAt = Number.NEGATIVE_INFINITY
  startedStep = -1
  startedApplied = false
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
    // A step that became applied is evaluated at once: what came before saw the previous weight.
    const due =
      now - run.startedAt >= plan.intervalMs ||
      run.startedStep !== rollout.stepRevision ||
      (rollout.applied && !run.startedApplied)
    if (!run.inFlight && due) void this.#evaluate(route, run, rollout, vars, now)
    return this.#verdictOf(run, rollout.stepRevision, rollout.applied)
  }

  view(route: string, rollout: Rollout | null): PromView | null {
    const run = this.#runs.get(route)
    if (rollout === null || run === undefined || run.rollout !== rollout.id) return null
    // An ended rollout shows what its last evaluation left, of whichever step it was.
    const active = isActive(rollout)
    const step = active ? rollout.stepRevision : run.evaluatedStep
    return {
      ...this.#verdictOf(run, step, active && rollout.applied),
      evaluations: run.evaluations,
      lastLatencyMs: run.lastLatencyMs,
    }
  }

  /**
   * A pass needs an evaluation of this step that began once it was `applied` (when it is): one sent
   * before the proxies served the step's weight measured the previous one.
   */
  #verdictOf(run: Run, step: number, applied: boolean): PromVerdict {
    const v = verdictOf(run.states, run.evaluatedStep === step && (run.evaluatedApplied || !applied))
    return { ...v, checks: run.states.map(checkView) }
  }

  async #evaluate(route: string, run: Run, rollout: Rollout, vars: TemplateVars, now: number): Promise<void> {
    const step = rollout.stepRevision
    const applied = rollout.applied
    run.inFlight = true
    // A gap of more than two intervals (a pause, a control restart) leaves no evidence that a pending
    // check stayed out of bounds: its `for` starts again.
    if (now - run.startedAt > 2 * run.plan.intervalMs) run.states = run.states.map(restartFor)
    run.startedAt = now
    run.startedStep = step
    run.startedApplied = applied
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
    run.evaluatedApplied = applied
    run.evaluations++
    run.inFlight = false
    if (this.#runs.get(route) === run) this.#evaluated(route)
  }
}

const restartFor = (s: CheckState): CheckState => (s.outSince === null ? s : { ...s, outSince: null })

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
