/**
 * The statistics of the canary judge, pure and allocation-free on the hot path:
 *
 * - `RateRatioTest`: a mixture sequential probability ratio test (mSPRT) for "the canary's event rate
 *   (errors, business failures) is higher than stable's", on per-interval batched counts.
 * - `quantileInterval`: an anytime-valid confidence sequence for a quantile read off a latency
 *   histogram in the bucket layout of ./window.ts.
 *
 * Both are anytime-valid: the judge looks every second, for as long as a rollout runs, and the chance
 * that a look ever shows a false regression stays below the alpha it was given (Ville's inequality for
 * nonnegative supermartingales: P(∃t: M_t ≥ 1/α) ≤ α when M_0 = 1). Looking more often costs nothing.
 */
import { bucketOf, bucketUpperMs } from './window.ts'

/** Rate ratios θ = rate_canary / rate_stable the mSPRT mixes over, with equal prior weights. */
export const RATIO_GRID: readonly number[] = [1.25, 1.5, 2, 3, 5, 10, 25, 100]

/** The evidence (log of the mixture likelihood ratio) at or above which a test at level `alpha` rejects. */
export function evidenceThreshold(alpha: number): number {
  return Math.log(1 / alpha)
}

/**
 * Sequential test of H0: rate_canary ≤ rate_stable against "the canary's rate is θ times stable's" for θ
 * on a grid, following Lindon, Sanden & Shirikian, "Rapid Regression Detection in Software Deployments
 * through Sequential Testing" (KDD 2022): events are Poisson counts with exposures n (requests), so
 * given the batch's total e = e_c + e_s events the canary's share is Binomial(e, π) with
 * π_θ = θ·n_c / (θ·n_c + n_s), and π0 = n_c / (n_c + n_s) under equal rates. Each batch multiplies
 * LR_θ by (π_θ/π0)^e_c · ((1−π_θ)/(1−π0))^e_s, and the statistic is the mixture mean_θ LR_θ (kept as
 * logs, summed with log-sum-exp).
 *
 * Validity. Under H0 with equal rates each factor has conditional expectation exactly 1 given the past,
 * n_c, n_s and e (a binomial likelihood ratio), and under rate_c < rate_s at most 1 (the factor rises in
 * e_c and e_c is then stochastically smaller), so every LR_θ and their mean are nonnegative
 * supermartingales starting at 1, and Ville's inequality bounds P(ever evidence ≥ ln(1/α)) by α however
 * often one looks and however the batches' request counts (the canary weight) change along the way.
 * Requests are Bernoulli trials rather than Poisson exposures: given n_c, n_s and e, e_c is then
 * hypergeometric under equal rates (Fisher's noncentral hypergeometric, stochastically smaller, when the
 * canary is better), which is smaller than Binomial(e, π0) in the convex order (Hoeffding 1963, Thm 4);
 * the factor is convex in e_c, so its expectation is ≤ 1 and the supermartingale property holds. What
 * the test does assume is that outcomes are independent across requests given the traffic split.
 *
 * Batches where one side had no requests carry no comparison and are skipped; batches without events
 * leave every LR_θ unchanged. `add` is O(grid) with no allocation.
 */
export class RateRatioTest {
  readonly grid: readonly number[]
  readonly #thetas: Float64Array
  readonly #logThetas: Float64Array
  readonly #logLr: Float64Array
  #batches = 0
  #peak = 0

  constructor(grid: readonly number[] = RATIO_GRID) {
    if (grid.length === 0 || grid.some((t) => !(t > 1) || !Number.isFinite(t))) {
      throw new RangeError('rate ratio grid: every θ must be a finite number above 1')
    }
    this.grid = [...grid]
    this.#thetas = Float64Array.from(grid)
    this.#logThetas = Float64Array.from(grid, Math.log)
    this.#logLr = new Float64Array(grid.length)
  }

  /** One batch: requests and events of the canary and of stable over the same interval. */
  add(canaryRequests: number, canaryEvents: number, stableRequests: number, stableEvents: number): void {
    if (!(canaryRequests > 0) || !(stableRequests > 0)) return
    const events = canaryEvents + stableEvents
    if (!(events > 0)) return
    this.#batches++
    const total = canaryRequests + stableRequests
    const lr = this.#logLr
    // e_c·ln(π_θ/π0) + e_s·ln((1−π_θ)/(1−π0)) = e_c·ln θ + e·ln(N / (θ·n_c + n_s))
    for (let i = 0; i < lr.length; i++) {
      lr[i]! +=
        canaryEvents * this.#logThetas[i]! +
        events * Math.log(total / (this.#thetas[i]! * canaryRequests + stableRequests))
    }
    const e = this.evidence
    if (e > this.#peak) this.#peak = e
  }

  /** ln(mean_θ LR_θ): 0 at the start; the test at level α rejects while it is ≥ ln(1/α). */
  get evidence(): number {
    const lr = this.#logLr
    let max = Number.NEGATIVE_INFINITY
    for (let i = 0; i < lr.length; i++) if (lr[i]! > max) max = lr[i]!
    let sum = 0
    for (let i = 0; i < lr.length; i++) sum += Math.exp(lr[i]! - max)
    return max + Math.log(sum / lr.length)
  }

  /** The highest evidence seen so far (never below 0, the start). */
  get peak(): number {
    return this.#peak
  }

  /** How many batches carried information (both sides had requests, some side had events). */
  get batches(): number {
    return this.#batches
  }

  reset(): void {
    this.#logLr.fill(0)
    this.#batches = 0
    this.#peak = 0
  }
}

/**
 * ln Γ(x) for x > 0: the recurrence Γ(x) = Γ(x+1)/x up to x ≥ 15, then Stirling's series to x⁻⁹
 * (truncation error below 1e-14 there). Good to ~1e-15 relative over the range the boundary uses.
 */
export function logGamma(x: number): number {
  let shift = 0
  while (x < 15) {
    shift += Math.log(x)
    x += 1
  }
  const inv = 1 / x
  const inv2 = inv * inv
  const series = inv * (1 / 12 - inv2 * (1 / 360 - inv2 * (1 / 1260 - inv2 * (1 / 1680 - inv2 / 1188))))
  return (x - 0.5) * Math.log(x) - x + 0.5 * Math.log(2 * Math.PI) + series - shift
}

/**
 * The sample size the quantile boundary is tuned for: it is tightest around here and valid at every n.
 * A canary at 5% of 200 req/s collects ~2,000 requests in 3–4 minutes.
 */
export const QUANTILE_TUNED_N = 2000

/** Ranks of the order statistics bounding the q-quantile after n samples; see `quantileRanks`. */
export interface QuantileRanks {
  /** The true quantile is ≥ the sample of this rank (1-based); 0 means no lower bound yet (use 0). */
  readonly lower: number
  /** The true quantile is ≤ the sample of this rank (1-based); n + 1 means no upper bound yet (+∞). */
  readonly upper: number
}

/**
 * Uniform boundary for the count C_n = #{i ≤ n: U_i ≤ q} of i.i.d. Bernoulli(q) trials: the
 * beta-binomial mixture martingale M_n(k) = B(a + k, b + n − k) / (B(a, b) · q^k (1 − q)^(n − k)) with
 * the prior Beta(a, b) = Beta(q·m, (1 − q)·m) centred on q (Robbins 1970; Howard, Ramdas, McAuliffe &
 * Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021, §3,
 * the beta-binomial case, as in their confseq library), m = t/(2 ln(1/α) + ln(1 + 2 ln(1/α))) − 1 being
 * their normal-mixture tuning ρ for intrinsic time q(1−q)·t carried over (m + 1 = ρ / q(1−q)).
 * ln M_n is convex in k, so {k: M_n(k) < 1/α} is an interval [kLo, kHi], and by Ville's inequality
 * P(∃n: C_n ∉ [kLo(n), kHi(n)]) ≤ α. Unlike a sub-Gaussian boundary it uses the Bernoulli variance
 * q(1−q), which matters for tail quantiles (q = 0.99 has 1/25 of the variance proxy 1/4).
 *
 * Quantiles (Howard & Ramdas, "Sequential estimation of quantiles with applications to A/B-testing and
 * best-arm identification", Bernoulli 2022, Thm 1 with this boundary): let Q be the true q-quantile of
 * i.i.d. X_i with CDF F, and couple X_i = F⁻¹(U_i). Then #{X_i < Q} ≤ C_n ≤ #{X_i ≤ Q} for every n, so on
 * the event above the sample of rank kHi + 1 is ≥ Q and the sample of rank kLo is ≤ Q, for all n at once.
 * That holds for any F, atoms (ties, histogram buckets) included. In the q ± u_n notation,
 * kLo = ⌈(q − u_n)·n⌉ and kHi + 1 = ⌈(q + u_n)·n⌉ with u_n the boundary divided by n.
 */
export function quantileRanks(n: number, q: number, alpha: number, tunedN = QUANTILE_TUNED_N): QuantileRanks {
  if (!(q > 0 && q < 1)) throw new RangeError(`quantile must be in (0, 1), got ${q}`)
  if (!(alpha > 0 && alpha < 1)) throw new RangeError(`alpha must be in (0, 1), got ${alpha}`)
  n = Math.floor(n)
  if (!(n > 0)) return { lower: 0, upper: 1 }
  const logInv = Math.log(1 / alpha)
  const m = Math.max(1, tunedN / (2 * logInv + Math.log(1 + 2 * logInv)) - 1)
  const a = q * m
  const b = (1 - q) * m
  const logPrior = logGamma(a) + logGamma(b) - logGamma(a + b)
  const logTotal = logGamma(a + b + n)
  const logQ = Math.log(q)
  const log1mQ = Math.log1p(-q)
  const logM = (k: number) =>
    logGamma(a + k) + logGamma(b + n - k) - logTotal - logPrior - k * logQ - (n - k) * log1mQ
  const k0 = Math.min(n, Math.max(0, Math.round(q * n)))
  // The mixture is ≤ 1 near k = qn (q is then the best fit); if rounding ever says otherwise, no bounds.
  if (!(logM(k0) < logInv)) return { lower: 0, upper: n + 1 }
  // largest k with M < 1/α: invariant logM(lo) < logInv, hi is past it (n + 1 counts as past)
  let lo = k0
  let hi = n + 1
  while (hi - lo > 1) {
    const mid = (lo + hi) >>> 1
    if (logM(mid) < logInv) lo = mid
    else hi = mid
  }
  const kHi = lo
  // smallest k with M < 1/α
  lo = -1
  hi = k0
  while (hi - lo > 1) {
    const mid = (lo + hi) >>> 1
    if (logM(mid) < logInv) hi = mid
    else lo = mid
  }
  return { lower: hi, upper: kHi + 1 }
}

/** The last bucket of ./window.ts holds everything above its lower edge: its upper edge is +∞. */
const OVERFLOW_BUCKET = bucketOf(Number.POSITIVE_INFINITY)

/** Lower edge in ms of bucket `b` of ./window.ts (bucket b holds [upper(b − 1), upper(b))). */
export function bucketLowerMs(b: number): number {
  return b <= 0 ? 0 : bucketUpperMs(b - 1)
}

export interface QuantileInterval {
  /** the number of samples (the histogram's total) */
  readonly n: number
  /** ms; 0 while there is no lower bound yet */
  readonly lower: number
  /** ms; +Infinity while there is no upper bound yet */
  readonly upper: number
  /** the ranks the bounds were read at (see `quantileRanks`) */
  readonly lowerRank: number
  readonly upperRank: number
}

/**
 * Anytime-valid confidence sequence for the q-quantile of the latency distribution behind a histogram
 * (bucket layout of ./window.ts): with probability ≥ 1 − alpha the true quantile lies in [lower, upper]
 * at every n at once, provided the samples are i.i.d. Each side alone also fails with probability
 * ≤ alpha (the boundary is two-sided), so a caller that only uses one side of it may pass that side's
 * whole share. The lower bound is the lower edge of the bucket holding rank ⌈(q − u)n⌉, the upper bound
 * the upper edge of the bucket holding rank ⌈(q + u)n⌉ (see `quantileRanks`). `total` is the sum of
 * `buckets`.
 */
export function quantileInterval(
  buckets: ArrayLike<number>,
  total: number,
  q: number,
  alpha: number,
  tunedN = QUANTILE_TUNED_N,
): QuantileInterval {
  const ranks = quantileRanks(total, q, alpha, tunedN)
  let lower = 0
  let upper = Number.POSITIVE_INFINITY
  const wantLower = ranks.lower >= 1
  const wantUpper = ranks.upper <= total
  let seen = 0
  let lowerDone = !wantLower
  for (let b = 0; b < buckets.length; b++) {
    seen += buckets[b]!
    if (!lowerDone && seen >= ranks.lower) {
      lower = bucketLowerMs(b)
      lowerDone = true
    }
    if (seen >= ranks.upper) {
      if (wantUpper && b < OVERFLOW_BUCKET) upper = bucketUpperMs(b)
      break
    }
  }
  return { n: total, lower, upper, lowerRank: ranks.lower, upperRank: ranks.upper }
}
