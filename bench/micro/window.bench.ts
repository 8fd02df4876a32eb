// The analysis window update (every request) and the per-version metric counters (every request).
import { test } from 'vitest'
import { OutcomeWindow } from '../../proxy/analysis/window.ts'
import { VersionMetrics } from '../../proxy/metrics.ts'
import { BATCH, nsPerOp, sink } from './report.ts'

// Latencies from 0.2 ms to ~50 ms (log-spread), 1% errors, statuses mostly 200.
const latencies = Array.from({ length: 1024 }, (_, i) => 0.2 * 2 ** (((i * 7919) % 1024) / 128))
const statuses = Array.from({ length: 1024 }, (_, i) => (i % 100 === 0 ? 503 : i % 37 === 0 ? 404 : 200))

test('per-request recording', async ({ bench }) => {
  const window = new OutcomeWindow()
  const metrics = new VersionMetrics('default', 'stable')
  // A clock advancing 0.05 ms per request (20k req/s): a new one-second slot every 20,000 records.
  let now = 1_000_000
  await nsPerOp(
    bench,
    bench('OutcomeWindow.record', () => {
      for (let i = 0; i < BATCH; i++) {
        now += 0.05
        window.record(now, latencies[i & 1023]!, statuses[i & 1023]! >= 500 ? 1 : 0)
      }
      sink.o = window
    }),
    bench('VersionMetrics.record', () => {
      for (let i = 0; i < BATCH; i++) metrics.record(statuses[i & 1023]!, latencies[i & 1023]! / 1000)
      sink.o = metrics
    }),
  )
})
