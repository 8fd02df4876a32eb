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
 */

/** One side of a route: where it is served from and which release it is (an image tag, a commit). */
export interface Upstream {
  readonly url: string
  readonly release: string
}

/**
 * The releases a route serves: its stable and its canary (none: null). A canary weight belongs to one
 * pair: when a proxy's config names another pair, control's weight is not for it (control/release.ts).
 * The canary is the one served, so after `promote-shadow` it is the proxy's shadow.
 */
export interface ReleasePair {
  readonly stable: Upstream
  readonly canary: Upstream | null
}

export function sameUpstream(a: Upstream | null | undefined, b: Upstream | null | undefined): boolean {
  if (a == null || b == null) return a == null && b == null
  return a.url === b.url && a.release === b.release
}

export function samePair(a: ReleasePair, b: ReleasePair): boolean {
  return sameUpstream(a.stable, b.stable) && sameUpstream(a.canary, b.canary)
}

/** Weights and identity of one route as control holds it. `version` is the route's config version (ETag). */
export interface RouteWeights {
  readonly version: number
  /**
   * The release pair these weights are for. A proxy applies them to a route only while its own config
   * serves this same pair; otherwise (its file names a new release control has not taken in yet, or an
   * older one) it serves the route as its file says. Required: weights without it are refused.
   */
  readonly pair: ReleasePair
  /** Canary share in percent, 0..100; stable gets the rest. */
  readonly canary: number
  /**
   * Share of requests the proxy mirrors to the route's shadow, in percent 0..100. Absent: the proxy's
   * file setting (control has none yet; older controls never send it).
   */
  readonly shadow?: number
  /**
   * Set (only ever `true`) after `veer promote-shadow`: the route's canary is the shadow upstream in the
   * proxy's own config (its url and release; pool and timeouts the route's, as for any canary), and
   * nothing is mirrored (shadow percent 0, whatever `shadow` says). A proxy whose config has no shadow
   * for the route refuses the revision (NACK). Absent: the canary is the config's own `canary`.
   * Control sends it only for routes whose proxies announced a shadow; an older proxy would ignore it and
   * keep its file canary, so control assumes every proxy of such a route runs a version that knows it.
   */
  readonly canaryFromShadow?: true
}

/** RouteWeights while it is being built, before it is handed on (or frozen). */
export type RouteWeightsDraft = { -readonly [K in keyof RouteWeights]: RouteWeights[K] }

export interface AnnouncedRoute {
  readonly name: string
  readonly stable: Upstream
  readonly canary: Upstream | null
  /** The shadow upstream in the proxy's config; absent (older proxies) counts as none. */
  readonly shadow?: Upstream | null
  /**
   * The weight in the proxy's own config: control adopts it for a route it does not know yet, and for a
   * new release pair (a release change resets the canary weight to it).
   */
  readonly canaryWeight: number
  /**
   * Set when this proxy's config was reloaded into another stable or canary since it last registered:
   * the stable and canary it announced before. A change an operator just made, so control takes the new
   * pair in even when it is one control served before (going back). Absent on a plain (re)registration:
   * then a pair control has already moved away from is a stale config, not a change.
   */
  readonly changedFrom?: { readonly stable: Upstream; readonly canary: Upstream | null }
}

export interface RegisterRequest {
  /** Stable for the life of the proxy process: host name, pid and start time. */
  readonly id: string
  readonly routes: readonly AnnouncedRoute[]
  /** The control revision the proxy last applied (from its last-known-good file), or 0. */
  readonly appliedRevision: number
}

export interface RegisterResponse {
  readonly revision: number
  readonly routes: Readonly<Record<string, RouteWeights>>
}

export type WatchResponse = RegisterResponse

export interface AckRequest {
  readonly revision: number
  /** Null when applied; else why the proxy refused it (as Envoy's xDS NACK carries error_detail). */
  readonly error: string | null
}

/** Mergeable outcome counts of one version over the last report interval (bucket layout of proxy/analysis/window.ts). */
export interface VersionReport {
  readonly requests: number
  readonly errors: number
  /** Failed business outcomes (the route's outcome header said `fail`); absent from older proxies. */
  readonly failed?: number
  /** Canary failures a user saw (no fallback rescued them). */
  readonly harmed?: number
  /** Canary failures the fallback to stable rescued. */
  readonly saved?: number
  /** Latency histogram counts, index = bucket of proxy/analysis/window.ts `bucketOf(ms)`; trailing zeros may be cut. */
  readonly latency: readonly number[]
}

export interface ReportRequest {
  readonly revision: number
  readonly intervalMs: number
  readonly routes: Readonly<Record<string, RouteReport>>
}

export interface RouteReport {
  readonly stable: VersionReport
  readonly canary: VersionReport | null
  /**
   * Set while the route's fuse holds the canary at 0 in this proxy (N consecutive canary failures): control
   * rolls the route back at once, without waiting for statistics.
   */
  readonly fuse?: FuseReport
}

export interface FuseReport {
  /** What tripped it, e.g. "10 consecutive canary failures (last: 503)". */
  readonly reason: string
  /** The route's config version (RouteWeights.version) the proxy had when it tripped. */
  readonly version: number
  /** Epoch ms. */
  readonly at: number
  /** The canary it tripped on (control ignores a fuse of a canary it no longer serves); absent from older proxies. */
  readonly release?: string
  readonly upstream?: string
}
