// Preloaded into a subject by bench/alloc.ts (NODE_OPTIONS=--import this file, ALLOC_PROFILE=PATH): V8's
// sampling heap profiler, keeping the samples of objects the GC has since collected, so the profile counts
// every allocation (scaled by V8 from the samples), not only what is still live. It samples from the
// start; each SIGUSR2 writes what was sampled since the one before to PATH.N.json (N = 1, 2, …, written
// to a temporary name and renamed, so a file that exists is whole) and starts afresh. Without
// ALLOC_PROFILE it does nothing, so a process that inherits NODE_OPTIONS without it is unaffected.
import { renameSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'

const out = process.env.ALLOC_PROFILE
if (out !== undefined && out !== '') {
  const session = new Session()
  session.connect()
  const start = {
    samplingInterval: 8192,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  }
  await session.post('HeapProfiler.startSampling', start)
  let written = 0
  let busy = false
  process.on('SIGUSR2', async () => {
    if (busy) return
    busy = true
    const { profile } = await session.post('HeapProfiler.stopSampling')
    await session.post('HeapProfiler.startSampling', start)
    written++
    writeFileSync(`${out}.tmp`, JSON.stringify(profile))
    renameSync(`${out}.tmp`, `${out}.${written}.json`)
    busy = false
  })
}
