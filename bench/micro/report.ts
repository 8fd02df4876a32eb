// ns/op for the microbenchmarks. Each benchmarked function runs BATCH operations over varied inputs
// (a single call of a ~20 ns function would mostly measure the timer around it), so vitest's own
// table shows the time per batch and this prints the time per operation.
import type { TestContext } from 'vitest'

export const BATCH = 1000

type Bench = TestContext['bench']
type Registration = ReturnType<Bench>

/** Options for every benchmark: half a second of samples after a short warm-up. */
export const RUN = { time: 500, warmupTime: 100 }

/** Run the registrations, then print one `ns/op` line each. */
export async function nsPerOp(bench: Bench, ...registrations: Registration[]): Promise<void> {
  const storage = await bench.compare(...registrations, RUN)
  const lines = registrations.map((r) => {
    const result = storage.get(r.name)
    const nsPerOp = (result.latency.mean * 1e6) / BATCH
    const p99 = ((result.latency.p99 ?? Number.NaN) * 1e6) / BATCH
    return `  ${r.name.padEnd(44)} ${nsPerOp.toFixed(1).padStart(8)} ns/op   (p99 of batches ${p99.toFixed(1)} ns/op, ±${result.latency.rme.toFixed(1)}%)`
  })
  console.log(`ns/op (batches of ${BATCH}):\n${lines.join('\n')}`)
}

/** Keeps results alive so the engine cannot drop the work as dead code. */
export const sink = { n: 0, o: null as unknown }
