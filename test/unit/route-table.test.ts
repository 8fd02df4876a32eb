import pino from 'pino'
import { afterAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import type { ProxyConfig } from '../../config/types.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { compile } from '../../proxy/routes/compile.ts'
import { RouteStates } from '../../proxy/routes/states.ts'
import { hostName } from '../../proxy/routes/table.ts'
import { pickBackend } from '../../proxy/split/pick.ts'
import { UpstreamPools } from '../../proxy/upstream/pools.ts'

const pools = new UpstreamPools()
afterAll(() => pools.destroyAll())

function table(routes: Record<string, unknown>[]) {
  const result = validateConfig({ routes })
  if (!result.ok) throw new Error(JSON.stringify(result.issues))
  const metrics = new ProxyMetrics()
  return compile(
    1,
    result.config as ProxyConfig,
    new Map(),
    new RouteStates({ metrics, pools, log: pino({ level: 'silent' }) }),
  )
}

const up = (port: number) => ({ url: `http://127.0.0.1:${port}` })

describe('route matching', () => {
  const t = table([
    { name: 'any', stable: up(1) },
    { name: 'any-api', match: { pathPrefix: '/api' }, stable: up(2) },
    { name: 'shop', match: { host: 'shop.example.com' }, stable: up(3) },
    { name: 'shop-api', match: { host: 'shop.example.com', pathPrefix: '/api/v2' }, stable: up(4) },
    { name: 'wild', match: { host: '*.example.com' }, stable: up(5) },
    { name: 'wild-deep', match: { host: '*.eu.example.com' }, stable: up(6) },
  ])

  it.each([
    ['shop.example.com', '/', 'shop'],
    ['SHOP.example.com:8443', '/api/v2/orders', 'shop-api'],
    ['shop.example.com', '/api/v1', 'shop'],
    ['cart.example.com', '/x', 'wild'],
    ['a.eu.example.com', '/x', 'wild-deep'],
    ['example.com', '/x', 'any'],
    ['other.org', '/api/x', 'any-api'],
    [undefined, '/', 'any'],
    ['[::1]:8080', '/api', 'any-api'],
  ])('%s %s → %s', (host, path, expected) => {
    expect(t.match(host, path)?.name).toBe(expected)
  })

  it('answers no route when nothing matches', () => {
    const only = table([{ name: 'api', match: { pathPrefix: '/api' }, stable: up(1) }])
    expect(only.match('x', '/other')).toBeNull()
  })

  it('strips ports and lower-cases host names, keeping IPv6 brackets', () => {
    expect(hostName('Example.COM:80')).toBe('example.com')
    expect(hostName('[::1]:80')).toBe('[::1]')
    expect(hostName('localhost')).toBe('localhost')
  })
})

describe('pick', () => {
  it('honours the override only where the route allows it', () => {
    const t = table([
      { name: 'open', match: { pathPrefix: '/open' }, stable: up(1), canary: up(2), allowOverride: true },
      { name: 'closed', stable: up(1), canary: up(2) },
    ])
    const open = t.match(undefined, '/open')!
    const closed = t.match(undefined, '/')!
    expect(pickBackend(open, 'canary', undefined)?.version).toBe('canary')
    expect(pickBackend(closed, 'canary', undefined)?.version).toBe('stable')
    expect(pickBackend(open, 'bogus', undefined)?.version).toBe('stable')
  })

  it('sends a sticky user to the same version every time', () => {
    const t = table([{ name: 'r', stable: up(1), canary: up(2), canaryWeight: 30 }])
    const r = t.match(undefined, '/')!
    for (let i = 0; i < 200; i++) {
      const first = pickBackend(r, undefined, `user-${i}`)!.version
      for (let k = 0; k < 5; k++) expect(pickBackend(r, undefined, `user-${i}`)!.version).toBe(first)
    }
  })

  it('fails over from an ejected version to the other, and gives null when both are ejected', () => {
    const t = table([{ name: 'r', stable: up(11), canary: up(12), canaryWeight: 100 }])
    const r = t.match(undefined, '/')!
    expect(pickBackend(r, undefined, undefined)!.version).toBe('canary')
    r.canary!.upstream.connectFailed(1, 60_000)
    expect(pickBackend(r, undefined, undefined)!.version).toBe('stable')
    r.stable.upstream.connectFailed(1, 60_000)
    expect(pickBackend(r, undefined, undefined)).toBeNull()
  })

  it('keeps pools across snapshots with the same upstreams', () => {
    const a = table([{ name: 'r', stable: up(21), canary: up(22), canaryWeight: 5 }])
    const b = table([{ name: 'r', stable: up(21), canary: up(22), canaryWeight: 50 }])
    expect(b.routes[0]!.stable.upstream).toBe(a.routes[0]!.stable.upstream)
    expect(b.routes[0]!.canary!.upstream).toBe(a.routes[0]!.canary!.upstream)
  })
})
