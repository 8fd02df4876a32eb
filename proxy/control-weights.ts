/**
 * Control's weights and the proxy's config, as pure functions: what a proxy announces, how a revision
 * from control (or from the last-known-good file) is checked, and the config it makes when laid over the
 * file's. Control is the source of truth for the weights of the routes it names; every other setting,
 * and the weight of a route it does not name, comes from the file.
 */
import type { Issue } from '../config/load.ts'
import type { ProxyConfig, RouteConfig } from '../config/types.ts'
import type { AnnouncedRoute, RouteWeights } from '../config/wire.ts'

export type ControlWeights = Readonly<Record<string, RouteWeights>>

/** A revision of control's weights: a RegisterResponse, a WatchResponse, or the last-known-good file. */
export interface Revision {
  readonly revision: number
  readonly routes: ControlWeights
}

export function announcedRoutes(config: ProxyConfig): AnnouncedRoute[] {
  return config.routes.map((rc) => ({
    name: rc.name,
    stable: { url: rc.stable.url, release: rc.stable.release },
    canary: rc.canary ? { url: rc.canary.url, release: rc.canary.release } : null,
    canaryWeight: rc.canaryWeight,
  }))
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0

/**
 * The shape of a revision, or what is wrong with it. Weight ranges are not checked here: a weight this
 * proxy cannot apply is refused by `withWeights` (and NACKed with the reason), not taken for noise.
 */
export function parseRevision(raw: unknown): Revision | string {
  if (!isObject(raw)) return 'is not a JSON object'
  if (!isCount(raw.revision))
    return `revision must be a whole number >= 0 (got ${JSON.stringify(raw.revision)})`
  if (!isObject(raw.routes)) return 'routes must be an object of route name to {version, canary}'
  const routes: Record<string, RouteWeights> = {}
  for (const [name, w] of Object.entries(raw.routes)) {
    if (!isObject(w) || typeof w.canary !== 'number' || typeof w.version !== 'number')
      return `routes.${name} must be {version, canary} with numbers`
    routes[name] = Object.freeze({ version: w.version, canary: w.canary })
  }
  return Object.freeze({ revision: raw.revision, routes: Object.freeze(routes) })
}

export type Weighted = { ok: true; config: ProxyConfig } | { ok: false; issues: Issue[] }

/**
 * The file's config with control's canary weights laid over it, checked whole: one weight this proxy
 * cannot apply (out of range, or above 0 for a route that has no canary here) and nothing is applied.
 * Routes control does not name keep the file's weight; routes only control knows are not this proxy's.
 */
export function withWeights(config: ProxyConfig, weights: ControlWeights | null): Weighted {
  if (weights === null) return { ok: true, config }
  const issues: Issue[] = []
  let changed = false
  const routes = config.routes.map((rc, i): RouteConfig => {
    // Own keys only: a route may well be named "constructor".
    const w = Object.hasOwn(weights, rc.name) ? weights[rc.name]! : undefined
    if (w === undefined || w.canary === rc.canaryWeight) return rc
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
    changed = true
    return Object.freeze({ ...rc, canaryWeight: w.canary })
  })
  if (issues.length > 0) return { ok: false, issues }
  if (!changed) return { ok: true, config }
  return { ok: true, config: Object.freeze({ ...config, routes: Object.freeze(routes) }) }
}

/** Whether two configs of the same route list split traffic alike (so no new table is needed). */
export function sameWeights(a: ProxyConfig, b: ProxyConfig): boolean {
  if (a.routes.length !== b.routes.length) return false
  for (let i = 0; i < a.routes.length; i++) {
    const x = a.routes[i]!
    const y = b.routes[i]!
    if (x.name !== y.name || x.canaryWeight !== y.canaryWeight) return false
  }
  return true
}
