/**
 * The pre-step smoke check's I/O: `requests` GETs to a proxy's traffic listener with the override header
 * asking for the canary, sent together, each bounded by the plan's timeout. It passes only if every
 * answer has an expected status and carries `x-veer-version: canary` (the canary served it, not stable).
 * The engine runs it before a change that raises the canary weight and aborts the rollout on a failure.
 */
import { request } from 'undici'
import { formatDuration } from '../config/duration.ts'
import type { SmokeCheck } from './rollout.ts'

export const VERSION_HEADER = 'x-veer-version'

export type SmokeResult = { readonly ok: true } | { readonly ok: false; readonly reason: string }

export type SmokeRunner = (check: SmokeCheck) => Promise<SmokeResult>

/** Why one request failed, or null when it passed. */
async function probe(check: SmokeCheck): Promise<string | null> {
  try {
    const res = await request(check.url, {
      method: 'GET',
      headers: { [VERSION_HEADER]: 'canary' },
      signal: AbortSignal.timeout(check.timeoutMs),
    })
    await res.body.dump()
    if (!check.expectStatus.includes(res.statusCode))
      return `status ${res.statusCode} (expected ${check.expectStatus.join(' or ')})`
    const served = res.headers[VERSION_HEADER]
    if (served !== 'canary')
      return served === undefined
        ? `no ${VERSION_HEADER} response header (is allowOverride on for the route?)`
        : `served by ${VERSION_HEADER}: ${String(served)}, not the canary (is allowOverride on for the route?)`
    return null
  } catch (err) {
    const e = err as Error & { code?: string }
    if (e.name === 'TimeoutError' || e.name === 'AbortError')
      return `timed out after ${formatDuration(check.timeoutMs)}`
    return `connection error: ${e.code ?? e.message}`
  }
}

export const runSmoke: SmokeRunner = async (check) => {
  const results = await Promise.all(Array.from({ length: check.requests }, () => probe(check)))
  const i = results.findIndex((r) => r !== null)
  if (i === -1) return { ok: true }
  const failed = results.filter((r) => r !== null).length
  return {
    ok: false,
    reason: `GET ${check.url} request ${i + 1}/${check.requests}: ${results[i]}${failed > 1 ? ` (${failed} of ${check.requests} failed)` : ''}`,
  }
}
