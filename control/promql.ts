/**
 * Prometheus as an analysis source, the pure half: a plan's PromQL checks, their templating, what an
 * answer of `/api/v1/query` means, and the `for` rule (Prometheus alert semantics: a check fails only
 * once it has been out of bounds for `for`). No I/O: control/prometheus.ts asks, this decides.
 *
 * As Argo Rollouts' analysis runs, an evaluation is Successful, Failed or Inconclusive; unlike a
 * `result[0] >= x` condition on an empty vector, nothing here passes by default: no series, several
 * series, NaN, a non-200 or no answer are each an inconclusive sample with its reason.
 */
import { formatDuration } from '../config/duration.ts'

export interface PromCheck {
  /** A label-safe name: reasons and evidence carry it. */
  readonly name: string
  /** PromQL with placeholders (PLACEHOLDERS). */
  readonly query: string
  /** Exactly one of max and min: the bound the value must stay within. */
  readonly max?: number
  readonly min?: number
  /** How long the value must be out of bounds before the check fails (0: at once). */
  readonly forMs: number
}

export interface PrometheusAnalysis {
  /** Prometheus' base URL; queries go to `${url}/api/v1/query`. */
  readonly url: string
  readonly checks: readonly PromCheck[]
  /** How often the checks are evaluated while the rollout progresses. */
  readonly intervalMs: number
  /** Bound on one query (sent as Prometheus' own `timeout` too). */
  readonly timeoutMs: number
}

/** The placeholders a query may use: the route's name and the two release ids. */
export const PLACEHOLDERS = ['route', 'stable', 'canary'] as const
export type Placeholder = (typeof PLACEHOLDERS)[number]
export type TemplateVars = Readonly<Record<Placeholder, string>>

const PLACEHOLDER = /\{\{\s*([^{}]*?)\s*\}\}/g

/** The placeholders of `query` that are not known, as written (`{{ foo }}` gives `foo`). */
export function unknownPlaceholders(query: string): string[] {
  const known: readonly string[] = PLACEHOLDERS
  return [...query.matchAll(PLACEHOLDER)].map((m) => m[1]!).filter((name) => !known.includes(name))
}

/**
 * `query` with its placeholders replaced, each value escaped for a PromQL double-quoted string (as
 * in `{release="{{canary}}"}`): a release id with a quote or backslash cannot break out of its label
 * matcher. Callers checked the placeholders (unknownPlaceholders) when the plan came in.
 */
export function expandQuery(query: string, vars: TemplateVars): string {
  return query.replace(PLACEHOLDER, (whole, name: string) =>
    Object.hasOwn(vars, name) ? vars[name as Placeholder].replace(/[\\"]/g, '\\$&') : whole,
  )
}

/** One evaluation of one check: a value, or why there is none. */
export type Sample =
  | { readonly ok: true; readonly value: number }
  | { readonly ok: false; readonly reason: string }

const inconclusive = (reason: string): Sample => ({ ok: false, reason })

function labelsOf(metric: unknown): string {
  if (metric === null || typeof metric !== 'object') return '{}'
  const parts = Object.entries(metric as Record<string, unknown>).map(([k, v]) => `${k}="${String(v)}"`)
  return `{${parts.join(',')}}`
}

function sampleOf(pair: unknown): Sample {
  if (!Array.isArray(pair) || typeof pair[1] !== 'string')
    return inconclusive('the answer has no [time, "value"] sample')
  // Prometheus writes values as strings: "0.25", "NaN", "+Inf", "-Inf".
  const text = pair[1]
  const value = text === '+Inf' ? Infinity : text === '-Inf' ? -Infinity : Number(text)
  if (Number.isNaN(value)) return inconclusive(`the value is ${text} (a ratio of zero to zero?)`)
  return { ok: true, value }
}

/**
 * What an HTTP answer of `/api/v1/query` says: exactly one value (a scalar, or a vector of exactly one
 * series), else inconclusive with the reason. `status` is the HTTP status, `body` the parsed JSON (or
 * undefined when it was not JSON).
 */
export function readAnswer(status: number, body: unknown): Sample {
  const b = (body ?? {}) as { status?: unknown; error?: unknown; errorType?: unknown; data?: unknown }
  if (status !== 200 || b.status !== 'success') {
    const why = typeof b.error === 'string' ? `: ${String(b.errorType ?? 'error')}: ${b.error}` : ''
    return inconclusive(`Prometheus answered ${status}${why}`)
  }
  const data = (b.data ?? {}) as { resultType?: unknown; result?: unknown }
  if (data.resultType === 'scalar') return sampleOf(data.result)
  if (data.resultType !== 'vector' || !Array.isArray(data.result))
    return inconclusive(
      `the query gives a ${String(data.resultType)}, not an instant vector or a scalar; drop the [range] or wrap it in a function`,
    )
  const series = data.result as { metric?: unknown; value?: unknown }[]
  if (series.length === 0)
    return inconclusive('empty result: no series matched (not scraped yet, or wrong labels?)')
  if (series.length > 1) {
    const shown = series.slice(0, 3).map((s) => labelsOf(s.metric))
    const more = series.length > 3 ? ` and ${series.length - 3} more` : ''
    return inconclusive(
      `${series.length} series (${shown.join(', ')}${more}); aggregate them to one, e.g. sum(...)`,
    )
  }
  return sampleOf(series[0]!.value)
}

/** A check's state across evaluations: the last sample, and since when its value is out of bounds. */
export interface CheckState {
  readonly check: PromCheck
  /** The query as sent (placeholders replaced). */
  readonly query: string
  readonly sample: Sample
  /** When the current out-of-bounds run began (epoch ms), null while in bounds. */
  readonly outSince: number | null
  readonly state: 'pass' | 'pending' | 'fail' | 'inconclusive'
  readonly at: number
}

export const bound = (c: PromCheck): string => (c.max !== undefined ? `max ${c.max}` : `min ${c.min}`)

function outOfBounds(c: PromCheck, v: number): boolean {
  return c.max !== undefined ? v > c.max : v < c.min!
}

/**
 * The check's state after a sample taken at `now`. Out of bounds: pending until it has been so for
 * `forMs`, then fail. In bounds: pass, and the run resets. Inconclusive: no value, so neither a reset
 * nor evidence of one; the run keeps its start (a gap in the data is no sign the value recovered), as
 * a Prometheus rule that fails to evaluate keeps its alert's state.
 */
export function observe(
  prev: CheckState | null,
  check: PromCheck,
  query: string,
  sample: Sample,
  now: number,
) {
  const since = prev?.outSince ?? null
  if (!sample.ok) return state(check, query, sample, since, 'inconclusive', now)
  if (!outOfBounds(check, sample.value)) return state(check, query, sample, null, 'pass', now)
  const start = since ?? now
  return state(check, query, sample, start, now - start >= check.forMs ? 'fail' : 'pending', now)
}

function state(
  check: PromCheck,
  query: string,
  sample: Sample,
  outSince: number | null,
  s: CheckState['state'],
  at: number,
): CheckState {
  return { check, query, sample, outSince, state: s, at }
}

/** Why a check is where it is: the query as sent, the value and the bound, or why there is no value. */
export function reasonOf(c: CheckState): string {
  const head = `prometheus check ${c.check.name}`
  if (!c.sample.ok) return `${head} inconclusive: ${c.sample.reason}; query: ${c.query}`
  const op = c.check.max !== undefined ? '>' : '<'
  const value = c.sample.value
  if (c.state === 'pass') return `${head}: ${c.query} = ${value}, within ${bound(c.check)}`
  const held = c.outSince === null ? 0 : c.at - c.outSince
  const forText = `out of bounds for ${formatDuration(held)} of ${formatDuration(c.check.forMs)}`
  return `${head}: ${c.query} = ${value} ${op} ${bound(c.check)} (${forText})`
}

export type PromResult = 'pass' | 'fail' | 'inconclusive' | 'wait'

/**
 * The verdict on the checks' states: fail if one failed; inconclusive if one has no value; `wait` if
 * one is pending its `for` (it fails or clears within it) or `fresh` is false (no evaluation of the
 * current step came back yet); else pass.
 */
export function verdictOf(
  states: readonly CheckState[],
  fresh: boolean,
): { result: PromResult; reason: string; check?: string } {
  const failed = states.find((s) => s.state === 'fail')
  if (failed) return { result: 'fail', reason: reasonOf(failed), check: failed.check.name }
  const unsure = states.filter((s) => s.state === 'inconclusive')
  if (unsure.length > 0) return { result: 'inconclusive', reason: unsure.map(reasonOf).join('; ') }
  const pending = states.filter((s) => s.state === 'pending')
  if (pending.length > 0) return { result: 'wait', reason: pending.map(reasonOf).join('; ') }
  if (!fresh || states.length === 0)
    return { result: 'wait', reason: 'prometheus checks: waiting for their first evaluation of this step' }
  return { result: 'pass', reason: `prometheus checks pass: ${states.map((s) => s.check.name).join(', ')}` }
}
