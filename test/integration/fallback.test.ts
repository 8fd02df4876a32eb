/**
 * What users see of a failing canary, through a real proxy process: an idempotent request that fails on
 * canary (error status, reset) is answered by stable, and still counts against canary; a request that
 * may not be repeated gets canary's failure; the fuse zeroes the canary after N consecutive errors; a
 * business outcome reported in a response header is counted.
 */
import { dirname } from 'node:path'
import { Readable } from 'node:stream'
import { request } from 'undici'
import { describe, expect, it } from 'vitest'
import { testBed, waitUntil } from '../helpers/bed.ts'
import { settled, shadowStats } from '../helpers/shadow.ts'
import { deadPort, type Upstream } from '../helpers/upstream.ts'
import { startVeer, type VeerProcess, writeConfig } from '../helpers/veer.ts'

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

/** A proxy in front of `stable` and `canary`, all traffic to canary unless `route` says otherwise. */
function canaryProxy(
  stable: Upstream,
  canary: Upstream,
  route: Record<string, unknown> = {},
): Promise<VeerProcess> {
  return bed.proxy({ stable: { url: stable.url }, canary: { url: canary.url }, canaryWeight: 100, ...route })
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
    const veer = await canaryProxy(stable, canary)
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
    // Rescues stay out of stable's window: they would add the canary's failing requests to its sample.
    expect(s.stable).toMatchObject({ requests: 0, errors: 0 })
    // The window's own verdict: 5 requests are too few to judge.
    const raw = (await (await request(`${veer.adminUrl}/v1/stats`)).body.json()) as {
      routes: { verdict: { result: string; reason: string; checks: { check: string }[] } }[]
    }
    expect(raw.routes[0]!.verdict.result).toBe('inconclusive')
    expect(raw.routes[0]!.verdict.reason).toMatch(/too little traffic/)
    expect(raw.routes[0]!.verdict.checks.map((c) => c.check)).toContain('errors')
  })

  it('on a mirrored route, a rescued request is left out of the comparison (no false mismatch)', async () => {
    const stable = await echoStable()
    const canary = await failingCanary(503)
    const shadow = await echoStable() // answers as stable does: every comparison is a match
    const veer = await canaryProxy(stable, canary, {
      shadow: { url: shadow.url, percent: 100 },
    })
    for (let i = 0; i < 5; i++) {
      const res = await request(`${veer.url}/item/${i}`)
      expect(res.statusCode).toBe(200)
      await res.body.text()
    }
    await waitUntil(async () => (await shadowStats(veer)).sent === 5, 'the 5 shadow copies to be sent')
    const last = await settled(veer)
    expect(last).toMatchObject({ compared: 0, mismatches: 0 })
  })

  it('a GET whose canary connection is reset is answered by stable', async () => {
    const stable = await echoStable()
    const canary = await bed.upstream('canary', (req) => req.socket.destroy())
    const veer = await canaryProxy(stable, canary)
    const res = await request(veer.url)
    expect(res.statusCode).toBe(200)
    expect(await res.body.text()).toBe('stable GET ')
    expect(await metric(veer, 'veer_requests_total{route="default",version="canary",code="error"}')).toBe(1)
  })

  it('a POST is not repeated: the user gets canary failure, counted as harm', async () => {
    const stable = await echoStable()
    const canary = await failingCanary(500)
    const veer = await canaryProxy(stable, canary)
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
    const veer = await canaryProxy(stable, canary)
    const body = 'x'.repeat(20_000)
    const res = await request(veer.url, { method: 'POST', body, headers: { 'idempotency-key': 'k-1' } })
    expect(res.statusCode).toBe(200)
    expect(await res.body.text()).toBe(`stable POST ${body}`)
    expect(canary.seen).toHaveLength(1)
  })

  it('a body above maxBodyBytes is not kept, so not retried', async () => {
    const stable = await echoStable()
    const canary = await failingCanary(502)
    const veer = await canaryProxy(stable, canary, {
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

  it('a body not kept (unknown length, or above maxBodyBytes) is retried whole when the canary refuses the connection', async () => {
    const stable = await echoStable()
    const veer = await bed.proxy({
      stable: { url: stable.url },
      canary: { url: `http://127.0.0.1:${await deadPort()}` },
      canaryWeight: 100,
      analysis: { fallback: { maxBodyBytes: 1000 } },
    })
    const big = 'z'.repeat(50_000)
    const chunked = Readable.from(['part1-', 'part2'], { objectMode: false })
    for (const body of [big, chunked]) {
      const res = await request(veer.url, { method: 'PUT', body, headers: { 'idempotency-key': 'k' } })
      expect(res.statusCode).toBe(200)
      expect(res.headers['x-veer-version']).toBe('stable')
      expect(await res.body.text()).toBe(`stable PUT ${body === big ? big : 'part1-part2'}`)
    }
    expect(await metric(veer, 'veer_requests_total{route="default",version="canary",code="error"}')).toBe(2)
  })

  it('errorStatuses decide what falls back (429 added), and fallback can be switched off', async () => {
    const stable = await echoStable()
    const canary = await failingCanary(429)
    const on = await canaryProxy(stable, canary, {
      analysis: { errorStatuses: ['5xx', '429'] },
    })
    expect((await request(on.url)).statusCode).toBe(200)
    const plain = await canaryProxy(stable, canary)
    const res = await request(plain.url)
    expect(res.statusCode).toBe(429) // not an error by default: passed on as it is
    await res.body.text()
    const failing = await failingCanary(503)
    const off = await canaryProxy(stable, failing, {
      analysis: { fallback: { enabled: false } },
    })
    const seen = await request(off.url)
    expect(seen.statusCode).toBe(503)
    await seen.body.text()
  })

  it('a tester who forces canary with the override header gets canary failure', async () => {
    const stable = await echoStable()
    const canary = await failingCanary(503)
    const veer = await canaryProxy(stable, canary, {
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
    const veer = await canaryProxy(stable, canary, {
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

  it('shows in /v1/config and /v1/stats with what tripped it', async () => {
    const stable = await echoStable()
    const canary = await failingCanary(500)
    const veer = await canaryProxy(stable, canary, {
      canary: { url: canary.url, release: 'v2' },
      analysis: { fuse: { consecutiveFailures: 3 }, fallback: { enabled: false } },
    })
    // Three in flight at once: all three end as errors, the third trips it.
    await Promise.all([0, 1, 2].map(async () => (await request(veer.url)).body.text()))
    expect(await metric(veer, 'veer_rollbacks_total{route="default",reason="fuse"}')).toBe(1)
    const fuse = { reason: '3 consecutive canary errors (last: 500)', release: 'v2', upstream: canary.url }
    const config = (await (await request(`${veer.adminUrl}/v1/config`)).body.json()) as {
      routes: { weights: { canary: number }; fuse: unknown }[]
    }
    expect(config.routes[0]).toMatchObject({ weights: { canary: 0 }, fuse })
    const raw = (await (await request(`${veer.adminUrl}/v1/stats`)).body.json()) as {
      routes: { fuse: unknown }[]
    }
    expect(raw.routes[0]!.fuse).toMatchObject(fuse)
  })

  it('a reloaded file lifts it only by setting the canary weight to 0; it trips again after N more', async () => {
    const stable = await echoStable()
    const canary = await failingCanary(500)
    const route = (weight: number, release = 'v2') => ({
      shutdown: { grace: 0 },
      routes: [
        {
          name: 'default',
          stable: { url: stable.url },
          canary: { url: canary.url, release },
          canaryWeight: weight,
          analysis: { fuse: { consecutiveFailures: 2 }, fallback: { enabled: false } },
        },
      ],
    })
    const file = writeConfig(route(100))
    const veer = await startVeer(['--config', file])
    try {
      for (let i = 0; i < 2; i++) await (await request(veer.url)).body.text()
      const weight = async () => metric(veer, 'veer_route_weight{route="default",version="canary"}')
      expect(await weight()).toBe(0)
      let applied = 1
      const reload = async (config: unknown) => {
        writeConfig(config, dirname(file))
        applied++
        await veer.waitForLog((l) => l.msg === 'config applied' && l.configVersion === applied + 1)
      }
      // A pipeline's next step (50 → another weight) does not lift it: canary stays at 0.
      await reload(route(50))
      expect(await weight()).toBe(0)
      expect(canary.seen).toHaveLength(2)
      // The operator sets the weight to 0: lifted. A later weight then applies.
      await reload(route(0))
      await reload(route(40))
      expect(await weight()).toBe(40)
      const config = (await (await request(`${veer.adminUrl}/v1/config`)).body.json()) as {
        routes: { fuse: unknown }[]
      }
      expect(config.routes[0]!.fuse).toBeNull()
      // The count starts afresh after a trip: N more canary errors trip it again.
      for (let i = 0; i < 10 && (await weight()) !== 0; i++) await (await request(veer.url)).body.text()
      expect(await weight()).toBe(0)
      expect(canary.seen).toHaveLength(4)
      expect(await metric(veer, 'veer_rollbacks_total{route="default",reason="fuse"}')).toBe(2)
    } finally {
      await veer.stop()
    }
  })

  it('a tester forcing the canary at weight 0 does not trip it', async () => {
    const stable = await echoStable()
    const canary = await failingCanary(500)
    const veer = await canaryProxy(stable, canary, {
      canaryWeight: 0,
      allowOverride: true,
      analysis: { fuse: { consecutiveFailures: 2 } },
    })
    for (let i = 0; i < 5; i++) {
      const res = await request(veer.url, { headers: { 'x-veer-version': 'canary' } })
      expect(res.statusCode).toBe(500)
      await res.body.text()
    }
    expect(canary.seen).toHaveLength(5)
    expect(await metric(veer, 'veer_rollbacks_total{route="default",reason="fuse"}')).toBe(0)
    await waitUntil(async () => (await stats(veer)).canary.requests === 5, '5 canary requests in /v1/stats')
    expect((await stats(veer)).canary).toMatchObject({ errors: 5, harmed: 0 })
  })

  it('clients that leave before an answer are neither errors, harm nor fuse counts', async () => {
    const stable = await echoStable()
    const canary = await bed.upstream('canary', (req) => req.resume()) // never answers
    const veer = await canaryProxy(stable, canary, {
      analysis: { fuse: { consecutiveFailures: 2 } },
    })
    for (let i = 0; i < 4; i++) {
      const gone = new AbortController()
      const pending = request(veer.url, { signal: gone.signal }).catch(() => 'aborted')
      await waitUntil(() => canary.seen.length === i + 1, `canary request ${i + 1}`)
      gone.abort()
      expect(await pending).toBe('aborted')
    }
    await waitUntil(async () => (await stats(veer)).canary.requests === 4, '4 canary requests in /v1/stats')
    expect((await stats(veer)).canary).toMatchObject({ errors: 0, harmed: 0, saved: 0 })
    expect(await metric(veer, 'veer_rollbacks_total{route="default",reason="fuse"}')).toBe(0)
    expect(await metric(veer, 'veer_route_weight{route="default",version="canary"}')).toBe(100)
  })

  it('a success in between resets the count', async () => {
    const stable = await echoStable()
    let n = 0
    const canary = await bed.upstream('canary', (req, res) => {
      req.resume()
      res.writeHead(n++ % 3 === 2 ? 200 : 500).end()
    })
    const veer = await canaryProxy(stable, canary, {
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
