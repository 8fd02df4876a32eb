// Abort latency under a slow smoke check:  node bench/abort-latency.ts [--rounds N]
// A real `veer control`, a proxy played over the wire protocol, and a smoke target that holds its GET
// open. Each round starts a rollout, lets the proxy apply step 1 so the clock asks for the smoke check
// before step 2, waits until the target holds that request, then times POST …/abort (the check still
// held), releases the check and waits for control to log the late result as dropped. Prints the
// median and max abort latency over the rounds.
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { announced, FakeProxy, startControl } from '../test/helpers/control.ts'
import { startHeldSmoke } from '../test/helpers/held-smoke.ts'
import { positiveInt } from './harness.ts'
import { median } from './stats.ts'

const { values } = parseArgs({ options: { rounds: { type: 'string' } } })
const ROUNDS = positiveInt(values.rounds, 9, 100)

const smoke = await startHeldSmoke()
const control = await startControl()
const proxy = new FakeProxy(control, 'p1', [announced('api')])
await proxy.register()
const plan = {
  steps: [{ weight: 10, pause: '0s' }, { weight: 50 }],
  analysis: { enabled: false },
  smoke: { url: smoke.url, requests: 1, expectStatus: [200], timeout: '60s' },
}
const latencies: number[] = []
try {
  for (let i = 0; i < ROUNDS; i++) {
    smoke.hold = false
    const started = await control.api('POST', '/v1/routes/api/rollout', { body: plan })
    if (started.status !== 200) throw new Error(`rollout start: ${started.status} ${started.text}`)
    smoke.hold = true
    const held = smoke.nextHeld()
    await proxy.ack(started.json.revision)
    await held
    const t0 = performance.now()
    const aborted = await control.api('POST', '/v1/routes/api/abort', { body: { reason: `round ${i}` } })
    const ms = performance.now() - t0
    if (aborted.status !== 200 || aborted.json.weights.canary !== 0 || smoke.held !== 1)
      throw new Error(`round ${i}: abort ${aborted.status} ${aborted.text} (held ${smoke.held})`)
    latencies.push(ms)
    const seen = control.logs.filter((l) => l.msg === 'smoke result dropped').length
    const dropped = control.waitForLog(
      (l) => l.msg === 'smoke result dropped' && control.logs.indexOf(l) >= seen,
    )
    smoke.release()
    await dropped
  }
} finally {
  await control.stop()
  await smoke.close()
}
const sorted = [...latencies].sort((a, b) => a - b)
console.log(
  `abort latency with a smoke check held open, ${ROUNDS} rounds: median ${median(latencies).toFixed(1)} ms, max ${sorted.at(-1)!.toFixed(1)} ms`,
)
