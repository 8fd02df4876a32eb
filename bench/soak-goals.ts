// The pure part of reading a memory soak (bench/soak.ts): a least-squares slope with its standard error,
// the samples of the last minute of load, and issue 18's three memory goals with verdicts that are
// refused when the figures are too noisy (bench/paired.ts `verdict`: a spread that crosses the goal).
//   - veer's anonymous memory (RssAnon) ≤ 60 MiB after 5 min: every sample of the last minute of load
//   - veer's RSS ≤ the bare node:http server's + 40 MiB: veer's last-minute samples minus the baseline's,
//     paired sample by sample (same offset into the load) and round by round
//   - RSS slope over the last 3 minutes ≤ 0.2 MiB/min: the fitted slope ± 2 standard errors
import { type Goal, type Spread, spread, verdict } from './paired.ts'
import { median } from './stats.ts'

export interface MemSample {
  /** seconds since the load started */
  t: number
  rssMiB: number
  anonMiB: number
}

export interface Fit {
  /** MiB per minute; NaN with fewer than 3 points */
  slope: number
  /** standard error of the slope, MiB per minute (NaN with fewer than 3 points) */
  se: number
  n: number
}

/** Least-squares slope per minute of `value` over `points`, with its standard error. */
export function fitPerMinute<S extends { t: number }>(points: readonly S[], value: (s: S) => number): Fit {
  const pts = points.filter((p) => Number.isFinite(value(p)))
  const n = pts.length
  if (n < 3) return { slope: Number.NaN, se: Number.NaN, n }
  const mx = pts.reduce((a, p) => a + p.t, 0) / n
  const my = pts.reduce((a, p) => a + value(p), 0) / n
  let sxy = 0
  let sxx = 0
  for (const p of pts) {
    sxy += (p.t - mx) * (value(p) - my)
    sxx += (p.t - mx) ** 2
  }
  if (sxx === 0) return { slope: Number.NaN, se: Number.NaN, n }
  const b = sxy / sxx
  let rss = 0
  for (const p of pts) rss += (value(p) - my - b * (p.t - mx)) ** 2
  return { slope: 60 * b, se: 60 * Math.sqrt(rss / (n - 2) / sxx), n }
}

/** The samples taken in the last `windowSeconds` of a load `seconds` long: t in (seconds − window, seconds]. */
export function lastWindow<S extends { t: number }>(
  samples: readonly S[],
  seconds: number,
  windowSeconds = 60,
): S[] {
  return samples.filter((s) => s.t > seconds - windowSeconds && s.t <= seconds)
}

/** Where the slope is fitted: the last 3 minutes of load, never earlier than the warm-up sample. */
export function slopeWindow(seconds: number, warmupSeconds: number): [number, number] {
  return [Math.max(warmupSeconds, seconds - 180), seconds]
}

export const ANON_GOAL: Goal = { op: '≤', value: 60 }
export const OVER_BASELINE_GOAL: Goal = { op: '≤', value: 40 }
export const SLOPE_GOAL: Goal = { op: '≤', value: 0.2 }

/** One subject's samples during one round's load (t > 0). */
export interface SoakRound {
  round: number
  samples: readonly MemSample[]
}

export interface GoalCheck {
  goal: string
  figure: Spread
  unit: string
  result: string
  how: string
}

/** ≤ 60 MiB of anonymous memory: every last-minute sample of every round must be within it. */
export function anonGoal(rounds: readonly SoakRound[], seconds: number): GoalCheck {
  const values = rounds.flatMap((r) => lastWindow(r.samples, seconds).map((s) => s.anonMiB))
  const figure = spread(values)
  return {
    goal: 'anonymous memory (RssAnon) ≤ 60 MiB after 5 min',
    figure,
    unit: 'MiB',
    result: verdict(figure, ANON_GOAL),
    how: `RssAnon of the ${figure.n} samples in the last minute of load`,
  }
}

/** RSS (or `field`) − the baseline's, last-minute samples paired by their order within the same round. */
export function overBaseline(
  subject: readonly SoakRound[],
  baseline: readonly SoakRound[],
  seconds: number,
  field: 'rssMiB' | 'anonMiB' = 'rssMiB',
): number[] {
  const out: number[] = []
  for (const r of subject) {
    const b = baseline.find((x) => x.round === r.round)
    if (b === undefined) continue
    const mine = lastWindow(r.samples, seconds).sort((x, y) => x.t - y.t)
    const theirs = lastWindow(b.samples, seconds).sort((x, y) => x.t - y.t)
    const n = Math.min(mine.length, theirs.length)
    // the last n of each, so both end at the end of the load
    for (let i = 0; i < n; i++) {
      const d = mine[mine.length - n + i]![field] - theirs[theirs.length - n + i]![field]
      if (Number.isFinite(d)) out.push(d)
    }
  }
  return out
}

export function overBaselineGoal(
  subject: readonly SoakRound[],
  baseline: readonly SoakRound[],
  seconds: number,
): GoalCheck {
  const figure = spread(overBaseline(subject, baseline, seconds))
  return {
    goal: 'RSS ≤ a bare node:http server’s + 40 MiB',
    figure,
    unit: 'MiB over node-http',
    result: verdict(figure, OVER_BASELINE_GOAL),
    how: `RSS − node-http's RSS, ${figure.n} last-minute samples paired by time into the same round's load`,
  }
}

/**
 * Not a goal: anonymous memory over the same bare server run with veer's memory defaults (node-http-tuned),
 * what veer itself adds (its modules, code and per-connection state) to what node:http costs anyway.
 */
export function ownAnon(
  subject: readonly SoakRound[],
  tuned: readonly SoakRound[],
  seconds: number,
): GoalCheck {
  const figure = spread(overBaseline(subject, tuned, seconds, 'anonMiB'))
  return {
    goal: 'anonymous memory over node-http-tuned (information)',
    figure,
    unit: 'MiB',
    result: 'information',
    how: `RssAnon − node-http-tuned's (the bare server with veer's memory defaults), ${figure.n} last-minute samples paired by time`,
  }
}

/**
 * RSS slope over the last 3 minutes ≤ 0.2 MiB/min. The spread is the fitted slope's ±2 standard errors
 * (the widest over rounds), so a sawtooth that a line fits badly gives no verdict rather than a lucky one.
 */
export function slopeGoal(rounds: readonly SoakRound[], seconds: number, warmupSeconds: number): GoalCheck {
  const [from, to] = slopeWindow(seconds, warmupSeconds)
  const fits = rounds.map((r) =>
    fitPerMinute(
      r.samples.filter((s) => s.t >= from && s.t <= to),
      (s) => s.rssMiB,
    ),
  )
  const ok = fits.filter((f) => Number.isFinite(f.slope) && Number.isFinite(f.se))
  const figure: Spread =
    ok.length === 0
      ? spread([])
      : {
          median: median(ok.map((f) => f.slope)),
          min: Math.min(...ok.map((f) => f.slope - 2 * f.se)),
          max: Math.max(...ok.map((f) => f.slope + 2 * f.se)),
          n: ok.reduce((a, f) => a + f.n, 0),
        }
  return {
    goal: 'RSS slope over the last 3 minutes ≤ 0.2 MiB/min',
    figure,
    unit: 'MiB/min',
    result: verdict(figure, SLOPE_GOAL),
    how: `least squares over t = ${from}–${to} s (${figure.n} samples); range = slope ± 2 standard errors`,
  }
}
