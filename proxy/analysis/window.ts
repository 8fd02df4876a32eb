/**
 * Per-version outcomes over a sliding window of short slots (SLOT_MS): request, error, failed-outcome, harm
 * and fallback counts and a log-bucketed latency histogram (4 buckets per doubling, ±9% relative error, from 0.05 ms to ~30 min).
 * Recording is an array increment; quantiles are read off the merged slots when someone asks.
 * Buckets of the same layout merge by addition, so windows of many proxies combine exactly.
 */
import type { VersionReport } from '../../config/wire.ts'

const SUB_BUCKETS = 4
const MIN_MS = 0.05
const BUCKETS = 128
const LOG2_MIN = Math.log2(MIN_MS)

/** Outcome flags of one request, or'ed together for `record` and `mark`. */
export const ERROR = 1
/** The upstream reported a failed business outcome (the route's outcome header said `fail`). */
export const FAILED = 2
/** A canary failure the user saw: no fallback rescued it. */
export const HARMED = 4
/** A canary failure the fallback to stable rescued: the user got stable's answer. */
export const SAVED = 8

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
  index = -1
  count = 0
  errors = 0
  failed = 0
  harmed = 0
  saved = 0
  readonly latency = new Uint32Array(BUCKETS)

  reset(index: number): void {
    this.index = index
    this.count = 0
    this.errors = 0
    this.failed = 0
    this.harmed = 0
    this.saved = 0
    this.latency.fill(0)
  }

  add(flags: number): void {
    if (flags === 0) return
    if ((flags & ERROR) !== 0) this.errors++
    if ((flags & FAILED) !== 0) this.failed++
    if ((flags & HARMED) !== 0) this.harmed++
    if ((flags & SAVED) !== 0) this.saved++
  }
}

/** The outcomes of one slot (or a sum of them); merge by adding (see config/wire.ts VersionReport). */
export interface SecondCounts {
  requests: number
  errors: number
  /** Failed business outcomes (outcome header). */
  failed: number
  /** Canary failures users saw (after fallback). */
  harmed: number
  /** Canary failures the fallback rescued. */
  saved: number
  /** Counts by bucket of `bucketOf(ms)`, trailing zeros cut. */
  latency: number[]
}

export interface WindowSummary {
  requests: number
  errors: number
  errorRate: number
  failed: number
  harmed: number
  saved: number
  p50Ms: number | null
  p95Ms: number | null
  p99Ms: number | null
}

/**
 * Slot length: reports to control go out every slot, so a canary's failures reach the judge within a
 * quarter second of the slot they happened in.
 */
export const SLOT_MS = 250

export class OutcomeWindow {
  readonly seconds: number
  readonly slotMs: number
  readonly #slots: Slot[]

  constructor(seconds = 30, slotMs = SLOT_MS) {
    this.seconds = seconds
    this.slotMs = slotMs
    this.#slots = Array.from({ length: Math.ceil((seconds * 1000) / slotMs) }, () => new Slot())
  }

  /** The slot index of a time on the record clock. */
  slotOf(nowMs: number): number {
    return Math.floor(nowMs / this.slotMs)
  }

  /** `nowMs` is any monotonic millisecond clock (performance.now() in the proxy); `flags` as ERROR | FAILED. */
  record(nowMs: number, latencyMs: number, flags: number): void {
    const slot = this.#slot(nowMs)
    slot.count++
    slot.add(flags)
    slot.latency[bucketOf(latencyMs)]!++
  }

  /** Count flags (HARMED, SAVED) of a request recorded before, without counting it again. */
  mark(nowMs: number, flags: number): void {
    this.#slot(nowMs).add(flags)
  }

  #slot(nowMs: number): Slot {
    const index = Math.floor(nowMs / this.slotMs)
    const slot = this.#slots[index % this.#slots.length]!
    if (slot.index !== index) slot.reset(index)
    return slot
  }

  /**
   * What was recorded in slot `index` (`slotOf(nowMs)`): final once that slot has passed; zeros when
   * nothing was, or when the window has since reused it.
   */
  countsAt(index: number): SecondCounts {
    const slot = index < 0 ? undefined : this.#slots[index % this.#slots.length]!
    if (slot === undefined || slot.index !== index) return emptyCounts()
    let end = BUCKETS
    while (end > 0 && slot.latency[end - 1] === 0) end--
    return {
      requests: slot.count,
      errors: slot.errors,
      failed: slot.failed,
      harmed: slot.harmed,
      saved: slot.saved,
      latency: Array.from(slot.latency.subarray(0, end)),
    }
  }

  /** Everything recorded over the window, as mergeable counts (add them to combine processes). */
  totals(nowMs: number): SecondCounts {
    const current = Math.floor(nowMs / this.slotMs)
    const length = this.#slots.length
    const total = emptyCounts()
    const merged = new Array<number>(BUCKETS).fill(0)
    for (const slot of this.#slots) {
      if (slot.index < 0 || current - slot.index >= length) continue
      total.requests += slot.count
      total.errors += slot.errors
      total.failed += slot.failed
      total.harmed += slot.harmed
      total.saved += slot.saved
      for (let b = 0; b < BUCKETS; b++) merged[b]! += slot.latency[b]!
    }
    let end = BUCKETS
    while (end > 0 && merged[end - 1] === 0) end--
    merged.length = end
    total.latency = merged
    return total
  }

  summary(nowMs: number): WindowSummary {
    return summarize(this.totals(nowMs))
  }
}

export function emptyCounts(): SecondCounts {
  return { requests: 0, errors: 0, failed: 0, harmed: 0, saved: 0, latency: [] }
}

/** Counts as reported over the wire, where the newer fields may be absent (older proxies). */
export type PartialCounts = VersionReport

export function addInto(into: SecondCounts, b: PartialCounts): SecondCounts {
  into.requests += b.requests
  into.errors += b.errors
  into.failed += b.failed ?? 0
  into.harmed += b.harmed ?? 0
  into.saved += b.saved ?? 0
  const latency = into.latency
  for (let i = 0; i < b.latency.length; i++) latency[i] = (latency[i] ?? 0) + b.latency[i]!
  return into
}

/** The sum of two sets of counts (of the same bucket layout). */
export function addCounts(a: PartialCounts, b: PartialCounts): SecondCounts {
  return addInto(addInto(emptyCounts(), a), b)
}

export function summarize(c: SecondCounts): WindowSummary {
  return {
    requests: c.requests,
    errors: c.errors,
    errorRate: c.requests === 0 ? 0 : c.errors / c.requests,
    failed: c.failed,
    harmed: c.harmed,
    saved: c.saved,
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
