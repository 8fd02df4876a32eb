/**
 * The admin listener: /healthz, /readyz, /metrics, /v1/config, /v1/stats, /v1/shadow/diffs. What it
 * shows comes through `AdminViews`: from this process (`localViews`), or gathered from the workers of a
 * `--workers` cluster (cluster.ts). Stats travel as mergeable counts and are summed before they are
 * summarised, so one process and many give the same kind of answer.
 */
import { createServer, type Server, type ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import type { FuseReport } from '../config/wire.ts'
import { Analysis, DEFAULT_ANALYSIS } from './analysis/judge.ts'
import { addCounts, type SecondCounts, summarize, type WindowSummary } from './analysis/window.ts'
import type { ControlStatus } from './control/link.ts'
import type { ProxyMetrics } from './metrics.ts'
import type { Backend, RouteTable } from './routes/table.ts'
import type { DiffSample } from './shadow/stats.ts'
import { type ShadowCounts, shadowSummary } from './shadow/stats.ts'

export interface AdminSource {
  readonly table: RouteTable
  readonly draining: boolean
  readonly configHash: string
  /** The link to veer control; null when the proxy runs on its file alone. */
  readonly control: ControlStatus | null
}

/** One process's outcome counts per route and version: what a worker sends the primary. */
export interface RawStats {
  version: number
  windowSeconds: number
  routes: {
    name: string
    stable: RawVersion
    canary: RawVersion | null
    shadow: (RawVersion & { percent: number; counts: ShadowCounts }) | null
    /** Set while this process's fuse holds the canary at 0. */
    fuse: FuseReport | null
  }[]
}

interface RawVersion {
  release: string
  upstream: string
  ejected: boolean
  inflight: number
  totals: SecondCounts
}

export interface AdminViews {
  readonly draining: boolean
  /** 0 until the config is loaded and every listener is up. */
  configVersion(): number
  metrics(): Promise<{ contentType: string; text: string }>
  config(): Promise<unknown>
  stats(): Promise<RawStats[]>
  diffs(): Promise<Record<string, DiffSample[]>[]>
}

export function rawStats(table: RouteTable): RawStats {
  const now = performance.now()
  const version = (b: Backend): RawVersion => ({
    release: b.release,
    upstream: b.upstream.origin,
    ejected: b.upstream.isEjected(),
    inflight: b.upstream.inflight,
    totals: b.state.window.totals(now),
  })
  return {
    version: table.generation,
    windowSeconds: table.routes[0]?.stable.state.window.seconds ?? 30,
    routes: table.routes.map((r) => ({
      name: r.name,
      stable: version(r.stable),
      canary: r.canary ? version(r.canary) : null,
      shadow: r.shadow
        ? {
            release: r.shadow.config.release,
            upstream: r.shadow.upstream.origin,
            // Read, not isEjected(): that would end the ejection without the shadow's single probe.
            ejected: r.shadow.upstream.ejectedUntil > Date.now(),
            inflight: r.shadow.upstream.inflight,
            totals: r.shadow.state.window.totals(now),
            percent: r.shadow.config.percent,
            counts: r.shadow.stats.counts(),
          }
        : null,
      fuse: r.fuse,
    })),
  }
}

export function rawDiffs(table: RouteTable): Record<string, DiffSample[]> {
  const out: Record<string, DiffSample[]> = {}
  for (const r of table.routes) if (r.shadow !== null) out[r.name] = r.shadow.stats.diffs()
  return out
}

export function configView(source: AdminSource): unknown {
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
      // Why the canary weight is 0 here whatever the file or control says, until cleared.
      fuse: r.fuse,
      stable: r.config.stable,
      canary: r.config.canary ?? null,
      shadow: r.config.shadow ?? null,
      // The rules as configured, and whether they send traffic now (not while the fuse holds).
      canaryMatch: r.config.canaryMatch,
      canaryMatchActive: r.canaryMatch !== null,
      sticky: r.config.sticky ?? null,
      allowOverride: r.allowOverride,
      preserveHost: r.preserveHost,
      timeouts: r.config.timeouts,
      connections: r.config.connections,
    })),
  }
}

/** This process's own views. */
export function localViews(source: AdminSource, metrics: ProxyMetrics): AdminViews {
  return {
    get draining() {
      return source.draining
    },
    configVersion: () => source.table.generation,
    metrics: async () => ({
      contentType: metrics.registry.contentType,
      text: await metrics.registry.metrics(),
    }),
    config: async () => configView(source),
    stats: async () => [rawStats(source.table)],
    diffs: async () => [rawDiffs(source.table)],
  }
}

/** Sum the counts of every process, then summarise. */
export function statsView(parts: readonly RawStats[]): unknown {
  const first = parts[0]
  if (first === undefined) return { version: 0, routes: [] }
  const version = (list: RawVersion[]) => {
    const totals = merged(list)
    return {
      release: list[0]!.release,
      upstream: list[0]!.upstream,
      ejected: list.some((v) => v.ejected),
      inflight: list.reduce((n, v) => n + v.inflight, 0),
      window: { seconds: first.windowSeconds, ...summarize(totals) },
    }
  }
  return {
    version: first.version,
    routes: first.routes.map((r, i) => {
      const same = parts.map((p) => p.routes[i]!).filter((x) => x?.name === r.name)
      const shadows = same.flatMap((x) => (x.shadow ? [x.shadow] : []))
      return {
        name: r.name,
        stable: version(same.map((x) => x.stable)),
        canary: r.canary ? version(canaries(same)) : null,
        shadow: shadows.length > 0 ? shadowView(version(shadows), shadows, same) : null,
        verdict: r.canary ? windowVerdict(merged(same.map((x) => x.stable)), merged(canaries(same))) : null,
        fuse: same.find((x) => x.fuse != null)?.fuse ?? null,
      }
    }),
  }
}

function shadowView(
  own: { release: string; window: WindowSummary },
  shadows: readonly (RawVersion & { percent: number; counts: ShadowCounts })[],
  same: readonly RawStats['routes'][number][],
) {
  const summary = shadowSummary(shadows.map((s) => s.counts))
  // Judged like a canary, with what users were served (stable and canary) as the baseline.
  const primary = merged([...same.map((x) => x.stable), ...canaries(same)])
  const verdict = windowVerdict(primary, merged([...shadows]))
  const base = summarize(primary).p99Ms
  const p99 = own.window.p99Ms
  const ratio = base !== null && p99 !== null && base > 0 ? `${(p99 / base).toFixed(1)}× primary` : 'unknown'
  const headline =
    `shadow ${own.release}: p99 ${ratio}, ${(Number(summary.mismatchRate) * 100).toFixed(1)}% mismatches, ` +
    `errors ${(own.window.errorRate * 100).toFixed(1)}%, verdict ${verdict.result}`
  return { ...own, percent: shadows[0]!.percent, ...summary, headline, verdict }
}

function merged(list: readonly RawVersion[]): SecondCounts {
  return list.map((v) => v.totals).reduce(addCounts)
}

function canaries(routes: readonly RawStats['routes'][number][]): RawVersion[] {
  return routes.flatMap((x) => (x.canary ? [x.canary] : []))
}

/**
 * The judge's verdict on this window alone (one look, default settings; proxy/analysis/judge.ts), with
 * its checks and figures. Control's verdict, which decides rollbacks, is over the whole rollout from
 * every proxy with the plan's settings (GET /v1/routes/{route} on control).
 */
function windowVerdict(stable: SecondCounts, canary: SecondCounts) {
  const a = new Analysis(DEFAULT_ANALYSIS)
  a.add(stable, canary)
  const j = a.judge()
  return { result: j.result, reason: j.reason, checks: j.checks }
}

function diffsView(parts: readonly Record<string, DiffSample[]>[], only: string | null): unknown {
  const routes: Record<string, DiffSample[]> = {}
  for (const part of parts) {
    for (const [name, list] of Object.entries(part)) {
      if (only !== null && name !== only) continue
      routes[name] = [...(routes[name] ?? []), ...list]
    }
  }
  for (const list of Object.values(routes)) list.sort((a, b) => a.time.localeCompare(b.time))
  return { routes }
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' })
  res.end(text)
}

export function createAdminServer(views: AdminViews): Server {
  return createServer({ requestTimeout: 10_000, headersTimeout: 5_000 }, (req, res) => {
    const [path, query] = (req.url ?? '/').split('?')
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD')
      return json(res, 405, { error: 'method_not_allowed', message: 'the admin API is read-only: use GET' })
    }
    const answer = (work: Promise<unknown>) =>
      work.then(
        (body) => json(res, 200, body),
        (err: Error) => json(res, 500, { error: 'admin_failed', message: err.message }),
      )
    switch (path) {
      case '/healthz':
        return json(res, 200, { status: 'ok' })
      case '/readyz': {
        if (views.draining) return json(res, 503, { status: 'draining' })
        const configVersion = views.configVersion()
        return configVersion === 0
          ? json(res, 503, { status: 'starting' })
          : json(res, 200, { status: 'ready', configVersion })
      }
      case '/metrics':
        views.metrics().then(
          ({ contentType, text }) => {
            res.writeHead(200, { 'content-type': contentType })
            res.end(text)
          },
          (err: Error) => json(res, 500, { error: 'metrics_failed', message: err.message }),
        )
        return
      case '/v1/config':
        return void answer(views.config())
      case '/v1/stats':
        return void answer(views.stats().then(statsView))
      case '/v1/shadow/diffs':
        return void answer(
          views.diffs().then((d) => diffsView(d, new URLSearchParams(query ?? '').get('route'))),
        )
      default:
        return json(res, 404, {
          error: 'not_found',
          message: `no admin endpoint ${path}; try /healthz, /readyz, /metrics, /v1/config, /v1/stats or /v1/shadow/diffs`,
        })
    }
  })
}
