/**
 * The wire protocol between `veer proxy` and `veer control` (JSON over HTTP, bearer token with the
 * `proxy` role). The two processes meet only here: proxy/ never imports control/, and both import this.
 *
 * Flow (proxy side, proxy/control/link.ts):
 *   1. POST /v1/proxies/register   RegisterRequest  → RegisterResponse   (on start and after every reconnect)
 *   2. GET  /v1/proxies/{id}/watch?revision=N       → WatchResponse (200) as soon as control's revision > N,
 *      or 204 after ~20 s with nothing new (long-poll; the proxy asks again at once)
 *   3. POST /v1/proxies/{id}/ack   AckRequest       → 204   (after applying, or failing to apply, a revision)
 *   4. POST /v1/proxies/{id}/report ReportRequest   → 204   (every 250 ms: per route and version outcomes)
 * A proxy that has not reported for 10 s is no longer "live" and does not hold up a rollout step.
 *
 * Each message is described once here with schema-kit: control checks what proxies send (register,
 * ack, report; an unknown field is a 400) and the proxy what control sends (register and watch answers,
 * and its last-known-good file, which holds one) with these same schemas, and the types are inferred
 * from them. What control sends may carry fields a newer control added: the proxy skips them (so an
 * older proxy keeps working while control is upgraded first), all but prototype names.
 */

import { type Infer, int, list, literal, nullable, num, obj, record, routeKey, str } from './schema-kit.ts'

const MAX = Number.MAX_SAFE_INTEGER

/** One side of a route: where it is served from and which release it is (an image tag, a commit). */
const upstreamShape = {
  url: str('Origin of the upstream'),
  release: str('Release id (an image tag, a commit)', { fallback: 'unknown' }),
}
const upstream = obj('An upstream: its origin and release', upstreamShape, { required: ['url'] })
export type Upstream = Infer<typeof upstream>

/**
 * The releases a route serves: its stable and its canary (none: null). A canary weight belongs to one
 * pair: when a proxy's config names another pair, control's weight is not for it (control/release.ts).
 * The canary is the one served, so after `promote-shadow` it is the proxy's shadow.
 */
const releasePair = obj(
  'The release pair these weights are for: {stable: {url, release}, canary: {url, release} | null} (a control older than this proxy sends none; upgrade control first)',
  {
    stable: obj('The stable upstream', upstreamShape, { required: ['url'], unknown: 'ignore' }),
    canary: nullable(obj('The canary upstream', upstreamShape, { required: ['url'], unknown: 'ignore' })),
  },
  { required: ['stable', 'canary'], unknown: 'ignore' },
)
export type ReleasePair = Infer<typeof releasePair>

export function sameUpstream(a: Upstream | null | undefined, b: Upstream | null | undefined): boolean {
  if (a == null || b == null) return a == null && b == null
  return a.url === b.url && a.release === b.release
}

export function samePair(a: ReleasePair, b: ReleasePair): boolean {
  return sameUpstream(a.stable, b.stable) && sameUpstream(a.canary, b.canary)
}

/**
 * Every `reason` of veer_rollbacks_total (RouteWeights.rollback): a failed check of the analysis
 * (proxy/analysis/judge.ts), `analysis` for a failure without one, `inconclusive` (plan says abort),
 * `fuse`, `smoke`, `prometheus` (a plan's PromQL check; its name is in the reason). Proxy and control start each route's counters at 0 with these, so an alert's
 * `increase()` sees the first rollback too.
 */
export const ROLLBACK_REASONS = [
  'errors',
  'outcome',
  'latency-p95',
  'latency-p99',
  'analysis',
  'inconclusive',
  'fuse',
  'smoke',
  'prometheus',
] as const

/**
 * Weights and identity of one route as control holds it. `version` is the route's config version (ETag).
 * Weight ranges are not checked by the schema: a weight this proxy cannot apply is refused by
 * proxy/control/weights.ts `withWeights` (and NACKed with the reason), not taken for noise.
 */
const routeWeights = obj(
  'RouteWeights: one route as control holds it',
  {
    version: int("The route's config version (ETag)", 0, MAX),
    /**
     * The release pair these weights are for. A proxy applies them to a route only while its own config
     * serves this same pair; otherwise (its file names a new release control has not taken in yet, or an
     * older one) it serves the route as its file says. Required: weights without it are refused.
     */
    pair: releasePair,
    /** Canary share in percent, 0..100; stable gets the rest. */
    canary: num('Canary share in percent, 0..100; stable gets the rest', -Infinity, Infinity),
    /**
     * Share of requests the proxy mirrors to the route's shadow, in percent 0..100. Absent: the proxy's
     * file setting (control has none yet; older controls never send it).
     */
    shadow: num("Share of requests mirrored to the route's shadow, percent 0..100", -Infinity, Infinity),
    /**
     * Set (only ever `true`) after `veer promote-shadow`: the route's canary is the shadow upstream in the
     * proxy's own config (its url and release; pool and timeouts the route's, as for any canary), and
     * nothing is mirrored (shadow percent 0, whatever `shadow` says). A proxy whose config has no shadow
     * for the route refuses the revision (NACK). Absent: the canary is the config's own `canary`.
     * Control sends it only for routes whose proxies announced a shadow; an older proxy would ignore it and
     * keep its file canary, so control assumes every proxy of such a route runs a version that knows it.
     */
    canaryFromShadow: literal("Set after veer promote-shadow: the route's shadow is its canary", true),
    /**
     * Set while the route's last change (this `version`) was an automatic rollback control made: why,
     * as veer_rollbacks_total's `reason` (errors, outcome, latency-p95, latency-p99, inconclusive, fuse,
     * smoke). The proxy counts it once per route version. Absent: not a rollback (older controls never
     * send it; older proxies ignore it).
     */
    rollback: obj(
      'The automatic rollback that set these weights',
      { reason: str('Why: the failed check, or inconclusive, fuse, smoke') },
      { required: ['reason'], optional: true, unknown: 'ignore' },
    ),
  },
  { required: ['version', 'pair', 'canary'], unknown: 'ignore' },
)
export type RouteWeights = Infer<typeof routeWeights>

/** RouteWeights while it is being built, before it is handed on (or frozen). */
export type RouteWeightsDraft = { -readonly [K in keyof RouteWeights]: RouteWeights[K] }

export const announcedRoute = obj(
  'AnnouncedRoute: one route of the proxy’s config',
  {
    name: str('Route name'),
    stable: upstream,
    canary: nullable(upstream),
    /** The shadow upstream in the proxy's config; absent (older proxies) counts as none. */
    shadow: nullable(upstream),
    /**
     * The weight in the proxy's own config: control adopts it for a route it does not know yet, and for a
     * new release pair (a release change resets the canary weight to it).
     */
    canaryWeight: int('Canary weight in the proxy’s own config', 0, 100, 0),
    /**
     * Set when this proxy's config was reloaded into another stable or canary since it last registered:
     * the stable and canary it announced before. A change an operator just made, so control takes the new
     * pair in even when it is one control served before (going back). Absent on a plain (re)registration:
     * then a pair control has already moved away from is a stale config, not a change.
     */
    changedFrom: obj(
      'The stable and canary this proxy announced before a reload changed them',
      { stable: upstream, canary: nullable(upstream) },
      { required: ['stable'], optional: true },
    ),
  },
  { required: ['name', 'stable'] },
)
export type AnnouncedRoute = Infer<typeof announcedRoute>

export const registerRequest = obj(
  'RegisterRequest (POST /v1/proxies/register)',
  {
    /** Stable for the life of the proxy process: host name, pid and start time. */
    id: str('Proxy id, stable for the life of the proxy process'),
    routes: list('Routes the proxy serves', announcedRoute),
    /** The control revision the proxy last applied (from its last-known-good file), or 0. */
    appliedRevision: int('Revision the proxy last applied, or 0', 0, MAX, 0),
  },
  { required: ['id'] },
)
export type RegisterRequest = Infer<typeof registerRequest>

/** Control's answer to a register and a watch; the proxy's last-known-good file holds one too. */
export const registerResponse = obj(
  'RegisterResponse / WatchResponse',
  {
    revision: int('Control’s revision of the weights', 0, MAX),
    routes: record('Weights of each route control knows, by route name', routeKey, routeWeights),
  },
  { required: ['revision', 'routes'], unknown: 'ignore' },
)
export type RegisterResponse = Infer<typeof registerResponse>
export type WatchResponse = RegisterResponse

export const ackRequest = obj(
  'AckRequest (POST /v1/proxies/{id}/ack)',
  {
    revision: int('Revision applied (or refused)', 0, MAX),
    /** Null when applied; else why the proxy refused it (as Envoy's xDS NACK carries error_detail). */
    error: nullable(str('Why the proxy refused the revision; null when applied', { minLength: 0 })),
  },
  { required: ['revision'] },
)
export type AckRequest = Infer<typeof ackRequest>

/** Mergeable outcome counts of one version over the last report interval (bucket layout of proxy/analysis/window.ts). */
const versionReport = obj('VersionReport', {
  requests: int('Requests', 0, MAX, 0),
  errors: int('Errors', 0, MAX, 0),
  /** Failed business outcomes (the route's outcome header said `fail`); absent from older proxies. */
  failed: int('Failed business outcomes', 0, MAX, 0),
  /** Canary failures a user saw (no fallback rescued them). */
  harmed: int('Canary failures users saw', 0, MAX, 0),
  /** Canary failures the fallback to stable rescued. */
  saved: int('Canary failures the fallback rescued', 0, MAX, 0),
  /** Latency histogram counts, index = bucket of proxy/analysis/window.ts `bucketOf(ms)`; trailing zeros may be cut. */
  latency: list('Latency bucket counts', int('Count', 0, MAX)),
})
export type VersionReport = Infer<typeof versionReport>

const fuseReport = obj(
  'FuseReport',
  {
    /** What tripped it, e.g. "10 consecutive canary failures (last: 503)". */
    reason: str('What tripped the fuse'),
    /** The route's config version (RouteWeights.version) the proxy had when it tripped. */
    version: int('Route version when it tripped', 0, MAX, 0),
    /** Epoch ms. */
    at: int('Epoch ms', 0, MAX, 0),
    /** The canary it tripped on (control ignores a fuse of a canary it no longer serves); absent from older proxies. */
    release: str('The canary release it tripped on'),
    upstream: str('The canary upstream it tripped on'),
  },
  { required: ['reason'], optional: true },
)
export type FuseReport = Infer<typeof fuseReport>

const routeReport = obj('Route report: stable and canary outcomes', {
  stable: versionReport,
  canary: nullable(versionReport),
  /**
   * Set while the route's fuse holds the canary at 0 in this proxy (N consecutive canary failures): control
   * rolls the route back at once, without waiting for statistics.
   */
  fuse: fuseReport,
})
export type RouteReport = Infer<typeof routeReport>

export const reportRequest = obj(
  'ReportRequest (POST /v1/proxies/{id}/report)',
  {
    revision: int('Revision the proxy runs', 0, MAX, 0),
    intervalMs: int('Report interval in ms', 0, 3_600_000, 1000),
    routes: record('Per route: stable and canary outcomes', routeKey, routeReport),
  },
  { required: ['revision'] },
)
export type ReportRequest = Infer<typeof reportRequest>
