/**
 * Control's weights and the proxy's config, as pure functions: what a proxy announces, how a revision
 * from control (or from the last-known-good file) is checked, and the config it makes when laid over the
 * file's. Control is the source of truth for the weights of the routes it names, and for their shadow
 * percent once it has one, and may make a route's shadow its canary (`canaryFromShadow`, after
 * `veer promote-shadow`); every other setting, and the weight of a route it does not name, comes from
 * the file. Control's weights for a route are for one release pair (`RouteWeights.pair`): while the
 * file serves another (a new release not yet taken in by control, or an old config), the route is
 * served as the file says, so an old weight never reaches a new release, not for one request.
 */
import { formatIssue, type Issue } from '../../config/load.ts'
import { check, deepFreeze } from '../../config/schema-kit.ts'
import type { ProxyConfig, RouteConfig, UpstreamConfig } from '../../config/types.ts'
import {
  type AnnouncedRoute,
  type RegisterResponse,
  type ReleasePair,
  type RouteWeights,
  registerResponse,
  samePair,
  type Upstream,
} from '../../config/wire.ts'

export type ControlWeights = Readonly<Record<string, RouteWeights>>

/** A revision of control's weights: a RegisterResponse, a WatchResponse, or the last-known-good file. */
export type Revision = RegisterResponse

const side = (u: Pick<UpstreamConfig, 'url' | 'release'>): Upstream => ({ url: u.url, release: u.release })

/** The routes of the file as control is told of them. */
export function announcedRoutes(config: ProxyConfig): AnnouncedRoute[] {
  return config.routes.map((rc) => ({
    name: rc.name,
    stable: side(rc.stable),
    canary: rc.canary ? side(rc.canary) : null,
    shadow: rc.shadow ? side(rc.shadow) : null,
    canaryWeight: rc.canaryWeight,
  }))
}

/**
 * `routes` with `changedFrom` on each route whose stable or canary differs from what control last
 * heard from this proxy (`before`: its last successful registration; null before the first).
 */
export function markChanged(
  routes: readonly AnnouncedRoute[],
  before: readonly AnnouncedRoute[] | null,
): AnnouncedRoute[] {
  return routes.map((a) => {
    const b = before?.find((x) => x.name === a.name)
    if (b === undefined) return a
    const from: ReleasePair = { stable: b.stable, canary: b.canary }
    return samePair(from, { stable: a.stable, canary: a.canary }) ? a : { ...a, changedFrom: from }
  })
}

/** The release pair a route of the file serves under weights `w`: its shadow is the canary after promote-shadow. */
export function servedPair(rc: RouteConfig, w: RouteWeights | undefined): ReleasePair {
  const canary = w?.canaryFromShadow === true ? rc.shadow : rc.canary
  return { stable: side(rc.stable), canary: canary ? side(canary) : null }
}

/** Routes of the file that control's weights are not for: the file serves another release pair. */
export function otherReleases(config: ProxyConfig, weights: ControlWeights | null): string[] {
  if (weights === null) return []
  return config.routes
    .filter(
      (rc) =>
        Object.hasOwn(weights, rc.name) &&
        !samePair(servedPair(rc, weights[rc.name]), weights[rc.name]!.pair),
    )
    .map((rc) => rc.name)
}

/**
 * A revision as control sent it (or the last-known-good file holds it), checked with the wire's schema
 * and frozen; else every problem, with its path. Weight ranges are not checked here: a weight this
 * proxy cannot apply is refused by `withWeights` (and NACKed with the reason), not taken for noise.
 */
export function parseRevision(raw: unknown): Revision | string {
  const checked = check(registerResponse, raw)
  return checked.ok ? deepFreeze(checked.value) : checked.issues.map(formatIssue).join('; ')
}

export type Weighted = { ok: true; config: ProxyConfig } | { ok: false; issues: Issue[] }

/**
 * The file's config with control's canary weights and shadow percents laid over it, checked whole. A
 * route whose file serves another release pair than the weights are for keeps the file's settings
 * (control's weight belongs to the other pair; control is told of the new one and answers with its
 * own). One value this proxy cannot apply (out of range, or a weight above 0 for a route that has no canary here)
 * and nothing is applied. Routes control does not name keep the file's weight; routes only control knows
 * are not this proxy's. A shadow percent for a route with no shadow here is ignored: there is nothing
 * to mirror, and no request goes anywhere it would not go anyway. `canaryFromShadow` makes the route's
 * shadow its canary (see `fromShadow`); for a route with no shadow here it is refused.
 */
export function withWeights(config: ProxyConfig, weights: ControlWeights | null): Weighted {
  if (weights === null) return { ok: true, config }
  const issues: Issue[] = []
  const routes = config.routes.map((rc, i): RouteConfig => {
    // Own keys only: a route may well be named "constructor".
    const w = Object.hasOwn(weights, rc.name) ? weights[rc.name]! : undefined
    if (w === undefined || !samePair(servedPair(rc, w), w.pair)) return rc
    if (w.canaryFromShadow === true) return fromShadow(rc, i, w, issues)
    const shadow = rc.shadow && w.shadow !== undefined && w.shadow !== rc.shadow.percent ? w.shadow : null
    if (w.canary === rc.canaryWeight && shadow === null) return rc
    if (shadow !== null && !(Number.isFinite(shadow) && shadow >= 0 && shadow <= 100)) {
      issues.push({
        path: `routes[${i}].shadow.percent`,
        message: `control sent ${JSON.stringify(shadow)} for route "${rc.name}"; a shadow percent is a number from 0 to 100`,
      })
    }
    if (!Number.isInteger(w.canary) || w.canary < 0 || w.canary > 100) {
      issues.push({
        path: `routes[${i}].canaryWeight`,
        message: `control sent ${JSON.stringify(w.canary)} for route "${rc.name}"; a weight is a whole number from 0 to 100`,
      })
    } else if (w.canary > 0 && !rc.canary) {
      issues.push({
        path: `routes[${i}].canary`,
        message: `is not set, but control gives route "${rc.name}" canary weight ${w.canary}; add canary.url to the route here, or set its weight to 0 through control`,
      })
    }
    const next = { ...rc, canaryWeight: w.canary }
    if (shadow !== null) next.shadow = Object.freeze({ ...rc.shadow!, percent: shadow })
    return Object.freeze(next)
  })
  if (issues.length > 0) return { ok: false, issues }
  if (routes.every((rc, i) => rc === config.routes[i])) return { ok: true, config }
  return { ok: true, config: Object.freeze({ ...config, routes: Object.freeze(routes) }) }
}

/**
 * A route whose shadow control made its canary (`veer promote-shadow`): the canary is the shadow's url
 * and release, served like any canary (the route's connections, maxPending and timeouts, as the stable
 * has; the shadow's own pool size, timeouts, header and hostSuffix are for mirroring only), and the
 * shadow percent is 0: a version that serves users is not mirrored as well. With no shadow here there is
 * nothing to serve as the canary: an issue, so the revision is refused whole.
 */
function fromShadow(rc: RouteConfig, i: number, w: RouteWeights, issues: Issue[]): RouteConfig {
  if (!rc.shadow) {
    issues.push({
      path: `routes[${i}].shadow`,
      message: `is not set, but control serves route "${rc.name}"'s shadow as its canary (veer promote-shadow); add the shadow to the route here, or abort and set up the canary through the config`,
    })
    return rc
  }
  if (!Number.isInteger(w.canary) || w.canary < 0 || w.canary > 100) {
    issues.push({
      path: `routes[${i}].canaryWeight`,
      message: `control sent ${JSON.stringify(w.canary)} for route "${rc.name}"; a weight is a whole number from 0 to 100`,
    })
    return rc
  }
  const sh = rc.shadow
  const sameCanary = rc.canary?.url === sh.url && rc.canary.release === sh.release
  if (sameCanary && rc.canaryWeight === w.canary && sh.percent === 0) return rc
  return Object.freeze({
    ...rc,
    canary: Object.freeze({
      url: sh.url,
      release: sh.release,
      ...(sh.ca === undefined ? {} : { ca: sh.ca }),
      ...(sh.serverName === undefined ? {} : { serverName: sh.serverName }),
    }),
    canaryWeight: w.canary,
    shadow: sh.percent === 0 ? sh : Object.freeze({ ...sh, percent: 0 }),
  })
}

/**
 * Whether two configs of the same route list split and mirror traffic alike, to the same canary (so no
 * new table is needed).
 */
export function sameWeights(a: ProxyConfig, b: ProxyConfig): boolean {
  if (a.routes.length !== b.routes.length) return false
  for (let i = 0; i < a.routes.length; i++) {
    const x = a.routes[i]!
    const y = b.routes[i]!
    if (x.name !== y.name || x.canaryWeight !== y.canaryWeight) return false
    if (x.shadow?.percent !== y.shadow?.percent) return false
    // promote-shadow swaps the canary upstream at an unchanged weight (0).
    if (x.canary?.url !== y.canary?.url || x.canary?.release !== y.canary?.release) return false
  }
  return true
}
