/**
 * Per-route shadow bookkeeping that outlives config snapshots: outcome counts, mismatch rates by path
 * pattern, learned noisy fields, a bounded ring of recent diff samples, and the shadow's error-line limiter.
 * Its counts are also veer_shadow_requests_total (metrics.ts reads them when /metrics is scraped).
 */
import { LogLimiter } from '../log.ts'
import type { Difference } from './compare.ts'
import { FieldFilter } from './compare.ts'

const MAX_PATTERNS = 200
const MAX_NOISY = 500

export interface DiffSample {
  readonly time: string
  readonly route: string
  readonly method: string
  readonly path: string
  readonly request: Record<string, string>
  readonly primary: { version: string; status: number; headers: Record<string, string> }
  readonly shadow: { release: string; status: number; headers: Record<string, string> }
  readonly differences: readonly Difference[]
  readonly ignored: readonly string[]
}

export class ShadowStats {
  sent = 0
  dropped = 0
  errors = 0
  compared = 0
  mismatches = 0
  readonly byPath = new Map<string, { compared: number; mismatches: number }>()
  /** Fields seen to differ between two answers of the same version (Diffy's primary vs secondary). */
  readonly noise = new FieldFilter([])
  readonly noiseChecks = { sent: 0, compared: 0 }
  /** The shadow's `error` lines: at most one a second, the next one written tells how many were held. */
  readonly errorLines = new LogLimiter(1000)
  /** Fields seen to differ once between two answers of the same version, not yet called noisy. */
  readonly #noiseOnce = new Map<string, true>()
  #diffs: DiffSample[] = []
  #next = 0

  /**
   * A field that differed between two answers of the same version. It is noise only the second time
   * (one overloaded 503 must not make every later status difference invisible), never for `status` or a
   * whole non-JSON `body`, and the set is bounded (dynamic keys would otherwise grow it without end).
   */
  learnNoise(field: string): void {
    if (field === 'status' || field === 'body' || this.noise.has(field) || this.noise.size >= MAX_NOISY)
      return
    if (this.#noiseOnce.delete(field)) this.noise.add(field)
    else if (this.#noiseOnce.size < MAX_NOISY) this.#noiseOnce.set(field, true)
  }

  countComparison(pattern: string, mismatch: boolean): void {
    this.compared++
    if (mismatch) this.mismatches++
    let p = this.byPath.get(pattern)
    if (p === undefined) {
      if (this.byPath.size >= MAX_PATTERNS) pattern = '(other)'
      p = this.byPath.get(pattern) ?? { compared: 0, mismatches: 0 }
      this.byPath.set(pattern, p)
    }
    p.compared++
    if (mismatch) p.mismatches++
  }

  keepDiff(sample: DiffSample, max: number): void {
    if (max === 0) return
    if (this.#diffs.length < max) this.#diffs.push(sample)
    else {
      if (this.#diffs.length > max) this.#diffs = this.#diffs.slice(-max)
      this.#diffs[this.#next % max] = sample
    }
    this.#next++
  }

  /** Oldest first. */
  diffs(): DiffSample[] {
    const d = this.#diffs
    if (d.length === 0 || this.#next <= d.length) return [...d]
    const at = this.#next % d.length
    return [...d.slice(at), ...d.slice(0, at)]
  }

  /** Raw, mergeable counts (one process's share; see `shadowSummary`). */
  counts(): ShadowCounts {
    return {
      sent: this.sent,
      dropped: this.dropped,
      errors: this.errors,
      compared: this.compared,
      mismatches: this.mismatches,
      byPath: Object.fromEntries([...this.byPath].map(([k, v]) => [k, { ...v }])),
      noisyFields: this.noise.list(),
      noiseChecks: { ...this.noiseChecks },
    }
  }
}

export interface ShadowCounts {
  sent: number
  dropped: number
  errors: number
  compared: number
  mismatches: number
  byPath: Record<string, { compared: number; mismatches: number }>
  noisyFields: string[]
  noiseChecks: { sent: number; compared: number }
}

const rate = (m: number, c: number) => (c === 0 ? 0 : Math.round((m / c) * 1e4) / 1e4)

/** The counts of one or more processes, summed, with mismatch rates. */
export function shadowSummary(parts: readonly ShadowCounts[]): Record<string, unknown> {
  const total: ShadowCounts = {
    sent: 0,
    dropped: 0,
    errors: 0,
    compared: 0,
    mismatches: 0,
    byPath: {},
    noisyFields: [],
    noiseChecks: { sent: 0, compared: 0 },
  }
  const noisy = new Set<string>()
  for (const p of parts) {
    total.sent += p.sent
    total.dropped += p.dropped
    total.errors += p.errors
    total.compared += p.compared
    total.mismatches += p.mismatches
    total.noiseChecks.sent += p.noiseChecks.sent
    total.noiseChecks.compared += p.noiseChecks.compared
    for (const f of p.noisyFields) noisy.add(f)
    for (const [k, v] of Object.entries(p.byPath)) {
      const t = (total.byPath[k] ??= { compared: 0, mismatches: 0 })
      t.compared += v.compared
      t.mismatches += v.mismatches
    }
  }
  return {
    ...total,
    mismatchRate: rate(total.mismatches, total.compared),
    byPath: Object.fromEntries(
      Object.entries(total.byPath).map(([k, v]) => [
        k,
        { ...v, mismatchRate: rate(v.mismatches, v.compared) },
      ]),
    ),
    noisyFields: [...noisy],
  }
}
