/**
 * compile(): a route's chain holds only the handlers it uses, and compiling is pure: it sets no gauge and
 * closes no pool; installing the table (RouteStates.adopt) does both.
 */
import pino from 'pino'
import { afterAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import type { ProxyConfig } from '../../config/types.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { compile } from '../../proxy/routes/compile.ts'
import { RouteStates } from '../../proxy/routes/states.ts'
import type { Tracing } from '../../proxy/tracing.ts'
import { UpstreamPools } from '../../proxy/upstream/pools.ts'

const pools = new UpstreamPools()
afterAll(() => pools.destroyAll())
const log = pino({ level: 'silent' })

function config(routes: Record<string, unknown>[]): ProxyConfig {
  const result = validateConfig({ routes })
  if (!result.ok) throw new Error(JSON.stringify(result.issues))
  return result.config as ProxyConfig
}

const up = (port: number) => ({ url: `http://127.0.0.1:${port}` })
const names = (handlers: readonly object[]) => handlers.map((h) => h.constructor.name)

const routes = [
  { name: 'plain', match: { pathPrefix: '/plain' }, stable: up(1) },
  {
    name: 'canary',
    match: { pathPrefix: '/canary' },
    stable: up(1),
    canary: up(2),
    canaryWeight: 10,
    analysis: { fallback: { enabled: true } },
  },
  { name: 'mirrored', match: { pathPrefix: '/mirrored' }, stable: up(1), shadow: up(3) },
]

async function weightGauge(metrics: ProxyMetrics, route: string): Promise<number | undefined> {
  const g = (await metrics.weight.get()).values
  return g.find((v) => v.labels.route === route && v.labels.version === 'canary')?.value
}

describe('compile', () => {
  it('composes health → outcome → fallback → mirror → trace, each only where the route uses it', () => {
    const tracing = {} as Tracing
    const t = compile(
      1,
      config(routes),
      new Map(),
      new RouteStates({ metrics: new ProxyMetrics(), pools, log }),
    )
    const [plain, canary, mirrored] = t.routes
    expect(names(plain!.chain.handlers)).toEqual(['PassiveHealth', 'Outcome'])
    expect(names(canary!.chain.handlers)).toEqual(['PassiveHealth', 'Outcome', 'Fallback'])
    expect(names(mirrored!.chain.handlers)).toEqual(['PassiveHealth', 'Outcome', 'MirrorTee'])
    // A tunnel is neither retried nor copied.
    expect(names(canary!.upgradeChain.handlers)).toEqual(['PassiveHealth', 'Outcome'])
    const traced = compile(
      1,
      config(routes),
      new Map(),
      new RouteStates({ metrics: new ProxyMetrics(), pools, log, tracing }),
    )
    expect(names(traced.routes[1]!.chain.handlers)).toEqual(['PassiveHealth', 'Outcome', 'Fallback', 'Trace'])
    expect(names(traced.routes[1]!.upgradeChain.handlers)).toEqual(['PassiveHealth', 'Outcome', 'Trace'])
    // Every route of a table shares one health (the settings are the table's).
    expect(plain!.chain.handlers[0]).toBe(mirrored!.chain.handlers[0])
  })

  it('is pure: no gauge set and no pool closed until the table is adopted', async () => {
    const metrics = new ProxyMetrics()
    const own = new UpstreamPools()
    const states = new RouteStates({ metrics, pools: own, log })
    const first = compile(1, config(routes), new Map(), states)
    expect(await weightGauge(metrics, 'canary')).toBeUndefined()
    states.adopt(first)
    expect(await weightGauge(metrics, 'canary')).toBe(10)
    const shadowPool = first.routes[2]!.shadow!.upstream
    // The next config drops the mirrored route: compiling it leaves its shadow's pool open ...
    const next = compile(2, config([routes[0]!, { ...routes[1]!, canaryWeight: 30 }]), new Map(), states)
    expect(own.size).toBe(3)
    expect(shadowPool.pool.closed).toBe(false)
    expect(await weightGauge(metrics, 'canary')).toBe(10)
    // ... and installing it closes that pool and sets the gauges.
    states.adopt(next)
    expect(own.size).toBe(2)
    expect(shadowPool.pool.closed).toBe(true)
    expect(await weightGauge(metrics, 'canary')).toBe(30)
    // Pools outlive the swap: the same origin and settings keep the same pool.
    expect(next.routes[0]!.stable.upstream).toBe(first.routes[0]!.stable.upstream)
    await own.closeAll()
  })

  it('zeroes the canary of a route whose fuse tripped, and only there', () => {
    const fuse = { reason: 'r', version: 1, at: 0, release: 'unknown', upstream: up(2).url }
    const t = compile(
      1,
      config(routes),
      new Map([['canary', fuse]]),
      new RouteStates({ metrics: new ProxyMetrics(), pools, log }),
    )
    expect(t.routes[1]!.config.canaryWeight).toBe(0)
    expect(t.routes[1]!.threshold).toBe(0)
    expect(t.routes[1]!.fuse).toBe(fuse)
  })
})
