// The pure parts of reading a benchmark: the order subjects run in each round, ratios paired within a
// round, their median and spread, and a verdict that is refused when the spread crosses the goal.
// A ratio of two medians mixes rounds the machine treated differently; a ratio taken inside one round
// (both subjects measured minutes apart, under the same load) cancels much of that drift.
import { median } from './stats.ts'

/**
 * The subjects in the order round `round` (1-based) measures them: forward in odd rounds, reversed in
 * even ones, so no subject always runs first (or right after the same neighbour) as the machine warms up.
 */
export function roundOrder<S>(subjects: readonly S[], round: number): S[] {
  return round % 2 === 1 ? [...subjects] : [...subjects].reverse()
}

/** Median and min–max of some figures; NaN everywhere (n 0) when there are none. */
export interface Spread {
  median: number
  min: number
  max: number
  n: number
}

export function spread(values: readonly number[]): Spread {
  const v = values.filter(Number.isFinite)
  if (v.length === 0) return { median: Number.NaN, min: Number.NaN, max: Number.NaN, n: 0 }
  return { median: median(v), min: Math.min(...v), max: Math.max(...v), n: v.length }
}

/**
 * `f(a) ÷ f(b)` (or `f(a) − f(b)` with `difference`) for every round both measured, round by round;
 * a round where either figure is not a positive finite number (a ratio) or not finite (a difference)
 * is left out.
 */
export function paired<R extends { round: number }>(
  a: readonly R[],
  b: readonly R[],
  f: (r: R) => number,
  how: 'ratio' | 'difference' = 'ratio',
): number[] {
  const out: number[] = []
  for (const ra of a) {
    const rb = b.find((r) => r.round === ra.round)
    if (rb === undefined) continue
    const x = f(ra)
    const y = f(rb)
    if (how === 'difference') {
      if (Number.isFinite(x) && Number.isFinite(y)) out.push(x - y)
    } else if (Number.isFinite(x) && Number.isFinite(y) && x > 0 && y > 0) {
      out.push(x / y)
    }
  }
  return out
}

/**
 * `(f(a) − f(aBase)) ÷ (f(b) − f(bBase))` for every round all four measured, round by round: what a
 * feature adds to one subject against what a yardstick adds to another (e.g. veer's shadow over plain
 * veer, against a second exchange over the minimal proxy). A round where a figure is not finite or the
 * yardstick's excess is not positive (noise swallowed it: the ratio would mean nothing) is left out.
 */
export function pairedExcess<R extends { round: number }>(
  a: readonly R[],
  aBase: readonly R[],
  b: readonly R[],
  bBase: readonly R[],
  f: (r: R) => number,
): number[] {
  const out: number[] = []
  for (const ra of a) {
    const at = (rs: readonly R[]) => rs.find((r) => r.round === ra.round)
    const [ra0, rb, rb0] = [at(aBase), at(b), at(bBase)]
    if (ra0 === undefined || rb === undefined || rb0 === undefined) continue
    const num = f(ra) - f(ra0)
    const den = f(rb) - f(rb0)
    if (Number.isFinite(num) && Number.isFinite(den) && den > 0) out.push(num / den)
  }
  return out
}

export interface Goal {
  /** the figure must be at most (`≤`) or at least (`≥`) `value` */
  op: '≤' | '≥'
  value: number
}

/** What a published run uses at least (issue 18): shorter runs say their figures are rough. */
export const PUBLISHED = { rounds: 5, warmupSeconds: 8, phaseSeconds: 6 } as const

/** Whether a run's settings reach a published run's (and it is no --quick smoke run). */
export function publishable(
  quick: boolean,
  rounds: number,
  warmupSeconds: number,
  phaseSeconds: number,
): boolean {
  return (
    !quick &&
    rounds >= PUBLISHED.rounds &&
    warmupSeconds >= PUBLISHED.warmupSeconds &&
    phaseSeconds >= PUBLISHED.phaseSeconds
  )
}

/** A verdict needs this many paired rounds; fewer give no spread worth the name. */
export const MIN_VERDICT_ROUNDS = 3

/**
 * "meets goal" only when every paired round meets it, "misses goal" only when none does; when the
 * spread crosses the goal the run cannot tell, and says so instead of reporting the median's side.
 */
export function verdict(s: Spread, goal: Goal, minRounds = MIN_VERDICT_ROUNDS): string {
  if (s.n === 0) return 'not measured'
  if (s.n < minRounds)
    return `undecided (${s.n} paired round${s.n === 1 ? '' : 's'}; a verdict needs ${minRounds})`
  const meets = (x: number) => (goal.op === '≤' ? x <= goal.value : x >= goal.value)
  const best = goal.op === '≤' ? s.min : s.max
  const worst = goal.op === '≤' ? s.max : s.min
  if (meets(worst)) return 'meets goal'
  if (!meets(best)) return 'misses goal'
  return 'undecided (spread crosses the goal)'
}
