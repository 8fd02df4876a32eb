/**
 * The automatic rollbacks control tells this proxy of (RouteWeights.rollback), counted once each: a
 * rollback is keyed on its route version, so the same weights again (a reconnect, a re-registration,
 * a watch answered for another route's change) are not counted twice. Weights taken before this
 * process counted anything (its last-known-good file, or the first answer of a proxy that has none)
 * are noted without counting: their rollbacks were applied before, by another process or before this
 * proxy joined. A route whose own fuse holds the canary at 0 was counted by the fuse (reason `fuse`),
 * and control's rollback of it is the same one.
 */
import type { ProxyConfig } from '../../config/types.ts'
import { samePair } from '../../config/wire.ts'
import { type ControlWeights, servedPair } from './weights.ts'

export class RollbackLedger {
  /** Route → the version of the last rollback seen for it. */
  readonly #seen = new Map<string, number>()
  #primed = false

  /** `known`: the weights this process starts on (its last-known-good file), if any. */
  constructor(known: ControlWeights | null) {
    if (known !== null) this.take(null, known, () => true)
  }

  /**
   * The rollbacks in `weights` to count now, as control sent them for routes of `config` (the file)
   * that follow control's weights. `fused(route)`: whether this proxy's fuse holds the route's canary.
   * `config` null notes every rollback and counts none.
   */
  take(
    config: ProxyConfig | null,
    weights: ControlWeights,
    fused: (route: string) => boolean,
  ): { route: string; reason: string }[] {
    const out: { route: string; reason: string }[] = []
    const count = this.#primed && config !== null
    this.#primed = true
    for (const [route, w] of Object.entries(weights)) {
      if (w.rollback === undefined || this.#seen.get(route) === w.version) continue
      this.#seen.set(route, w.version)
      if (!count) continue
      const rc = config.routes.find((r) => r.name === route)
      // A route served as the file says (another release pair): control's rollback is not applied here.
      if (rc === undefined || !samePair(servedPair(rc, w), w.pair) || fused(route)) continue
      out.push({ route, reason: w.rollback.reason })
    }
    return out
  }
}
