// Sub-millisecond ticks without spinning: a worker thread sleeps with Atomics.wait (fractional-ms
// timeouts) and posts a message at every tick, which wakes the main event loop. setTimeout cannot do
// better than ~1 ms, which would add up to a millisecond of send lag to an open-loop latency figure.
import { Worker } from 'node:worker_threads'

const source = `
const { parentPort, workerData } = require('node:worker_threads')
const { intervalMs, maxTicks, stop } = workerData
const flag = new Int32Array(stop)
const start = performance.now()
for (let k = 1; k <= maxTicks && Atomics.load(flag, 0) === 0; k++) {
  const wait = start + k * intervalMs - performance.now()
  if (wait > 0) Atomics.wait(flag, 0, 0, wait)
  if (Atomics.load(flag, 0) !== 0) break
  parentPort.postMessage(k)
}
`

export interface Ticker {
  stop(): Promise<void>
}

/** Call onTick about every intervalMs (at most maxTicks times) until stop(). */
export function startTicker(intervalMs: number, maxTicks: number, onTick: () => void): Ticker {
  const stop = new SharedArrayBuffer(4)
  const worker = new Worker(source, { eval: true, workerData: { intervalMs, maxTicks, stop } })
  worker.on('message', onTick)
  worker.unref()
  return {
    async stop() {
      const flag = new Int32Array(stop)
      Atomics.store(flag, 0, 1)
      Atomics.notify(flag, 0)
      worker.off('message', onTick)
      await worker.terminate()
    },
  }
}
