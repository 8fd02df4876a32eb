/**
 * The `stats` event of GET /v1/events: once a second, per route the proxies reported on, the merged
 * per-version request rate, error rate and p99 of that second (sums and merged histograms across proxies,
 * as analysis.ts merges them), with the route's live verdict, harm counts and proxy sync, which change
 * without a versioned change. It feeds the status page's charts (control/ui/), so nobody polls. Nothing
 * is kept or computed while no one listens on the stream.
 */
import type { RouteReport } from '../config/wire.ts'
import { addInto, emptyCounts, type SecondCounts, summarize } from '../proxy/analysis/window.ts'
import type { AnalysisBook } from './analysis.ts'
import type { Engine } from './engine.ts'
import type { EventHub } from './events.ts'
import type { ProxyRegistry } from './proxies.ts'

export const STATS_INTERVAL_MS = 1000

export interface VersionStats {
  /** Requests per second over the interval, all proxies together. */
  rps: number
  requests: number
  errors: number
  errorRate: number
  p99Ms: number | null
}

export interface StatsEvent {
  route: string
  /** Epoch ms at the end of the interval, and its length. */
  at: number
  intervalMs: number
  stable: VersionStats
  /** Null when no proxy reported canary traffic counts (the route has no canary). */
  canary: VersionStats | null
  /** Only while the route has a rollout (its last one): the verdict, its reason, and the harm account. */
  analysis: {
    verdict: string | null
    reason: string | null
    harmed: number
    saved: number
    canaryRequests: number
  } | null
  proxies: { live: number; inSync: number; stale: string[] }
}

interface Sums {
  stable: SecondCounts
  canary: SecondCounts | null
}

export interface StatsDeps {
  readonly engine: Engine
  readonly events: EventHub
  readonly proxies: ProxyRegistry
  readonly analysis?: AnalysisBook
}

export class StatsFeed {
  readonly #sums = new Map<string, Sums>()
  readonly #timer: NodeJS.Timeout
  #last: number
  readonly #d: StatsDeps

  constructor(d: StatsDeps, intervalMs = STATS_INTERVAL_MS) {
    this.#d = d
    this.#last = d.engine.now()
    this.#timer = setInterval(() => this.flush(), intervalMs)
    this.#timer.unref()
  }

  /** One proxy's report on one route it serves (link.ts calls it with every report). */
  add(route: string, report: RouteReport): void {
    if (this.#d.events.size === 0) return
    let s = this.#sums.get(route)
    if (s === undefined) {
      s = { stable: emptyCounts(), canary: null }
      this.#sums.set(route, s)
    }
    addInto(s.stable, report.stable)
    if (report.canary !== null) addInto((s.canary ??= emptyCounts()), report.canary)
  }

  /** Publish one `stats` event per route reported on since the last flush, and start again. */
  flush(): void {
    const now = this.#d.engine.now()
    const intervalMs = Math.max(1, now - this.#last)
    this.#last = now
    if (this.#sums.size === 0) return
    const routes = this.#d.engine.state.routes
    for (const [name, s] of this.#sums) {
      const r = Object.hasOwn(routes, name) ? routes[name] : undefined
      if (r === undefined) continue
      const a = this.#d.analysis?.view(name, r.rollout) ?? null
      const sync = this.#d.proxies.sync(r, r.revision, now)
      const event: StatsEvent = {
        route: name,
        at: now,
        intervalMs,
        stable: versionStats(s.stable, intervalMs),
        canary: s.canary === null ? null : versionStats(s.canary, intervalMs),
        analysis:
          a === null
            ? null
            : {
                verdict: a.verdict,
                reason: a.reason,
                harmed: a.harmed,
                saved: a.saved,
                canaryRequests: a.canaryRequests,
              },
        proxies: { live: sync.live, inSync: sync.applied, stale: sync.stale },
      }
      this.#d.events.publish('stats', event)
    }
    this.#sums.clear()
  }

  close(): void {
    clearInterval(this.#timer)
  }
}

function versionStats(c: SecondCounts, intervalMs: number): VersionStats {
  const s = summarize(c)
  return {
    rps: Math.round((c.requests * 1000 * 100) / intervalMs) / 100,
    requests: s.requests,
    errors: s.errors,
    errorRate: s.errorRate,
    p99Ms: s.p99Ms,
  }
}
