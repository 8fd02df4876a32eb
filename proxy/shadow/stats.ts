/**
 * Per-route shadow bookkeeping that outlives config snapshots: outcome counts, mismatch rates by path
 * pattern, learned noisy fields, and a bounded ring of recent diff samples.
 */
import type { Difference } from './compare.ts'
import { FieldFilter } from './compare.ts'

const MAX_PATTERNS = 200

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
  #diffs: DiffSample[] = []
  #next = 0

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

  summary(): Record<string, unknown> {
    const rate = (m: number, c: number) => (c === 0 ? 0 : Math.round((m / c) * 1e4) / 1e4)
    return {
      sent: this.sent,
      dropped: this.dropped,
      errors: this.errors,
      compared: this.compared,
      mismatches: this.mismatches,
      mismatchRate: rate(this.mismatches, this.compared),
      byPath: Object.fromEntries(
        [...this.byPath].map(([k, v]) => [k, { ...v, mismatchRate: rate(v.mismatches, v.compared) }]),
      ),
      noisyFields: this.noise.list(),
      noiseChecks: { ...this.noiseChecks },
    }
  }
}
