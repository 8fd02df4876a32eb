/**
 * A compiled, frozen snapshot of the routes (built by compile.ts). Everything a request needs is here,
 * computed once per config change: host buckets, prefix order, weight thresholds, lower-cased header
 * names, bound metric children, each route's handler chain. A change builds a new table and swaps one
 * reference; requests in flight keep the old one.
 */

import type { ProxyConfig, RouteConfig } from '../../config/types.ts'
import type { FuseReport } from '../../config/wire.ts'
import type { OutcomeWindow } from '../analysis/window.ts'
import type { Chain } from '../chain/handler.ts'
import type { ForwardingPolicy } from '../listen/headers.ts'
import type { VersionMetrics, VersionName } from '../metrics.ts'
import type { ShadowTarget } from '../shadow/mirror.ts'
import type { CompiledMatch } from '../split/match.ts'
import type { WeylSequence } from '../split/weighted.ts'
import type { Upstream } from '../upstream/pools.ts'

/** State of one route and version that outlives snapshots: metric children and the outcome window. */
export interface VersionState {
  readonly metrics: VersionMetrics
  readonly window: OutcomeWindow
  /** Consecutive errors (the canary's fuse counts them). */
  streak: number
}

/** A route's fallback of failed canary requests to stable (config: analysis.fallback). */
export interface Fallback {
  /** Upper-case methods retried. */
  readonly methods: ReadonlySet<string>
  /** Lower-case header that makes any method retryable, or null. */
  readonly idempotencyKey: string | null
  readonly maxBodyBytes: number
}

export interface Backend {
  readonly version: VersionName
  readonly release: string
  readonly upstream: Upstream
  readonly state: VersionState
  /** The access line's fixed fields (pid, route, version, release, upstream), serialised once. */
  readonly lineFields: string
}

export interface CompiledRoute {
  readonly name: string
  readonly config: RouteConfig
  readonly prefix: string
  readonly stable: Backend
  readonly canary: Backend | null
  /** Canary share of the 32-bit space (see split/weighted.ts). */
  readonly threshold: number
  readonly sequence: WeylSequence
  readonly stickyHeader: string | null
  /** canaryMatch rules; null when there are none, no canary, or the fuse holds. */
  readonly canaryMatch: readonly CompiledMatch[] | null
  readonly stickyCookie: string | null
  readonly allowOverride: boolean
  readonly preserveHost: boolean
  readonly headersTimeout: number
  readonly bodyTimeout: number
  /** Shadow mirroring, or null: a route without one takes no mirroring branch beyond this check. */
  readonly shadow: ShadowTarget | null
  /** 1 at each status counted as an error (analysis.errorStatuses); see compile.ts errorTable. */
  readonly errorStatus: Uint8Array
  /** Lower-case response header carrying a business outcome (`fail`), or null. */
  /** 1 at each gRPC status counted as an error (analysis.grpcErrorCodes). */
  readonly grpcErrors: Uint8Array
  readonly outcomeHeader: string | null
  /** Retry of failed canary requests on stable, or null (off, or no canary). */
  readonly fallback: Fallback | null
  /** Consecutive canary errors that trip the fuse; 0: off. */
  readonly fuseAfter: number
  /** Set while the fuse holds the canary at 0 (its `config.canaryWeight` then says 0 too). */
  readonly fuse: FuseReport | null
  /** The proxy's own fields on every answer (one object per table). */
  readonly answer: AnswerFields
  /** The handlers a request of this route passes through (chain/handler.ts). */
  readonly chain: Chain
  /** The same for a WebSocket upgrade: no fallback, no mirror (a tunnel is neither retried nor copied). */
  readonly upgradeChain: Chain
}

/** What the proxy adds to an answer. */
export interface AnswerFields {
  /** Add veer's Via hop (config `via`), with the version the upstream answered in (`Upstream.via`). */
  readonly via: boolean
  /** config versionHeader: the version that answered, as this response field; '' for none. */
  readonly versionHeader: string
}

/** The listener's settings, read per request from the table it started on. */
export interface EdgeSettings {
  readonly policy: ForwardingPolicy
  /** server.maxHeaders: more request fields are answered too_many_headers. */
  readonly maxHeaderFields: number
  /** server.normalizePath: routes match, and upstreams get, the normalised path (listen/path.ts). */
  readonly normalizePath: boolean
}

interface HostBucket {
  readonly suffix: string
  readonly routes: readonly CompiledRoute[]
}

export class RouteTable {
  readonly generation: number
  readonly config: ProxyConfig
  readonly edge: EdgeSettings
  readonly routes: readonly CompiledRoute[]
  readonly #exact: Map<string, readonly CompiledRoute[]>
  readonly #wildcards: readonly HostBucket[]
  readonly #any: readonly CompiledRoute[]
  /** The common single-route, any-host, prefix "/" table needs no lookup at all. */
  readonly #only: CompiledRoute | null

  constructor(generation: number, config: ProxyConfig, edge: EdgeSettings, routes: CompiledRoute[]) {
    this.generation = generation
    this.config = config
    this.edge = edge
    this.routes = routes
    const byPrefix = (a: CompiledRoute, b: CompiledRoute) => b.prefix.length - a.prefix.length
    const exact = new Map<string, CompiledRoute[]>()
    const wild = new Map<string, CompiledRoute[]>()
    const any: CompiledRoute[] = []
    for (const r of routes) {
      const host = r.config.match.host.toLowerCase()
      if (host === '*') any.push(r)
      else if (host.startsWith('*.')) pushTo(wild, host.slice(1), r)
      else pushTo(exact, host, r)
    }
    this.#exact = new Map([...exact].map(([h, rs]) => [h, rs.sort(byPrefix)]))
    this.#wildcards = [...wild]
      .map(([suffix, rs]) => ({ suffix, routes: rs.sort(byPrefix) }))
      .sort((a, b) => b.suffix.length - a.suffix.length)
    this.#any = any.sort(byPrefix)
    this.#only = routes.length === 1 && any.length === 1 && any[0]!.prefix === '/' ? any[0]! : null
    Object.freeze(this)
  }

  /** `host` is the Host header as sent (any case, maybe with a port); `path` the request target. */
  match(host: string | undefined, path: string): CompiledRoute | null {
    if (this.#only !== null) return this.#only
    if (host !== undefined && (this.#exact.size > 0 || this.#wildcards.length > 0)) {
      const name = hostName(host)
      const exact = this.#exact.get(name)
      const hit = exact && firstPrefix(exact, path)
      if (hit) return hit
      for (const w of this.#wildcards) {
        if (name.endsWith(w.suffix) && name.length > w.suffix.length) {
          const r = firstPrefix(w.routes, path)
          if (r) return r
        }
      }
    }
    return firstPrefix(this.#any, path)
  }
}

function pushTo<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key)
  if (list) list.push(value)
  else map.set(key, [value])
}

function firstPrefix(routes: readonly CompiledRoute[], path: string): CompiledRoute | null {
  for (const r of routes) if (path.startsWith(r.prefix)) return r
  return null
}

/** Lower-cased host without the port; IPv6 literals keep their brackets. */
export function hostName(host: string): string {
  const end = host.charCodeAt(0) === 91 /* [ */ ? host.indexOf(']') + 1 : host.indexOf(':')
  return (end > 0 ? host.slice(0, end) : host).toLowerCase()
}
