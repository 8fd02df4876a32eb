// Shared helpers for veer's k6 scripts: environment parsing, step clocks, threshold-backed
// submetrics and a compact end-of-test summary. Runs inside k6 (goja), not Node: no Node APIs here.

/** An environment variable, or the fallback when it is unset or empty. */
export function env(name: string, fallback: string): string {
  const v = __ENV[name]
  return v === undefined || v === '' ? fallback : v
}

export function num(name: string, fallback: number): number {
  const text = env(name, '')
  if (text === '') return fallback
  const n = Number(text)
  if (!Number.isFinite(n)) throw new Error(`${name} must be a number (got ${JSON.stringify(text)})`)
  return n
}

/** A comma-separated list of numbers, e.g. STEPS=500,1000,2000. */
export function numbers(name: string, fallback: readonly number[]): number[] {
  const text = env(name, '')
  if (text === '') return [...fallback]
  const out = text.split(',').map((part) => Number(part.trim()))
  if (out.some((n) => !Number.isFinite(n))) throw new Error(`${name} must be numbers separated by commas`)
  return out
}

/** An http(s) URL without a trailing slash; '' when optional and unset. */
export function baseUrl(name: string, fallback: string): string {
  const v = env(name, fallback)
  if (v === '') return ''
  if (!/^https?:\/\/[^/]+/.test(v))
    throw new Error(`${name} must be an http(s) URL (got ${JSON.stringify(v)})`)
  return v.replace(/\/+$/, '')
}

/** k6 durations as seconds: "90s", "2m", "1m30s", "500ms", "1h". */
export function seconds(duration: string): number {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g
  let total = 0
  let matched = ''
  for (let m = re.exec(duration); m !== null; m = re.exec(duration)) {
    const unit = m[2] === 'ms' ? 0.001 : m[2] === 's' ? 1 : m[2] === 'm' ? 60 : 3600
    total += Number(m[1]) * unit
    matched += m[0]
  }
  if (matched !== duration || duration === '')
    throw new Error(`not a k6 duration: ${JSON.stringify(duration)}`)
  return total
}

export const duration = (s: number): string => `${Math.round(s * 1000)}ms`

/** A response header, whatever case k6 gives it (it canonicalizes: X-Veer-Version). */
export function header(headers: Record<string, string>, name: string): string | undefined {
  const lower = name.toLowerCase()
  for (const key of Object.keys(headers)) if (key.toLowerCase() === lower) return headers[key]
  return undefined
}

/**
 * A submetric appears in the end-of-test data only when a threshold names it. These always hold:
 * they make the per-tag figures visible without turning the script into a pass/fail gate.
 */
export function visible(metric: string, tags: Record<string, string>, kind: 'trend' | 'counter' | 'rate') {
  const selector = Object.entries(tags)
    .map(([k, v]) => `${k}:${v}`)
    .join(',')
  const always = kind === 'trend' ? 'max>=0' : kind === 'counter' ? 'count>=0' : 'rate>=0'
  return { [`${metric}{${selector}}`]: [always] }
}

// ---------- end-of-test summary ----------

export interface MetricData {
  type: 'counter' | 'gauge' | 'rate' | 'trend'
  contains?: string
  values: Record<string, number>
  thresholds?: Record<string, { ok: boolean }>
}

export interface SummaryData {
  metrics: Record<string, MetricData>
  state?: { testRunDurationMs?: number }
  setup_data?: unknown
}

/** A value of a (sub)metric, or NaN when the metric is not there. */
export function value(data: SummaryData, metric: string, key: string): number {
  const v = data.metrics[metric]?.values[key]
  return typeof v === 'number' ? v : Number.NaN
}

export const fmt = {
  ms: (x: number) => (Number.isFinite(x) ? `${x.toFixed(2)} ms` : '—'),
  int: (x: number) => (Number.isFinite(x) ? String(Math.round(x)) : '—'),
  pct: (x: number) => (Number.isFinite(x) ? `${(x * 100).toFixed(2)}%` : '—'),
  signedMs: (x: number) => (Number.isFinite(x) ? `${x >= 0 ? '+' : '−'}${Math.abs(x).toFixed(2)} ms` : '—'),
}

/** A plain text table with right-aligned columns after the first. */
export function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: readonly string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n')
}

/** Thresholds that failed (the real ones; the always-true visibility ones never do). */
export function failedThresholds(data: SummaryData): string[] {
  const out: string[] = []
  for (const [name, m] of Object.entries(data.metrics)) {
    for (const [expr, t] of Object.entries(m.thresholds ?? {})) if (!t.ok) out.push(`${name}: ${expr}`)
  }
  return out
}

/** handleSummary's answer: the text on stdout, and the raw data as JSON when SUMMARY_JSON names a file. */
export function summaryOutput(text: string, data: SummaryData): Record<string, string> {
  const failed = failedThresholds(data)
  const body = failed.length === 0 ? text : `${text}\n\nthresholds crossed:\n  ${failed.join('\n  ')}`
  const out: Record<string, string> = { stdout: `\n${body}\n\n` }
  const file = env('SUMMARY_JSON', '')
  if (file !== '') out[file] = JSON.stringify(data, null, 2)
  return out
}
