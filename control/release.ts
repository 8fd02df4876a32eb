/**
 * Release identity, as pure rules: a route's canary weight belongs to one release pair (its stable and
 * its canary, each a URL and a release id). When a proxy announces a route, its pair is one of:
 *
 * - `same`: the pair control holds; the weight is this pair's.
 * - `change`: a new pair, a release change. Control takes it in: the canary weight goes to the proxy's
 *   file `canaryWeight`, a rollout of the old canary ends, and the change is versioned and audited. The
 *   newest change wins: when two proxies announce different new pairs, the later announcement is the
 *   route's pair, and the other proxy is stale until its config catches up.
 * - `stale`: a pair control has already moved away from, announced by a proxy that did not just change
 *   to it (a restart, a reconnect): an old config still running, not an operator's change. Control keeps
 *   its pair; that proxy serves the route by its own file, never by control's weight (the weight is not
 *   for its pair), and is shown as serving another release. A proxy whose config was *reloaded* into a
 *   pair control served before (`changedFrom` set) is going back on purpose: that is a change.
 *
 * A hand-off is the change that follows a promotion: the new stable is the release that was the canary.
 */
import {
  type AnnouncedRoute,
  type ReleasePair,
  samePair,
  sameUpstream,
  type Upstream,
} from '../config/wire.ts'

export { samePair, sameUpstream }

/** How many pairs a route remembers having moved away from (enough to tell stale configs apart). */
export const SUPERSEDED_KEPT = 16

export type Announcement = 'same' | 'change' | 'stale'

/** What control holds of a route's releases (a part of its RouteRecord). */
export interface Releases {
  readonly stable: Upstream | null
  /** The canary served: the announced canary, or the shadow after promote-shadow. */
  readonly canaryUpstream: Upstream | null
  readonly shadowUpstream: Upstream | null
  readonly canaryFromShadow: boolean
  /** Pairs this route served before, newest first. */
  readonly superseded: readonly ReleasePair[]
}

/** The pair control holds for a route (null only for a record without a stable, which none has). */
export function pairOf(r: Releases): ReleasePair | null {
  return r.stable === null ? null : { stable: r.stable, canary: r.canaryUpstream }
}

/**
 * Whether a proxy with this announcement serves its shadow as the canary: control promoted the shadow
 * and the proxy's shadow is that same release.
 */
export function servesShadow(a: AnnouncedRoute, r: Releases): boolean {
  return r.canaryFromShadow && a.shadow != null && sameUpstream(a.shadow, r.shadowUpstream)
}

/** The pair a proxy with this announcement would serve under control's weights for `r`. */
export function servedPair(a: AnnouncedRoute, r: Releases): ReleasePair {
  return { stable: a.stable, canary: servesShadow(a, r) ? (a.shadow ?? null) : a.canary }
}

/** How control takes an announcement of a route it knows (see the module comment). */
export function classify(a: AnnouncedRoute, r: Releases): Announcement {
  const held = pairOf(r)
  const served = servedPair(a, r)
  if (held !== null && samePair(served, held)) return 'same'
  if (a.changedFrom !== undefined) return 'change'
  return r.superseded.some((p) => samePair(p, served)) ? 'stale' : 'change'
}

/** The hand-off after a promotion: the new stable is the release that was the canary. */
export function isHandoff(from: ReleasePair | null, to: ReleasePair): boolean {
  return from?.canary != null && sameUpstream(from.canary, to.stable)
}

/** `superseded` after moving away from `from`: newest first, no repeats, bounded. */
export function supersede(
  list: readonly ReleasePair[],
  from: ReleasePair | null,
  to: ReleasePair,
): ReleasePair[] {
  const kept = list.filter((p) => !samePair(p, to) && (from === null || !samePair(p, from)))
  return (from === null ? kept : [from, ...kept]).slice(0, SUPERSEDED_KEPT)
}

/** `v1 (http://a:80)`, or `none`: how a side is named in audit reasons and views. */
export function describeUpstream(u: Upstream | null): string {
  return u === null ? 'none' : `${u.release} (${u.url})`
}
