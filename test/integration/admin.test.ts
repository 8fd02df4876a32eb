/** The proxy's admin listener: /healthz, /readyz, /v1/config, /v1/stats and the contract's metrics. */
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { deadPort, startUpstream, type Upstream } from '../helpers/upstream.ts'
import { startVeer, type VeerProcess, writeConfig } from '../helpers/veer.ts'

let stable: Upstream
let canary: Upstream
let veer: VeerProcess
let deadUrl: string

beforeAll(async () => {
  stable = await startUpstream('stable')
  canary = await startUpstream('canary')
  deadUrl = `http://127.0.0.1:${await deadPort()}`
  const file = writeConfig({
    routes: [
      {
        name: 'api',
        stable: { url: stable.url, release: 'v1' },
        canary: { url: canary.url, release: 'v2' },
        canaryWeight: 20,
      },
      { name: 'dead', match: { pathPrefix: '/dead' }, stable: { url: deadUrl, release: 'gone' } },
    ],
  })
  veer = await startVeer(['--config', file])
})

afterAll(async () => {
  expect(await veer?.stop()).toBe(0)
  await Promise.all([stable?.close(), canary?.close()])
})

async function admin(path: string, method = 'GET'): Promise<{ status: number; type: string; text: string }> {
  const res = await request(`${veer.adminUrl}${path}`, { method })
  return { status: res.statusCode, type: String(res.headers['content-type']), text: await res.body.text() }
}

/** A sample's value from Prometheus text, by metric name and exact label set; undefined when absent. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    const got: Record<string, string> = {}
    for (const pair of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) got[pair[1]!] = pair[2]!
    const want = Object.entries(labels)
    if (Object.keys(got).length === want.length && want.every(([k, v]) => got[k] === v)) return Number(m[3])
  }
  return undefined
}

describe('admin listener', () => {
  it('/healthz answers 200 while the process serves', async () => {
    const res = await admin('/healthz')
    expect(res.status).toBe(200)
    expect(JSON.parse(res.text)).toEqual({ status: 'ok' })
  })

  it('/readyz answers 200 once the config is loaded', async () => {
    const res = await admin('/readyz')
    expect(res.status).toBe(200)
    expect(JSON.parse(res.text)).toMatchObject({ status: 'ready', configVersion: 1 })
  })

  it('/v1/config shows the routes, their weights and the config version', async () => {
    const res = await admin('/v1/config')
    expect(res.status).toBe(200)
    expect(res.type).toMatch(/^application\/json/)
    const body = JSON.parse(res.text)
    expect(body.version).toBe(1)
    expect(body.hash).toMatch(/^[0-9a-f]{12}$/)
    expect(body.routes).toHaveLength(2)
    expect(body.routes[0]).toMatchObject({
      name: 'api',
      match: { host: '*', pathPrefix: '/' },
      weights: { stable: 80, canary: 20 },
      stable: { url: stable.url, release: 'v1' },
      canary: { url: canary.url, release: 'v2' },
      allowOverride: false,
    })
    expect(body.routes[1]).toMatchObject({
      name: 'dead',
      match: { pathPrefix: '/dead' },
      weights: { stable: 100, canary: 0 },
      canary: null,
    })
  })

  it('/metrics has weights, release info, request counts by code and latency histograms', async () => {
    const n = 200
    for (let i = 0; i < n; i += 20) {
      await Promise.all(
        Array.from({ length: 20 }, async () => {
          const res = await request(`${veer.url}/hello`)
          await res.body.dump()
          expect(res.statusCode).toBe(200)
        }),
      )
    }
    const failed = await request(`${veer.url}/dead/x`)
    await failed.body.dump()
    expect(failed.statusCode).toBe(502)

    const res = await admin('/metrics')
    expect(res.status).toBe(200)
    expect(res.type).toMatch(/^text\/plain/)
    const text = res.text

    expect(sample(text, 'veer_route_weight', { route: 'api', version: 'stable' })).toBe(80)
    expect(sample(text, 'veer_route_weight', { route: 'api', version: 'canary' })).toBe(20)
    expect(sample(text, 'veer_route_weight', { route: 'dead', version: 'stable' })).toBe(100)
    expect(sample(text, 'veer_release_info', { route: 'api', version: 'stable', release: 'v1' })).toBe(1)
    expect(sample(text, 'veer_release_info', { route: 'api', version: 'canary', release: 'v2' })).toBe(1)
    expect(sample(text, 'veer_release_info', { route: 'dead', version: 'stable', release: 'gone' })).toBe(1)

    // Counts by version and code agree with what each upstream saw.
    const stableCount = sample(text, 'veer_requests_total', { route: 'api', version: 'stable', code: '200' })
    const canaryCount = sample(text, 'veer_requests_total', { route: 'api', version: 'canary', code: '200' })
    expect(stableCount).toBe(stable.seen.length)
    expect(canaryCount).toBe(canary.seen.length)
    expect(stableCount! + canaryCount!).toBe(n)
    expect(Math.abs(canaryCount! - n * 0.2)).toBeLessThanOrEqual(2)
    // No response came back from the dead upstream: code="error".
    expect(sample(text, 'veer_requests_total', { route: 'dead', version: 'stable', code: 'error' })).toBe(1)

    expect(text).toContain('# TYPE veer_request_duration_seconds histogram')
    for (const [version, count] of [
      ['stable', stableCount],
      ['canary', canaryCount],
    ] as const) {
      expect(sample(text, 'veer_request_duration_seconds_count', { route: 'api', version })).toBe(count)
      expect(
        sample(text, 'veer_request_duration_seconds_bucket', { route: 'api', version, le: '+Inf' }),
      ).toBe(count)
      expect(
        sample(text, 'veer_request_duration_seconds_bucket', { route: 'api', version, le: '0.001' }),
      ).toBeDefined()
      expect(
        sample(text, 'veer_request_duration_seconds_bucket', { route: 'api', version, le: '30' }),
      ).toBeDefined()
      expect(sample(text, 'veer_request_duration_seconds_sum', { route: 'api', version })).toBeGreaterThan(0)
    }
    // Default process metrics come along.
    expect(sample(text, 'process_resident_memory_bytes', {})).toBeGreaterThan(0)
  })

  it('/v1/stats has per-version figures of each route', async () => {
    const res = await admin('/v1/stats')
    expect(res.status).toBe(200)
    const body = JSON.parse(res.text)
    expect(body.version).toBe(1)
    expect(body.routes[0]).toMatchObject({
      name: 'api',
      stable: { release: 'v1', upstream: stable.url },
      canary: { release: 'v2', upstream: canary.url },
    })
    expect(body.routes[1]).toMatchObject({ name: 'dead', canary: null })
  })

  it('answers an unknown path with 404 and a write with 405, as JSON', async () => {
    const missing = await admin('/nope')
    expect(missing.status).toBe(404)
    expect(JSON.parse(missing.text)).toMatchObject({ error: 'not_found' })
    const post = await admin('/v1/config', 'POST')
    expect(post.status).toBe(405)
    expect(JSON.parse(post.text)).toMatchObject({ error: 'method_not_allowed' })
  })
})
