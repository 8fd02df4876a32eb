/**
 * Weighted split without randomness. Each pick advances a Weyl sequence x_n = n·φ·2^32 mod 2^32 and
 * sends the request to the canary when x_n falls under the weight's threshold. The golden-ratio sequence
 * is equidistributed with discrepancy O(log n / n), so over 5,000 requests the share is within a few
 * hundredths of a point of the weight (random picks would stray ±0.6 point, 1σ, at 20%), while
 * neighbouring requests still alternate irregularly.
 */
const TWO_32 = 2 ** 32
const GOLDEN_STEP = 0x9e3779b9

/** The canary share of the 32-bit hash space for a weight in percent; compiled once per snapshot. */
export function weightThreshold(weightPercent: number): number {
  return Math.round((weightPercent / 100) * TWO_32)
}

/** A per-route counter; `next()` is a 32-bit point in [0, 2^32). */
export class WeylSequence {
  #x: number

  constructor(seed = 0) {
    this.#x = seed >>> 0
  }

  next(): number {
    this.#x = (this.#x + GOLDEN_STEP) >>> 0
    return this.#x
  }
}
