/**
 * The contract's Prometheus metrics on a registry of our own. Children are bound once per route and
 * version (and per status code on first use), so a request never looks up labels.
 */
import client, { type Counter, type Gauge, type Histogram } from 'prom-client'

export type VersionName = 'stable' | 'canary' | 'shadow'

/** ~1 ms to 30 s, roughly ×2.5 per step: fine where SLOs live (10–500 ms), coarse in the tail. */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

type CounterChild = Counter.Internal

export class ProxyMetrics {
  readonly registry = new client.Registry()
  readonly requests: Counter<'route' | 'version' | 'code'>
  readonly duration: Histogram<'route' | 'version'>
  readonly weight: Gauge<'route' | 'version'>
  readonly releaseInfo: Gauge<'route' | 'version' | 'release'>
  readonly shadow: Counter<'route' | 'outcome'>
  readonly rollbacks: Counter<'route' | 'reason'>

  constructor() {
    const registers = [this.registry]
    client.collectDefaultMetrics({ register: this.registry })
    this.requests = new client.Counter({
      name: 'veer_requests_total',
      help: 'Requests proxied, by route, version and status code (code="error" when no response came back)',
      labelNames: ['route', 'version', 'code'],
      registers,
    })
    this.duration = new client.Histogram({
      name: 'veer_request_duration_seconds',
      help: 'Time from request start to response end, seconds',
      labelNames: ['route', 'version'],
      buckets: LATENCY_BUCKETS,
      registers,
    })
    this.weight = new client.Gauge({
      name: 'veer_route_weight',
      help: 'Share of traffic each version gets, percent',
      labelNames: ['route', 'version'],
      registers,
    })
    this.releaseInfo = new client.Gauge({
      name: 'veer_release_info',
      help: 'Release id of each version of a route (value is always 1)',
      labelNames: ['route', 'version', 'release'],
      registers,
    })
    this.shadow = new client.Counter({
      name: 'veer_shadow_requests_total',
      help: 'Shadow (mirrored) requests by outcome: sent, dropped, error, match, mismatch',
      labelNames: ['route', 'outcome'],
      registers,
    })
    this.rollbacks = new client.Counter({
      name: 'veer_rollbacks_total',
      help: 'Automatic rollbacks of a route by reason',
      labelNames: ['route', 'reason'],
      registers,
    })
  }

  bind(route: string, version: VersionName): VersionMetrics {
    return new VersionMetrics(this, route, version)
  }
}

/** One route and version's bound children. */
export class VersionMetrics {
  readonly #metrics: ProxyMetrics
  readonly #route: string
  readonly #version: VersionName
  readonly #byCode: (CounterChild | undefined)[] = new Array(600)
  readonly #error: CounterChild
  readonly #duration: Histogram.Internal<string>

  constructor(metrics: ProxyMetrics, route: string, version: VersionName) {
    this.#metrics = metrics
    this.#route = route
    this.#version = version
    this.#error = metrics.requests.labels(route, version, 'error')
    this.#duration = metrics.duration.labels(route, version)
  }

  /** `status` 0 means no response came back. */
  record(status: number, seconds: number): void {
    this.#duration.observe(seconds)
    if (status === 0 || status >= 600) {
      this.#error.inc()
      return
    }
    let child = this.#byCode[status]
    if (child === undefined) {
      child = this.#metrics.requests.labels(this.#route, this.#version, String(status))
      this.#byCode[status] = child
    }
    child.inc()
  }
}
