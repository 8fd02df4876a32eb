/**
 * A compiled, frozen snapshot of the routes. Everything a request needs is computed here, once per
 * config change: host buckets, prefix order, weight thresholds, lower-cased header names, bound metric
 * children. A change builds a new table and swaps one reference; requests in flight keep the old one.
 */
import type { Logger } from 'pino'
import type { ProxyConfig, RouteConfig } from '../config/types.ts'
import { OutcomeWindow } from './analysis/window.ts'
import type { ProxyMetrics, VersionMetrics, VersionName } from './metrics.ts'
import { WeylSequence, weightThreshold } from './split/weighted.ts'
import type { Upstream, UpstreamPools } from './upstreams.ts'

/** State of one route and version that outlives snapshots: metric children and the outcome window. */
export interface VersionState {
  readonly metrics: VersionMetrics
  readonly window: OutcomeWindow
}

export interface Backend {
  readonly version: VersionName
  readonly release: string
  readonly upstream: Upstream
  readonly state: VersionState
  /** Access-log child: route, version, release and upstream are serialized once, not per line. */
  readonly log: Logger
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
  readonly stickyCookie: string | null
  readonly allowOverride: boolean
  readonly preserveHost: boolean
  readonly headersTimeout: number
  readonly bodyTimeout: number
}

/**
 * What outlives snapshots: upstream pools (by origin), metrics and per route and version state, and
 * the logger. Each compile reads from it; requests never touch it.
 */
export class RouteStates {
  readonly #versions = new Map<string, VersionState>()
  readonly #sequences = new Map<string, WeylSequence>()
  readonly metrics: ProxyMetrics
  readonly pools: UpstreamPools
  readonly log: Logger

  constructor(metrics: ProxyMetrics, pools: UpstreamPools, log: Logger) {
    this.metrics = metrics
    this.pools = pools
    this.log = log
  }

  version(route: string, version: VersionName): VersionState {
    const key = `${route}\u0000${version}`
    let state = this.#versions.get(key)
    if (!state) {
      state = { metrics: this.metrics.bind(route, version), window: new OutcomeWindow() }
      this.#versions.set(key, state)
    }
    return state
  }

  sequence(route: string): WeylSequence {
    let seq = this.#sequences.get(route)
    if (!seq) {
      seq = new WeylSequence()
      this.#sequences.set(route, seq)
    }
    return seq
  }
}

interface HostBucket {
  readonly suffix: string
  readonly routes: readonly CompiledRoute[]
}

export class RouteTable {
  readonly generation: number
  readonly config: ProxyConfig
  readonly routes: readonly CompiledRoute[]
  readonly #exact: Map<string, readonly CompiledRoute[]>
  readonly #wildcards: readonly HostBucket[]
  readonly #any: readonly CompiledRoute[]
  /** The common single-route, any-host, prefix "/" table needs no lookup at all. */
  readonly #only: CompiledRoute | null

  constructor(generation: number, config: ProxyConfig, routes: CompiledRoute[]) {
    this.generation = generation
    this.config = config
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

/** Build a snapshot from a validated config, reusing pools and per-version state. */
export function compileRoutes(generation: number, config: ProxyConfig, states: RouteStates): RouteTable {
  const { pools, metrics } = states
  const routes = config.routes.map((rc): CompiledRoute => {
    const settings = { connections: rc.connections, maxPending: rc.maxPending, timeouts: rc.timeouts }
    const backend = (version: VersionName, url: string, release: string): Backend => ({
      version,
      release,
      upstream: pools.get(url, settings),
      state: states.version(rc.name, version),
      log: states.log.child({ route: rc.name, version, release, upstream: url }),
    })
    const canary = rc.canary ? backend('canary', rc.canary.url, rc.canary.release) : null
    const weight = canary ? rc.canaryWeight : 0
    metrics.weight.labels(rc.name, 'stable').set(100 - weight)
    metrics.weight.labels(rc.name, 'canary').set(weight)
    return Object.freeze({
      name: rc.name,
      config: rc,
      prefix: rc.match.pathPrefix,
      stable: backend('stable', rc.stable.url, rc.stable.release),
      canary,
      threshold: weightThreshold(weight),
      sequence: states.sequence(rc.name),
      stickyHeader: rc.sticky?.header?.toLowerCase() ?? null,
      stickyCookie: rc.sticky?.cookie ?? null,
      allowOverride: rc.allowOverride,
      preserveHost: rc.preserveHost,
      headersTimeout: rc.timeouts.headers,
      bodyTimeout: rc.timeouts.body,
    })
  })
  metrics.releaseInfo.reset()
  for (const r of routes) {
    metrics.releaseInfo.labels(r.name, 'stable', r.stable.release).set(1)
    if (r.canary) metrics.releaseInfo.labels(r.name, 'canary', r.canary.release).set(1)
    if (r.config.shadow) metrics.releaseInfo.labels(r.name, 'shadow', r.config.shadow.release).set(1)
  }
  pools.retainOnly(
    new Set(routes.flatMap((r) => (r.canary ? [r.stable.upstream, r.canary.upstream] : [r.stable.upstream]))),
  )
  return new RouteTable(generation, config, routes)
}
