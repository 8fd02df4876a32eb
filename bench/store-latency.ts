// Write latency by store:  node bench/store-latency.ts [--writes N]
// A real `veer control` on a state dir, on a 1-member etcd and on a 3-member etcd (unix sockets, temp
// data dirs: test/helpers/etcd.ts); each takes N sequential PUT /v1/routes/shop/weights, timed from
// request to answer (the answer comes once the change and its audit entry are durable). Prints median,
// p90 and p99 per store.
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { announced, type ControlProcess, FakeProxy, startControl } from '../test/helpers/control.ts'
import { startEtcd } from '../test/helpers/etcd.ts'
import { positiveInt } from './harness.ts'
import { median, percentile } from './stats.ts'

const { values } = parseArgs({ options: { writes: { type: 'string' } } })
const WRITES = positiveInt(values.writes, 200, 100_000)

async function measure(control: ControlProcess): Promise<number[]> {
  await new FakeProxy(control, 'p1', [announced('shop')]).register()
  const ms: number[] = []
  for (let i = 0; i < WRITES + 10; i++) {
    const t0 = performance.now()
    const r = await control.api('PUT', '/v1/routes/shop/weights', { body: { canary: i % 101 } })
    const took = performance.now() - t0
    if (r.status !== 200) throw new Error(`write ${i}: ${r.status} ${r.text}`)
    if (i >= 10) ms.push(took) // the first 10 warm up connections and the JIT
  }
  return ms.sort((a, b) => a - b)
}

const rows: [string, number[]][] = []
const file = await startControl()
try {
  rows.push(['state dir (fsync)', await measure(file)])
} finally {
  await file.stop()
}
for (const size of [1, 3] as const) {
  const etcd = await startEtcd(size)
  try {
    const control = await startControl({ etcd: { endpoints: etcd.endpoints } })
    try {
      rows.push([`etcd, ${size} member${size > 1 ? 's' : ''}`, await measure(control)])
    } finally {
      await control.stop()
    }
  } finally {
    await etcd.close()
  }
}
const f = (n: number) => n.toFixed(2).padStart(7)
console.log(`PUT weights, ${WRITES} sequential writes per store (ms)`)
console.log(`${'store'.padEnd(20)} ${'median'.padStart(7)} ${'p90'.padStart(7)} ${'p99'.padStart(7)}`)
for (const [name, ms] of rows)
  console.log(`${name.padEnd(20)} ${f(median(ms))} ${f(percentile(ms, 0.9))} ${f(percentile(ms, 0.99))}`)
