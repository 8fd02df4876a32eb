/** The admin listener: /healthz, /readyz, /metrics, /v1/config, /v1/stats. */
import { createServer, type Server, type ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import type { ControlStatus } from './control-link.ts'
import type { ProxyMetrics } from './metrics.ts'
import type { Backend, RouteTable } from './route-table.ts'

export interface AdminSource {
  readonly table: RouteTable
  readonly draining: boolean
  readonly configHash: string
  /** The link to veer control; null when the proxy runs on its file alone. */
  readonly control: ControlStatus | null
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' })
  res.end(text)
}

export function createAdminServer(source: AdminSource, metrics: ProxyMetrics): Server {
  return createServer({ requestTimeout: 10_000, headersTimeout: 5_000 }, (req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD')
      return json(res, 405, { error: 'method_not_allowed', message: 'the admin API is read-only: use GET' })
    }
    switch (path) {
      case '/healthz':
        return json(res, 200, { status: 'ok' })
      case '/readyz':
        return source.draining
          ? json(res, 503, { status: 'draining' })
          : json(res, 200, { status: 'ready', configVersion: source.table.generation })
      case '/metrics':
        metrics.registry.metrics().then(
          (text) => {
            res.writeHead(200, { 'content-type': metrics.registry.contentType })
            res.end(text)
          },
          (err: Error) => json(res, 500, { error: 'metrics_failed', message: err.message }),
        )
        return
      case '/v1/config':
        return json(res, 200, configView(source))
      case '/v1/stats':
        return json(res, 200, statsView(source.table))
      case '/v1/shadow/diffs':
        return json(
          res,
          200,
          diffsView(source.table, new URLSearchParams((req.url ?? '').split('?')[1] ?? '')),
        )
      default:
        return json(res, 404, {
          error: 'not_found',
          message: `no admin endpoint ${path}; try /healthz, /readyz, /metrics, /v1/config, /v1/stats or /v1/shadow/diffs`,
        })
    }
  })
}

function configView(source: AdminSource): unknown {
  const table = source.table
  return {
    version: table.generation,
    hash: source.configHash,
    ...(source.control === null ? {} : { control: source.control }),
    routes: table.routes.map((r) => ({
      name: r.name,
      match: r.config.match,
      weights: {
        stable: 100 - (r.canary ? r.config.canaryWeight : 0),
        canary: r.canary ? r.config.canaryWeight : 0,
      },
      stable: r.config.stable,
      canary: r.config.canary ?? null,
      shadow: r.config.shadow ?? null,
      sticky: r.config.sticky ?? null,
      allowOverride: r.allowOverride,
      preserveHost: r.preserveHost,
      timeouts: r.config.timeouts,
      connections: r.config.connections,
    })),
  }
}

/** Recent mismatches per route (sensitive headers redacted); `?route=NAME` for one route. */
function diffsView(table: RouteTable, query: URLSearchParams): unknown {
  const only = query.get('route')
  const routes: Record<string, unknown> = {}
  for (const r of table.routes) {
    if (r.shadow === null || (only !== null && r.name !== only)) continue
    routes[r.name] = r.shadow.stats.diffs()
  }
  return { routes }
}

function statsView(table: RouteTable): unknown {
  const now = performance.now()
  const version = (b: Backend) => ({
    release: b.release,
    upstream: b.upstream.origin,
    ejected: b.upstream.isEjected(),
    inflight: b.upstream.inflight,
    window: { seconds: b.state.window.seconds, ...b.state.window.summary(now) },
  })
  return {
    version: table.generation,
    routes: table.routes.map((r) => ({
      name: r.name,
      stable: version(r.stable),
      canary: r.canary ? version(r.canary) : null,
      shadow: r.shadow
        ? {
            release: r.shadow.config.release,
            upstream: r.shadow.upstream.origin,
            percent: r.shadow.config.percent,
            inflight: r.shadow.upstream.inflight,
            window: { seconds: r.shadow.state.window.seconds, ...r.shadow.state.window.summary(now) },
            ...r.shadow.stats.summary(),
          }
        : null,
      // The judge (in-proxy analysis) is not part of this build yet: no verdict is ever made up.
      verdict: 'none',
    })),
  }
}
