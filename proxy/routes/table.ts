/**
 * A compiled, frozen snapshot of the routes. Everything a request needs is computed here, once per
 * config change: host buckets, prefix order, weight thresholds, lower-cased header names, bound metric
 * children. A change builds a new table and swaps one reference; requests in flight keep the old one.
 */
import type { Logger } from 'pino'
import type { ProxyConfig, RouteConfig } from '../../config/types.ts'
import type { FuseReport } from '../../config/wire.ts'
import { OutcomeWindow } from '../analysis/window.ts'
import { jsonFields } from '../log.ts'
import type { ProxyMetrics, VersionMetrics, VersionName } from '../metrics.ts'
import { FieldFilter } from '../shadow/compare.ts'
import type { ShadowTarget } from '../shadow/mirror.ts'
import { ShadowStats } from '../shadow/stats.ts'
import { WeylSequence, weightThreshold } from '../split/weighted.ts'
import type { Upstream, UpstreamPools } from '../upstream/pools.ts'

/**
 * The statuses a route counts as errors, as a table indexed by status (0..599): one array read per
 * request. `codes` are validated by config/load.ts: `503` or a class `5xx`.
 */
export function errorTable(codes: readonly string[]): Uint8Array {
  const table = new Uint8Array(600)
  for (const code of codes) {
    if (code.endsWith('xx')) table.fill(1, Number(code[0]) * 100, Number(code[0]) * 100 + 100)
    else table[Number(code)] = 1
  }
  return table
}

function compileShadow(
  rc: RouteConfig,
  states: RouteStates,
  errorStatus: Uint8Array,
  accessLog: boolean,
): ShadowTarget {
  const sh = rc.shadow!
  const counter = states.metrics.shadow
  const bound = (outcome: string) => {
    const child = counter.labels(rc.name, outcome)
    return () => child.inc()
  }
  // Its own small pool (distinct settings make a distinct pool even for a shared origin): a slow or
  // dead shadow fills only this one, and nothing queues behind it (maxPending 0; maxInflight drops).
  const upstream = states.pools.get(sh.url, {
    connections: sh.connections,
    maxPending: 0,
    timeouts: { ...sh.timeouts, idle: 4000 },
  })
  return Object.freeze({
    route: rc.name,
    config: sh,
    upstream,
    threshold: weightThreshold(sh.percent),
    sequence: states.sequence(`${rc.name} shadow`),
    noiseThreshold: weightThreshold(sh.compare.noiseSample * 100),
    noiseSequence: states.sequence(`${rc.name} noise`),
    methods: sh.methods.length > 0 ? new Set(sh.methods.map((m) => m.toUpperCase())) : null,
    paths: sh.paths.length > 0 ? [...sh.paths] : null,
    header: sh.header === '' ? null : sh.header.toLowerCase(),
    preserveHost: rc.preserveHost,
    state: states.version(rc.name, 'shadow'),
    errorStatus,
    stats: states.shadowStats(rc.name),
    // As the proxy writes shadow lines (server.ts): with the access log, at level info.
    log: accessLog && states.log.isLevelEnabled('info') ? states.log : null,
    lineFields: jsonFields({
      pid: process.pid,
      route: rc.name,
      version: 'shadow',
      release: sh.release,
      upstream: upstream.origin,
    }),
    ignore: new FieldFilter(sh.compare.ignore),
    redact: new Set(sh.compare.redact.map((h) => h.toLowerCase())),
    outcomes: {
      sent: bound('sent'),
      dropped: bound('dropped'),
      error: bound('error'),
      match: bound('match'),
      mismatch: bound('mismatch'),
    },
  })
}

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
  readonly stickyCookie: string | null
  readonly allowOverride: boolean
  readonly preserveHost: boolean
  readonly headersTimeout: number
  readonly bodyTimeout: number
  /** Shadow mirroring, or null: a route without one takes no mirroring branch beyond this check. */
  readonly shadow: ShadowTarget | null
  /** 1 at each status counted as an error (analysis.errorStatuses); see errorTable. */
  readonly errorStatus: Uint8Array
  /** Lower-case response header carrying a business outcome (`fail`), or null. */
  readonly outcomeHeader: string | null
  /** Retry of failed canary requests on stable, or null (off, or no canary). */
  readonly fallback: Fallback | null
  /** Consecutive canary errors that trip the fuse; 0: off. */
  readonly fuseAfter: number
  /** Set while the fuse holds the canary at 0 (its `config.canaryWeight` then says 0 too). */
  readonly fuse: FuseReport | null
}

/**
 * What outlives snapshots: upstream pools (by origin), metrics and per route and version state, and
 * the logger. Each compile reads from it; requests never touch it.
 */
export class RouteStates {
  readonly #versions = new Map<string, VersionState>()
  readonly #sequences = new Map<string, WeylSequence>()
  readonly #shadowStats = new Map<string, ShadowStats>()
  /**
   * Routes whose fuse tripped: compiled with canary weight 0 until control (or the file) changes the
   * route's weights after the trip (main.ts clears them).
   */
  readonly fuses = new Map<string, FuseReport>()
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
      state = { metrics: this.metrics.bind(route, version), window: new OutcomeWindow(), streak: 0 }
      this.#versions.set(key, state)
    }
    return state
  }

  /** `key` is a route name, or a route name and a purpose (`shop shadow`). */
  sequence(key: string): WeylSequence {
    let seq = this.#sequences.get(key)
    if (!seq) {
      seq = new WeylSequence()
      this.#sequences.set(key, seq)
    }
    return seq
  }

  shadowStats(route: string): ShadowStats {
    let stats = this.#shadowStats.get(route)
    if (!stats) {
      stats = new ShadowStats()
      this.#shadowStats.set(route, stats)
    }
    return stats
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
  const routes = config.routes.map((file): CompiledRoute => {
    const fuse = states.fuses.get(file.name) ?? null
    const rc = fuse === null || file.canaryWeight === 0 ? file : { ...file, canaryWeight: 0 }
    const settings = { connections: rc.connections, maxPending: rc.maxPending, timeouts: rc.timeouts }
    const backend = (version: VersionName, url: string, release: string): Backend => ({
      version,
      release,
      upstream: pools.get(url, settings),
      state: states.version(rc.name, version),
      lineFields: jsonFields({ pid: process.pid, route: rc.name, version, release, upstream: url }),
    })
    const canary = rc.canary ? backend('canary', rc.canary.url, rc.canary.release) : null
    const weight = canary ? rc.canaryWeight : 0
    const a = rc.analysis
    const errorStatus = errorTable(a.errorStatuses)
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
      shadow: rc.shadow ? compileShadow(rc, states, errorStatus, config.log.access) : null,
      errorStatus,
      outcomeHeader: a.outcomeHeader === '' ? null : a.outcomeHeader.toLowerCase(),
      fallback:
        canary !== null && a.fallback.enabled
          ? Object.freeze({
              methods: new Set(a.fallback.methods.map((m) => m.toUpperCase())),
              idempotencyKey:
                a.fallback.idempotencyKey === '' ? null : a.fallback.idempotencyKey.toLowerCase(),
              maxBodyBytes: a.fallback.maxBodyBytes,
            })
          : null,
      fuseAfter: canary !== null ? a.fuse.consecutiveFailures : 0,
      fuse,
    })
  })
  metrics.releaseInfo.reset()
  for (const r of routes) {
    metrics.releaseInfo.labels(r.name, 'stable', r.stable.release).set(1)
    if (r.canary) metrics.releaseInfo.labels(r.name, 'canary', r.canary.release).set(1)
    if (r.config.shadow) metrics.releaseInfo.labels(r.name, 'shadow', r.config.shadow.release).set(1)
  }
  const inUse = new Set<Upstream>()
  for (const r of routes) {
    inUse.add(r.stable.upstream)
    if (r.canary) inUse.add(r.canary.upstream)
    if (r.shadow) inUse.add(r.shadow.upstream)
  }
  pools.retainOnly(inUse)
  return new RouteTable(generation, config, routes)
}
