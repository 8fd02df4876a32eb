/**
 * Which version serves a request: override, then a canaryMatch rule, then sticky hash or weighted
 * sequence, then health.
 */
import type { Backend, CompiledRoute } from '../routes/table.ts'
import { stickyHash } from './sticky.ts'

const ALL = 2 ** 32

/**
 * `override` is the tester's header value (honoured only when the route allows it), `stickyKey` the
 * user's key, if any. Returns null when every candidate is ejected.
 */
export function pickBackend(
  route: CompiledRoute,
  override: string | undefined,
  stickyKey: string | undefined,
  /** A canaryMatch rule matched: the canary, unless it is ejected. */
  matched = false,
): Backend | null {
  const canary = route.canary
  if (canary === null) return route.stable.upstream.isEjected() ? null : route.stable
  let chosen: Backend
  let other: Backend
  if (override !== undefined && route.allowOverride && (override === 'canary' || override === 'stable')) {
    // A tester who asks for one version gets that version or an error, never the other one.
    chosen = override === 'canary' ? canary : route.stable
    return chosen.upstream.isEjected() ? null : chosen
  }
  if (matched) {
    if (!canary.upstream.isEjected()) return canary
    return route.stable.upstream.isEjected() ? null : route.stable
  }
  const t = route.threshold
  const point =
    t === 0 ? ALL : t === ALL ? 0 : stickyKey !== undefined ? stickyHash(stickyKey) : route.sequence.next()
  if (point < t) {
    chosen = canary
    other = route.stable
  } else {
    chosen = route.stable
    other = canary
  }
  if (!chosen.upstream.isEjected()) return chosen
  return other.upstream.isEjected() ? null : other
}
