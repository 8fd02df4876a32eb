/**
 * The contract's Prometheus metrics. prom-client's registry formats them and adds Node's process
 * metrics, but the two per-request metrics are plain typed arrays behind custom collectors: a bound
 * prom-client child still validates and hashes its labels on every `inc`/`observe`, while a request
 * here only increments two array slots and adds to a sum. The text is built when /metrics is scraped.
 */

import client, { type Counter, type Gauge } from 'prom-client'
import { GRPC_CODES } from '../config/grpc-codes.ts'
import { ROLLBACK_REASONS } from '../config/wire.ts'

export type VersionName = 'stable' | 'canary' | 'shadow'

/** ~1 ms to 30 s, roughly ×2.5 per step: fine where SLOs live (10–500 ms), coarse in the tail. */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

/** One route and version's counts: by status code (slot 0 = no response) and latency buckets. */
export class VersionMetrics {
  readonly route: string
  readonly version: VersionName
  readonly byCode = new Float64Array(600)
  /** gRPC calls, by status code and grpc-status: `code * 17 + grpc`; made on the first call. */
  byGrpc: Float64Array | null = null
  /** Per-bucket (not cumulative) counts; the last slot is above the largest bound. */
  readonly buckets = new Float64Array(LATENCY_BUCKETS.length + 1)
  sum = 0
  count = 0

  constructor(route: string, version: VersionName) {
    this.route = route
    this.version = version
  }

  /** `status` 0 means no response came back; `grpc` is a gRPC call's status, -1 for other requests. */
  record(status: number, seconds: number, grpc = -1): void {
    const code = status > 0 && status < 600 ? status : 0
    if (grpc < 0) this.byCode[code]!++
    else (this.byGrpc ??= new Float64Array(600 * GRPC_CODES.length))[code * GRPC_CODES.length + grpc]!++
    let b = 0
    while (b < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[b]!) b++
    this.buckets[b]!++
    this.sum += seconds
    this.count++
  }
}

type Value = { labels: Record<string, string | number>; value: number; metricName?: string }

const REQUESTS_HELP =
  'Requests proxied, by route, version and status code (code="error" when no response came back), and grpc_code for gRPC calls'
const DURATION_HELP = 'Time from request start to response end, seconds'
const SHADOW_HELP = 'Shadow (mirrored) requests by outcome: sent, dropped, error, match, mismatch'

/**
 * A route's shadow counts (shadow/stats.ts ShadowStats), read when /metrics is scraped: a copy counts
 * itself with `++` on plain fields, not with a bound prom-client child that hashes its labels per `inc`.
 */
export interface ShadowOutcomes {
  readonly sent: number
  readonly dropped: number
  readonly errors: number
  /** match + mismatch */
  readonly compared: number
  readonly mismatches: number
}

export class ProxyMetrics {
  readonly registry = new client.Registry()
  readonly weight: Gauge<'route' | 'version'>
  readonly releaseInfo: Gauge<'route' | 'version' | 'release'>
  readonly rollbacks: Counter<'route' | 'reason'>
  readonly #versions: VersionMetrics[] = []
  readonly #shadows: { route: string; counts: ShadowOutcomes }[] = []

  constructor() {
    const registers = [this.registry]
    client.collectDefaultMetrics({ register: this.registry })
    const versions = this.#versions
    this.registry.registerMetric({
      name: 'veer_requests_total',
      help: REQUESTS_HELP,
      type: 'counter',
      aggregator: 'sum',
      get: () => {
        const values: Value[] = []
        for (const v of versions) {
          for (let code = 0; code < 600; code++) {
            const n = v.byCode[code]!
            if (n > 0)
              values.push({
                labels: { route: v.route, version: v.version, code: code === 0 ? 'error' : code },
                value: n,
              })
          }
          // gRPC calls carry grpc_code; other series leave it out, which PromQL reads as grpc_code="".
          const g = v.byGrpc
          if (g !== null) {
            for (let i = 0; i < g.length; i++) {
              const n = g[i]!
              if (n === 0) continue
              const code = Math.floor(i / GRPC_CODES.length)
              values.push({
                labels: {
                  route: v.route,
                  version: v.version,
                  code: code === 0 ? 'error' : code,
                  grpc_code: GRPC_CODES[i % GRPC_CODES.length]!,
                },
                value: n,
              })
            }
          }
        }
        return {
          name: 'veer_requests_total',
          help: REQUESTS_HELP,
          type: 'counter',
          values,
          aggregator: 'sum',
        }
      },
    } as unknown as client.Metric)
    this.registry.registerMetric({
      name: 'veer_request_duration_seconds',
      help: DURATION_HELP,
      type: 'histogram',
      aggregator: 'sum',
      get: () => {
        const values: Value[] = []
        for (const v of versions) {
          const labels = { route: v.route, version: v.version }
          let cumulative = 0
          for (let b = 0; b < LATENCY_BUCKETS.length; b++) {
            cumulative += v.buckets[b]!
            values.push({
              metricName: 'veer_request_duration_seconds_bucket',
              labels: { le: LATENCY_BUCKETS[b]!, ...labels },
              value: cumulative,
            })
          }
          values.push({
            metricName: 'veer_request_duration_seconds_bucket',
            labels: { le: '+Inf', ...labels },
            value: v.count,
          })
          values.push({ metricName: 'veer_request_duration_seconds_sum', labels, value: v.sum })
          values.push({ metricName: 'veer_request_duration_seconds_count', labels, value: v.count })
        }
        return {
          name: 'veer_request_duration_seconds',
          help: DURATION_HELP,
          type: 'histogram',
          values,
          aggregator: 'sum',
        }
      },
    } as unknown as client.Metric)
    this.weight = new client.Gauge({
      name: 'veer_route_weight',
      help: 'Share of traffic each version gets, percent',
      labelNames: ['route', 'version'],
      // Every worker of a --workers cluster holds the same weight: report it once, not summed.
      aggregator: 'first',
      registers,
    })
    this.releaseInfo = new client.Gauge({
      name: 'veer_release_info',
      help: 'Release id of each version of a route (value is always 1)',
      labelNames: ['route', 'version', 'release'],
      aggregator: 'first',
      registers,
    })
    const shadows = this.#shadows
    this.registry.registerMetric({
      name: 'veer_shadow_requests_total',
      help: SHADOW_HELP,
      type: 'counter',
      aggregator: 'sum',
      get: () => {
        const values: Value[] = []
        for (const { route, counts: c } of shadows) {
          // A series appears with its first count, as a prom-client counter's does.
          const add = (outcome: string, value: number) => {
            if (value > 0) values.push({ labels: { route, outcome }, value })
          }
          add('sent', c.sent)
          add('dropped', c.dropped)
          add('error', c.errors)
          add('match', c.compared - c.mismatches)
          add('mismatch', c.mismatches)
        }
        return {
          name: 'veer_shadow_requests_total',
          help: SHADOW_HELP,
          type: 'counter',
          values,
          aggregator: 'sum',
        }
      },
    } as unknown as client.Metric)
    this.rollbacks = new client.Counter({
      name: 'veer_rollbacks_total',
      help: "Automatic rollbacks applied to a route by reason: this proxy's fuse, or control's (the failed check, inconclusive, fuse, smoke)",
      labelNames: ['route', 'reason'],
      // Each worker of a --workers cluster applies control's rollback: counted once, not per worker.
      aggregator: 'max',
      registers,
    })
  }

  /** Called once per route and version (route-table.ts keeps the result across snapshots). */
  bind(route: string, version: VersionName): VersionMetrics {
    // At 0 from the start: a counter that appears at 1 is no increase() to Prometheus.
    if (version === 'stable')
      for (const reason of ROLLBACK_REASONS) this.rollbacks.labels(route, reason).inc(0)
    const v = new VersionMetrics(route, version)
    this.#versions.push(v)
    return v
  }

  /** Called once per route with a shadow (states.ts keeps `counts` across snapshots). */
  bindShadow(route: string, counts: ShadowOutcomes): void {
    this.#shadows.push({ route, counts })
  }
}
