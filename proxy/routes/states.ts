/**
 * What outlives snapshots, and what every compile of them shares: upstream pools (by origin and
 * settings), metric children and outcome windows per route and version, pick sequences, shadow
 * statistics, and the process's logger, line sink and tracing. Compiling a table only reads or
 * memoizes here (creating a pool opens no connection); `adopt` is the one place a new table takes
 * effect: gauges and release info set, pools no route uses any more closed.
 */
import type { Logger } from 'pino'
import { OutcomeWindow } from '../analysis/window.ts'
import type { FuseTrip } from '../chain/outcome.ts'
import type { LineSink } from '../log.ts'
import type { ProxyMetrics, VersionName } from '../metrics.ts'
import { ShadowStats } from '../shadow/stats.ts'
import { WeylSequence } from '../split/weighted.ts'
import type { Tracing } from '../tracing.ts'
import type { Upstream, UpstreamPools } from '../upstream/pools.ts'
import type { RouteTable, VersionState } from './table.ts'

export interface RouteStatesOptions {
  readonly metrics: ProxyMetrics
  readonly pools: UpstreamPools
  readonly log: Logger
  /** Where access and shadow lines go; none: they are not written. */
  readonly sink?: LineSink | null
  readonly tracing?: Tracing | null
  /** A route's fuse tripped (main.ts zeroes its canary). */
  readonly onFuse?: FuseTrip
}

const NO_FUSE: FuseTrip = () => {}

export class RouteStates {
  readonly #versions = new Map<string, VersionState>()
  readonly #sequences = new Map<string, WeylSequence>()
  readonly #shadowStats = new Map<string, ShadowStats>()
  readonly metrics: ProxyMetrics
  readonly pools: UpstreamPools
  readonly log: Logger
  readonly sink: LineSink | null
  readonly tracing: Tracing | null
  readonly onFuse: FuseTrip

  constructor(o: RouteStatesOptions) {
    this.metrics = o.metrics
    this.pools = o.pools
    this.log = o.log
    this.sink = o.sink ?? null
    this.tracing = o.tracing ?? null
    this.onFuse = o.onFuse ?? NO_FUSE
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
      this.metrics.bindShadow(route, stats)
    }
    return stats
  }

  /** The effects of installing `table`: weight gauges, release info, and closing pools left unused. */
  adopt(table: RouteTable): void {
    const { metrics, pools } = this
    metrics.releaseInfo.reset()
    const inUse = new Set<Upstream>()
    for (const r of table.routes) {
      const weight = r.canary === null ? 0 : r.config.canaryWeight
      metrics.weight.labels(r.name, 'stable').set(100 - weight)
      metrics.weight.labels(r.name, 'canary').set(weight)
      metrics.releaseInfo.labels(r.name, 'stable', r.stable.release).set(1)
      inUse.add(r.stable.upstream)
      if (r.canary) {
        metrics.releaseInfo.labels(r.name, 'canary', r.canary.release).set(1)
        inUse.add(r.canary.upstream)
      }
      if (r.shadow) {
        metrics.releaseInfo.labels(r.name, 'shadow', r.shadow.config.release).set(1)
        inUse.add(r.shadow.upstream)
      }
    }
    pools.retainOnly(inUse)
  }
}
