import { request } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import { startUpstream, type Upstream } from '../helpers/upstream.ts'
import { startVeer, type VeerProcess } from '../helpers/veer.ts'

let upstreams: Upstream[] = []
let veer: VeerProcess | undefined

afterEach(async () => {
  await veer?.stop()
  veer = undefined
  await Promise.all(upstreams.map((u) => u.close()))
  upstreams = []
})

async function servedBy(url: string, headers: Record<string, string> = {}): Promise<string> {
  const res = await request(url, { headers })
  await res.body.dump()
  return String(res.headers['x-veer-version'])
}

describe('weighted split', () => {
  it.each([5, 20, 50])(
    'sends %i percent of 5,000 requests to the canary, within ±1 point',
    async (weight) => {
      const stable = await startUpstream('stable')
      const canary = await startUpstream('canary')
      upstreams = [stable, canary]
      veer = await startVeer([
        '--stable',
        stable.url,
        '--canary',
        canary.url,
        '--canary-weight',
        String(weight),
      ])
      const n = 5000
      let canaryCount = 0
      for (let i = 0; i < n; i += 50) {
        const batch = await Promise.all(Array.from({ length: 50 }, () => servedBy(veer!.url)))
        canaryCount += batch.filter((v) => v === 'canary').length
      }
      expect(Math.abs((canaryCount / n) * 100 - weight)).toBeLessThanOrEqual(1)
      // The upstreams agree with the header: each saw exactly its share.
      expect(canary.seen.length).toBe(canaryCount)
      expect(stable.seen.length).toBe(n - canaryCount)
    },
  )
})
