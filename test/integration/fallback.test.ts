/**
 * What users see of a failing canary, through a real proxy process: an idempotent request that fails on
 * canary (error status, reset) is answered by stable, and still counts against canary; a request that
 * may not be repeated gets canary's failure; the fuse zeroes the canary after N consecutive errors; a
 * business outcome reported in a response header is counted.
 */
import { request } from 'undici'
import { describe, expect, it } from 'vitest'
import { testBed, waitUntil } from '../helpers/bed.ts'
import type { VeerProcess } from '../helpers/veer.ts'

const bed = testBed()

interface VersionStats {
  requests: number
  errors: number
  failed: number
  harmed: number
  saved: number
}

async function stats(veer: VeerProcess): Promise<{ stable: VersionStats; canary: VersionStats }> {
  const body = (await (await request(`${veer.adminUrl}/v1/stats`)).body.json()) as {
    routes: { stable: { window: VersionStats }; canary: { window: VersionStats } | null }[]
  }
  const r = body.routes[0]!
  return { stable: r.stable.window, canary: r.canary?.window ?? r.stable.window }
}

async function metric(veer: VeerProcess, prefix: string): Promise<number> {
  const text = await (await request(`${veer.adminUrl}/metrics`)).body.text()
  const line = text.split('\n').find((l) => l.startsWith(`${prefix} `))
  return line === undefined ? 0 : Number(line.split(' ').pop())
}

/** A canary that answers `status` to everything, counting what it got. */
async function failingCanary(status: number) {
  return bed.upstream('canary', (req, res) => {
    req.resume()
    req.on('end', () => res.writeHead(status, { 'content-type': 'text/plain' }).end('canary failed'))
  })
}

/** A stable that echoes method and body. */
async function echoStable() {
  return bed.upstream('stable', (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => res.end(`stable ${req.method} ${Buffer.concat(chunks).toString()}`))
  })
}

describe('fallback to stable', () => {
  it('a GET that fails on canary with a 5xx is answered by stable; the failure counts against canary', async () => {
    const stable = await echoStable()
    const canary = await failingCanary(503)
    const veer = await bed.proxy({
      stable: { url: stable.url },
      canary: { url: canary.url },
      canaryWeight: 100,
    })
    for (let i = 0; i < 5; i++) {
      const res = await request(`${veer.url}/item/${i}`)
      expect(res.statusCode).toBe(200)
      expect(res.headers['x-veer-version']).toBe('stable')
      expect(await res.body.text()).toBe('stable GET ')
    }
    expect(canary.seen).toHaveLength(5)
    expect(stable.seen.map((r) => r.url)).toEqual(['/item/0', '/item/1', '/item/2', '/item/3', '/item/4'])
    expect(await metric(veer, 'veer_requests_total{route="default",version="canary",code="503"}')).toBe(5)
    expect(await metric(veer, 'veer_requests_total{route="default",version="stable",code="200"}')).toBe(5)
    await waitUntil(async () => (await stats(veer)).canary.saved === 5, 'saved 5 in /v1/stats')
    const s = await stats(veer)
    expect(s.canary).toMatchObject({ requests: 5, errors: 5, harmed: 0, saved: 5 })
    expect(s.stable).toMatchObject({ requests: 5, errors: 0 })
    // The window's own verdict: 5 requests are too few to judge.
    const raw = (await (await request(`${veer.adminUrl}/v1/stats`)).body.json()) as {
      routes: { verdict: { result: string; reason: string; checks: { check: string }[] } }[]
    }
    expect(raw.routes[0]!.verdict.result).toBe('inconclusive')
    expect(raw.routes[0]!.verdict.reason).toMatch(/too little traffic/)
    expect(raw.routes[0]!.verdict.checks.map((c) => c.check)).toContain('errors')
  })

  it('a GET whose canary connection is reset is answered by stable', async () => {
    const stable = await echoStable()
    const canary = await bed.upstream('canary', (req) => req.socket.destroy())
    const veer = await bed.proxy({
      stable: { url: stable.url },
      canary: { url: canary.url },
      canaryWeight: 100,
    })
    const res = await request(veer.url)
    expect(res.statusCode).toBe(200)
    expect(await res.body.text()).toBe('stable GET ')
    expect(await metric(veer, 'veer_requests_total{route="default",version="canary",code="error"}')).toBe(1)
  })

  it('a POST is not repeated: the user gets canary failure, counted as harm', async () => {
    const stable = await echoStable()
    const canary = await failingCanary(500)
    const veer = await bed.proxy({
      stable: { url: stable.url },
      canary: { url: canary.url },
      canaryWeight: 100,
    })
    const res = await request(veer.url, { method: 'POST', body: 'order=1' })
    expect(res.statusCode).toBe(500)
    expect(res.headers['x-veer-version']).toBe('canary')
    await res.body.text()
    expect(stable.seen).toHaveLength(0)
    await waitUntil(async () => (await stats(veer)).canary.harmed === 1, 'harmed 1 in /v1/stats')
    expect((await stats(veer)).canary).toMatchObject({ errors: 1, saved: 0 })
  })

  it('a POST with an Idempotency-Key and a small body is retried on stable with the whole body', async () => {
    const stable = await echoStable()
    const canary = await failingCanary(502)
    const veer = await bed.proxy({
      stable: { url: stable.url },
      canary: { url: canary.url },
      canaryWeight: 100,
    })
    const body = 'x'.repeat(20_000)
    const res = await request(veer.url, { method: 'POST', body, headers: { 'idempotency-key': 'k-1' } })
    expect(res.statusCode).toBe(200)
    expect(await res.body.text()).toBe(`stable POST ${body}`)
    expect(canary.seen).toHaveLength(1)
  })

  it('a body above maxBodyBytes is not kept, so not retried', async () => {
    const stable = await echoStable()
    const canary = await failingCanary(502)
    const veer = await bed.proxy({
      stable: { url: stable.url },
      canary: { url: canary.url },
      canaryWeight: 100,
      analysis: { fallback: { maxBodyBytes: 1000 } },
    })
    const res = await request(veer.url, {
      method: 'PUT',
      body: 'y'.repeat(1001),
      headers: { 'idempotency-key': 'k' },
    })
    expect(res.statusCode).toBe(502)
    await res.body.text()
    expect(stable.seen).toHaveLength(0)
  })

  it('errorStatuses decide what falls back (429 added), and fallback can be switched off', async () => {
    const stable = await echoStable()
    const canary = await failingCanary(429)
    const on = await bed.proxy({
      stable: { url: stable.url },
      canary: { url: canary.url },
      canaryWeight: 100,
      analysis: { errorStatuses: ['5xx', '429'] },
    })
    expect((await request(on.url)).statusCode).toBe(200)
    const plain = await bed.proxy({
      stable: { url: stable.url },
      canary: { url: canary.url },
      canaryWeight: 100,
    })
    const res = await request(plain.url)
    expect(res.statusCode).toBe(429) // not an error by default: passed on as it is
    await res.body.text()
    const failing = await failingCanary(503)
    const off = await bed.proxy({
      stable: { url: stable.url },
      canary: { url: failing.url },
      canaryWeight: 100,
      analysis: { fallback: { enabled: false } },
    })
    const seen = await request(off.url)
    expect(seen.statusCode).toBe(503)
    await seen.body.text()
  })

  it('a tester who forces canary with the override header gets canary failure', async () => {
    const stable = await echoStable()
    const canary = await failingCanary(503)
    const veer = await bed.proxy({
      stable: { url: stable.url },
      canary: { url: canary.url },
      canaryWeight: 0,
      allowOverride: true,
    })
    const res = await request(veer.url, { headers: { 'x-veer-version': 'canary' } })
    expect(res.statusCode).toBe(503)
    await res.body.text()
    expect(stable.seen).toHaveLength(0)
  })
})

describe('fuse', () => {
  it('N consecutive canary errors zero the canary at once, before any statistics', async () => {
    const stable = await echoStable()
    const canary = await failingCanary(500)
    const veer = await bed.proxy({
      stable: { url: stable.url },
      canary: { url: canary.url },
      canaryWeight: 50,
      analysis: { fuse: { consecutiveFailures: 4 }, fallback: { enabled: false } },
    })
    // The weighted sequence alternates at 50%: canary gets every other request until the fuse trips.
    for (let i = 0; i < 20; i++) await (await request(veer.url)).body.text()
    expect(canary.seen).toHaveLength(4)
    expect(stable.seen).toHaveLength(16)
    expect(await metric(veer, 'veer_rollbacks_total{route="default",reason="fuse"}')).toBe(1)
    expect(await metric(veer, 'veer_route_weight{route="default",version="canary"}')).toBe(0)
    const config = (await (await request(`${veer.adminUrl}/v1/config`)).body.json()) as {
      routes: { weights: { canary: number } }[]
    }
    expect(config.routes[0]!.weights.canary).toBe(0)
  })

  it('a success in between resets the count', async () => {
    const stable = await echoStable()
    let n = 0
    const canary = await bed.upstream('canary', (req, res) => {
      req.resume()
      res.writeHead(n++ % 3 === 2 ? 200 : 500).end()
    })
    const veer = await bed.proxy({
      stable: { url: stable.url },
      canary: { url: canary.url },
      canaryWeight: 100,
      analysis: { fuse: { consecutiveFailures: 3 }, fallback: { enabled: false } },
    })
    for (let i = 0; i < 30; i++) await (await request(veer.url)).body.text()
    expect(canary.seen).toHaveLength(30)
    expect(await metric(veer, 'veer_rollbacks_total{route="default",reason="fuse"}')).toBe(0)
  })
})

describe('business outcome header', () => {
  it('x-veer-outcome: fail counts as a failed outcome, not as an error', async () => {
    const stable = await bed.upstream('stable', (req, res) => {
      req.resume()
      res.writeHead(200, { 'x-veer-outcome': req.url === '/checkout' ? 'fail' : 'ok' }).end('{}')
    })
    const veer = await bed.proxy({ stable: { url: stable.url } })
    for (const path of ['/checkout', '/checkout', '/browse']) {
      const res = await request(`${veer.url}${path}`)
      expect(res.statusCode).toBe(200)
      await res.body.text()
    }
    await waitUntil(async () => (await stats(veer)).stable.requests === 3, '3 requests in /v1/stats')
    expect((await stats(veer)).stable).toMatchObject({ requests: 3, errors: 0, failed: 2 })
  })
})
