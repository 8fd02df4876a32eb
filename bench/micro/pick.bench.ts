// pickBackend: which version serves a request, on routes compiled as the proxy compiles them.
import pino from 'pino'
import { afterAll, test } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import type { ProxyConfig } from '../../config/types.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { compile } from '../../proxy/routes/compile.ts'
import { RouteStates } from '../../proxy/routes/states.ts'
import { pickBackend } from '../../proxy/split/pick.ts'
import { UpstreamPools } from '../../proxy/upstream/pools.ts'
import { BATCH, nsPerOp, sink } from './report.ts'

const pools = new UpstreamPools()
afterAll(() => pools.destroyAll())

const up = (port: number) => ({ url: `http://127.0.0.1:${port}` })
const result = validateConfig({
  routes: [
    { name: 'plain', match: { pathPrefix: '/plain' }, stable: up(1) },
    { name: 'weighted', match: { pathPrefix: '/weighted' }, stable: up(1), canary: up(2), canaryWeight: 20 },
    {
      name: 'sticky',
      match: { pathPrefix: '/sticky' },
      stable: up(1),
      canary: up(2),
      canaryWeight: 20,
      sticky: { header: 'x-user-id' },
      allowOverride: true,
    },
  ],
})
if (!result.ok) throw new Error(JSON.stringify(result.issues))
const table = compile(
  1,
  result.config as ProxyConfig,
  new Map(),
  new RouteStates({ metrics: new ProxyMetrics(), pools, log: pino({ level: 'silent' }) }),
)
const plain = table.match(undefined, '/plain')!
const weighted = table.match(undefined, '/weighted')!
const sticky = table.match(undefined, '/sticky')!
const users = Array.from({ length: 1024 }, (_, i) => `user-${(i * 7919) % 100_000}`)

test('pickBackend', async ({ bench }) => {
  await nsPerOp(
    bench,
    bench('pickBackend: stable only', () => {
      for (let i = 0; i < BATCH; i++) sink.o = pickBackend(plain, undefined, undefined)
    }),
    bench('pickBackend: 20% canary, weighted', () => {
      for (let i = 0; i < BATCH; i++) sink.o = pickBackend(weighted, undefined, undefined)
    }),
    bench('pickBackend: 20% canary, sticky key', () => {
      for (let i = 0; i < BATCH; i++) sink.o = pickBackend(sticky, undefined, users[i & 1023])
    }),
    bench('pickBackend: override header', () => {
      for (let i = 0; i < BATCH; i++)
        sink.o = pickBackend(sticky, i & 1 ? 'canary' : 'stable', users[i & 1023])
    }),
  )
})
