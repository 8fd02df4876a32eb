/**
 * Per-version outcomes over a sliding window of one-second slots: request and error counts and a
 * log-bucketed latency histogram (4 buckets per doubling, ±9% relative error, from 0.05 ms to ~30 min).
 * Recording is an array increment; quantiles are read off the merged slots when someone asks.
 * Buckets of the same layout merge by addition, so windows of many proxies combine exactly.
 */
const SUB_BUCKETS = 4
const MIN_MS = 0.05
const BUCKETS = 128
const LOG2_MIN = Math.log2(MIN_MS)

export function bucketOf(ms: number): number {
  if (ms <= MIN_MS) return 0
  const b = Math.floor((Math.log2(ms) - LOG2_MIN) * SUB_BUCKETS) + 1
  return b >= BUCKETS ? BUCKETS - 1 : b
}

/** The upper bound in ms of bucket `b`. */
export function bucketUpperMs(b: number): number {
  return MIN_MS * 2 ** (b / SUB_BUCKETS)
}

class Slot {
  second = -1
  count = 0
  errors = 0
  readonly latency = new Uint32Array(BUCKETS)

  reset(second: number): void {
    this.second = second
    this.count = 0
    this.errors = 0
    this.latency.fill(0)
  }
}

/** The outcomes of one second; merge by adding (see config/wire.ts VersionReport). */
export interface SecondCounts {
  requests: number
  errors: number
  /** Counts by bucket of `bucketOf(ms)`, trailing zeros cut. */
  latency: number[]
}

export interface WindowSummary {
  requests: number
  errors: number
  errorRate: number
  p50Ms: number | null
  p95Ms: number | null
  p99Ms: number | null
}

export class OutcomeWindow {
  readonly seconds: number
  readonly #slots: Slot[]

  constructor(seconds = 30) {
    this.seconds = seconds
    this.#slots = Array.from({ length: seconds }, () => new Slot())
  }

  /** `nowMs` is any monotonic millisecond clock (performance.now() in the proxy). */
  record(nowMs: number, latencyMs: number, isError: boolean): void {
    const second = Math.floor(nowMs / 1000)
    const slot = this.#slots[second % this.seconds]!
    if (slot.second !== second) slot.reset(second)
    slot.count++
    if (isError) slot.errors++
    slot.latency[bucketOf(latencyMs)]!++
  }

  /**
   * What was recorded in `second` (`Math.floor(nowMs / 1000)` of the record clock): final once that
   * second has passed; zeros when nothing was, or when the window has since reused its slot.
   */
  countsAt(second: number): SecondCounts {
    const slot = second < 0 ? undefined : this.#slots[second % this.seconds]!
    if (slot === undefined || slot.second !== second) return { requests: 0, errors: 0, latency: [] }
    let end = BUCKETS
    while (end > 0 && slot.latency[end - 1] === 0) end--
    return { requests: slot.count, errors: slot.errors, latency: Array.from(slot.latency.subarray(0, end)) }
  }

  /** Everything recorded over the window, as mergeable counts (add them to combine processes). */
  totals(nowMs: number): SecondCounts {
    const current = Math.floor(nowMs / 1000)
    const merged = new Array<number>(BUCKETS).fill(0)
    let requests = 0
    let errors = 0
    for (const slot of this.#slots) {
      if (slot.second < 0 || current - slot.second >= this.seconds) continue
      requests += slot.count
      errors += slot.errors
      for (let b = 0; b < BUCKETS; b++) merged[b]! += slot.latency[b]!
    }
    let end = BUCKETS
    while (end > 0 && merged[end - 1] === 0) end--
    merged.length = end
    return { requests, errors, latency: merged }
  }

  summary(nowMs: number): WindowSummary {
    return summarize(this.totals(nowMs))
  }
}

/** The sum of two sets of counts (of the same bucket layout). */
export function addCounts(a: SecondCounts, b: SecondCounts): SecondCounts {
  const latency = a.latency.length >= b.latency.length ? [...a.latency] : [...b.latency]
  const other = a.latency.length >= b.latency.length ? b.latency : a.latency
  for (let i = 0; i < other.length; i++) latency[i]! += other[i]!
  return { requests: a.requests + b.requests, errors: a.errors + b.errors, latency }
}

export function summarize(c: SecondCounts): WindowSummary {
  return {
    requests: c.requests,
    errors: c.errors,
    errorRate: c.requests === 0 ? 0 : c.errors / c.requests,
    p50Ms: quantile(c.latency, c.requests, 0.5),
    p95Ms: quantile(c.latency, c.requests, 0.95),
    p99Ms: quantile(c.latency, c.requests, 0.99),
  }
}

function quantile(buckets: readonly number[], total: number, q: number): number | null {
  if (total === 0) return null
  const rank = Math.ceil(q * total)
  let seen = 0
  for (let b = 0; b < buckets.length; b++) {
    seen += buckets[b]!
    if (seen >= rank) return Math.round(bucketUpperMs(b) * 1000) / 1000
  }
  return Math.round(bucketUpperMs(Math.max(0, buckets.length - 1)) * 1000) / 1000
}
