/**
 * Reconnect delays for the control link (link.ts), pure: the timers are the caller's.
 * Jittered exponential backoff: steps of 100 ms doubling up to a 5 s cap; each delay is drawn from ±50%
 * around its step and never exceeds the cap, so many proxies that lost control at once do not come back
 * in lockstep, and none waits more than the cap once control is back.
 */
export class Backoff {
  readonly #base: number
  readonly #cap: number
  readonly #random: () => number
  #step = 0

  constructor(baseMs = 100, capMs = 5_000, random: () => number = Math.random) {
    this.#base = baseMs
    this.#cap = capMs
    this.#random = random
  }

  next(): number {
    const step = Math.min(this.#cap, this.#base * 2 ** this.#step)
    if (step < this.#cap) this.#step++
    return Math.min(this.#cap, Math.round(step * (0.5 + this.#random())))
  }

  reset(): void {
    this.#step = 0
  }
}
