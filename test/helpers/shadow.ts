/** A route's shadow (`default` unless named) in a proxy's /v1/stats, and waiting for its copies to end. */
import { request } from 'undici'
import { waitUntil } from './bed.ts'
import type { VeerProcess } from './veer.ts'

export interface ShadowSummary {
  sent: number
  dropped: number
  errors: number
  compared: number
  mismatches: number
  mismatchRate: number
  inflight: number
  byPath: Record<string, { compared: number; mismatches: number; mismatchRate: number }>
  noisyFields: string[]
  noiseChecks: { sent: number; compared: number }
  window: unknown
  ejected: boolean
  headline: string
  verdict: { result: string; checks: { check: string }[] }
}

export async function shadowStats(v: VeerProcess, route = 'default'): Promise<ShadowSummary> {
  const body = (await (await request(`${v.adminUrl}/v1/stats`)).body.json()) as {
    routes: { name: string; shadow: ShadowSummary | null }[]
  }
  const shadow = body.routes.find((r) => r.name === route)?.shadow
  if (!shadow) throw new Error(`route ${route} has no shadow in /v1/stats: ${JSON.stringify(body)}`)
  return shadow
}

/** Waits until every shadow request sent has ended (answered, failed or dropped), and returns the stats. */
export async function settled(v: VeerProcess, ms = 10_000, route = 'default'): Promise<ShadowSummary> {
  let last: ShadowSummary | undefined
  await waitUntil(
    async () => {
      last = await shadowStats(v, route)
      return last.inflight === 0
    },
    'shadow requests to end',
    ms,
  )
  return last!
}
