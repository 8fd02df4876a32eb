/**
 * The proxy's own failure answers through a real process: 502 for refused or reset connections, 504 for
 * upstream timeouts, 503 once every upstream is ejected, an aborted client connection when the failure
 * comes after the response started, and `code="error"` in the metrics for each of them.
 */
import { createServer, type Server, type Socket } from 'node:net'
import { request } from 'undici'
import { describe, expect, it } from 'vitest'
import { testBed, waitUntil } from '../helpers/bed.ts'
import { deadPort, type Handler } from '../helpers/upstream.ts'
import type { VeerProcess } from '../helpers/veer.ts'
import { closeRawClients, RawClient, rawRequest, within } from './raw-http.ts'

let veer: VeerProcess | undefined
/** Raw TCP upstreams (for answers an HTTP server cannot be made to send) and their connections. */
let tcpServers: Server[] = []
const tcpSockets = new Set<Socket>()

const bed = testBed(async () => {
  closeRawClients()
  for (const s of tcpSockets) s.destroy()
  tcpSockets.clear()
  await Promise.all(tcpServers.map((s) => new Promise((resolve) => s.close(resolve))))
  tcpServers = []
})
const upstream = bed.upstream

interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

async function get(url: string, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await request(url, { headers })
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
}

/** The answer must be the proxy's own JSON error with this status and code. */
function expectError(res: Answer, status: number, code: string): void {
  expect(res.status, res.body).toBe(status)
  expect(res.headers['x-veer-error']).toBe(code)
  expect(res.headers['content-type']).toBe('application/json')
  const body = JSON.parse(res.body) as { error: string; message: string }
  expect(body.error).toBe(code)
  expect(typeof body.message).toBe('string')
  expect(body.message.length).toBeGreaterThan(0)
}

/** veer_requests_total for a route, version and code, from the admin listener (0 when absent). */
async function requestsTotal(adminUrl: string, version: string, code: string): Promise<number> {
  const text = await (await request(`${adminUrl}/metrics`)).body.text()
  const line = text
    .split('\n')
    .find((l) => l.startsWith(`veer_requests_total{route="default",version="${version}",code="${code}"} `))
  return line === undefined ? 0 : Number(line.split(' ').pop())
}

async function startProxy(
  route: Record<string, unknown>,
  top: Record<string, unknown> = {},
): Promise<VeerProcess> {
  veer = await bed.proxy(route, top)
  return veer
}

describe('failure answers', () => {
  it('connect refused → 502 upstream_connect_failed, counted as code="error"', async () => {
    const port = await deadPort()
    veer = await startProxy({ stable: { url: `http://127.0.0.1:${port}` } })
    expectError(await get(veer.url), 502, 'upstream_connect_failed')
    expectError(await get(`${veer.url}/again`), 502, 'upstream_connect_failed')
    expect(await requestsTotal(veer.adminUrl, 'stable', 'error')).toBe(2)
  })

  it('upstream headers timeout → 504 upstream_timeout', async () => {
    const held: unknown[] = []
    // Never answers; the socket is destroyed when the upstream closes after the test.
    const stable = await upstream('stable', (req) => held.push(req))
    veer = await startProxy({ stable: { url: stable.url }, timeouts: { headers: '300ms' } })
    expectError(await get(veer.url), 504, 'upstream_timeout')
    expect(held).toHaveLength(1)
    expect(await requestsTotal(veer.adminUrl, 'stable', 'error')).toBe(1)
  })

  it('upstream resets the connection before answering → 502 upstream_reset', async () => {
    const stable = await upstream('stable', (req) => req.socket.destroy())
    veer = await startProxy({ stable: { url: stable.url } })
    expectError(await get(veer.url), 502, 'upstream_reset')
    expect(stable.seen).toHaveLength(1)
    expect(await requestsTotal(veer.adminUrl, 'stable', 'error')).toBe(1)
  })

  it('a valid request after a failure is served normally (the failure left nothing behind)', async () => {
    let n = 0
    const stable = await upstream('stable', (req, res) => {
      if (n++ === 0) return req.socket.destroy()
      req.resume()
      res.end('fine')
    })
    veer = await startProxy({ stable: { url: stable.url } })
    expectError(await get(veer.url), 502, 'upstream_reset')
    const ok = await get(veer.url)
    expect(ok.status).toBe(200)
    expect(ok.body).toBe('fine')
  })
})

describe('more failure answers', () => {
  it.each([
    ['not HTTP at all', 'THIS IS NOT HTTP\r\n\r\n'],
    ['an invalid status code', 'HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n'],
    ['an invalid header line', 'HTTP/1.1 200 OK\r\nbad header\r\nContent-Length: 0\r\n\r\n'],
  ])('an invalid upstream answer (%s) → 502 upstream_bad_response', async (_name, answer) => {
    const server = createServer((socket) => {
      tcpSockets.add(socket)
      socket.on('error', () => {})
      socket.once('data', () => socket.end(answer))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    tcpServers.push(server)
    const port = (server.address() as { port: number }).port
    veer = await startProxy({ stable: { url: `http://127.0.0.1:${port}` } })
    expectError(await get(veer.url), 502, 'upstream_bad_response')
  })

  it('a reason phrase Node cannot write (bytes beyond Latin-1): the answer still comes, with the standard phrase', async () => {
    const server = createServer((socket) => {
      tcpSockets.add(socket)
      socket.on('error', () => {})
      socket.once('data', () =>
        socket.end(Buffer.from('HTTP/1.1 200 Ok\xff\xfe\r\nContent-Length: 2\r\n\r\nhi', 'latin1')),
      )
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    tcpServers.push(server)
    veer = await startProxy({
      stable: { url: `http://127.0.0.1:${(server.address() as { port: number }).port}` },
    })
    const res = await within(
      rawRequest(veer.port, 'GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n'),
      5000,
      'the answer',
    )
    expect(res.status).toBe(200)
    expect(res.statusText).toBe('OK')
    expect(res.body.toString()).toBe('hi')
  })

  it('more requests than connections + maxPending → 503 upstream_overloaded, the others still served', async () => {
    const held: (() => void)[] = []
    const stable = await upstream('stable', (req, res) => {
      req.resume()
      held.push(() => res.end('late'))
    })
    veer = await startProxy({ stable: { url: stable.url }, connections: 1, maxPending: 0 })
    const first = get(veer.url)
    await waitUntil(() => held.length === 1)
    expectError(await get(veer.url), 503, 'upstream_overloaded')
    held[0]!()
    const late = await first
    expect(late.status).toBe(200)
    expect(late.body).toBe('late')
    expect(stable.seen).toHaveLength(1)
  })
})

describe('a client that leaves while its request waits for a connection', () => {
  it('never has its request sent, and the connection it would have taken stays free', async () => {
    let release: () => void = () => {}
    const held = new Promise<void>((r) => (release = r))
    const stable = await upstream('stable', (req, res) => {
      req.resume()
      if (req.url === '/a') held.then(() => res.end('a'))
      else res.end(req.url)
    })
    const v = await startProxy({ stable: { url: stable.url }, connections: 1 })
    const a = request(`${v.url}/a`)
    await waitUntil(() => stable.seen.length === 1, 'the upstream to hold /a')
    const b = new AbortController()
    const bDone = request(`${v.url}/b`, { signal: b.signal }).catch((e: Error) => e)
    // /b is queued behind /a on the one connection (the proxy counts it in flight); its client leaves.
    await waitUntil(async () => {
      const stats = (await (await request(`${v.adminUrl}/v1/stats`)).body.json()) as {
        routes: { stable: { inflight: number } }[]
      }
      return stats.routes[0]!.stable.inflight === 2
    }, '/b to wait for the connection')
    b.abort()
    expect(await bDone).toBeInstanceOf(Error)
    release()
    expect(await (await a).body.text()).toBe('a')
    const c = await request(`${v.url}/c`)
    expect(await c.body.text()).toBe('/c')
    expect(stable.seen.map((r) => r.url)).toEqual(['/a', '/c'])
  })
})

describe('passive ejection', () => {
  it('a stable-only route to a dead port answers 503 no_healthy_upstream after ejectAfter failures', async () => {
    const port = await deadPort()
    veer = await startProxy(
      { stable: { url: `http://127.0.0.1:${port}` } },
      { health: { ejectAfter: 2, ejectFor: '60s' } },
    )
    expectError(await get(veer.url), 502, 'upstream_connect_failed')
    expectError(await get(veer.url), 502, 'upstream_connect_failed')
    expectError(await get(veer.url), 503, 'no_healthy_upstream')
    expectError(await get(veer.url), 503, 'no_healthy_upstream')
  })

  it('with a dead canary at 50%, after ejection every request succeeds on stable', async () => {
    const stable = await upstream('stable')
    const port = await deadPort()
    veer = await startProxy(
      {
        stable: { url: stable.url },
        canary: { url: `http://127.0.0.1:${port}` },
        canaryWeight: 50,
        analysis: { fallback: { enabled: false } },
      },
      { health: { ejectAfter: 2, ejectFor: '60s' } },
    )
    // Without the fallback, until the canary is ejected its share fails; 50% fails twice well within 40.
    let failures = 0
    for (let i = 0; i < 40 && failures < 2; i++) {
      const res = await get(veer.url)
      if (res.status === 200) expect(res.headers['x-veer-version']).toBe('stable')
      else {
        expectError(res, 502, 'upstream_connect_failed')
        expect(res.headers['x-veer-version']).toBe('canary')
        failures++
      }
    }
    expect(failures).toBe(2)
    const after = await Promise.all(Array.from({ length: 40 }, () => get(veer!.url)))
    for (const res of after) {
      expect(res.status).toBe(200)
      expect(res.headers['x-veer-version']).toBe('stable')
    }
    expect(await requestsTotal(veer.adminUrl, 'canary', 'error')).toBe(2)
  })

  it('with the fallback (the default) even the GETs that hit the dead canary are answered by stable', async () => {
    const stable = await upstream('stable')
    const port = await deadPort()
    veer = await startProxy(
      { stable: { url: stable.url }, canary: { url: `http://127.0.0.1:${port}` }, canaryWeight: 50 },
      { health: { ejectAfter: 2, ejectFor: '60s' } },
    )
    for (let i = 0; i < 20; i++) {
      const res = await get(veer.url)
      expect(res.status).toBe(200)
      expect(res.headers['x-veer-version']).toBe('stable')
    }
    // The canary's connect failures still count against it (and ejected it).
    expect(await requestsTotal(veer.adminUrl, 'canary', 'error')).toBe(2)
  })
})

describe('a failure after the response started', () => {
  /** Headers and part of the body, then the upstream connection dies. */
  const partial =
    (framing: 'length' | 'chunked'): Handler =>
    (req, res) => {
      req.resume()
      res.writeHead(
        200,
        framing === 'length' ? { 'content-length': '100000' } : { 'content-type': 'text/plain' },
      )
      res.write('x'.repeat(1000), () => res.socket?.destroy())
    }

  it.each(['length', 'chunked'] as const)(
    'with %s framing: the client connection is aborted, never ended as if complete',
    async (framing) => {
      const stable = await upstream('stable', partial(framing))
      veer = await startProxy({ stable: { url: stable.url } })
      const client = await RawClient.open(veer.port)
      await client.write('GET / HTTP/1.1\r\nHost: app.test\r\n\r\n')
      const res = await client.readResponse()
      expect(res.status).toBe(200)
      expect(res.complete).toBe(false)
      expect(res.body.length).toBeLessThan(100_000)
      await client.closed
      expect(await requestsTotal(veer.adminUrl, 'stable', 'error')).toBe(1)
      expect(await requestsTotal(veer.adminUrl, 'stable', '200')).toBe(0)
    },
  )

  it('an upstream that stalls mid-body past timeouts.body: the client connection is aborted', async () => {
    const stable = await upstream('stable', (req, res) => {
      req.resume()
      res.writeHead(200, { 'content-length': '100000' })
      res.write('x'.repeat(1000))
    })
    veer = await startProxy({ stable: { url: stable.url }, timeouts: { body: '300ms' } })
    const client = await RawClient.open(veer.port)
    await client.write('GET / HTTP/1.1\r\nHost: app.test\r\n\r\n')
    const res = await client.readResponse()
    expect(res.status).toBe(200)
    expect(res.complete).toBe(false)
    expect(res.body.length).toBe(1000)
    await client.closed
    expect(await requestsTotal(veer.adminUrl, 'stable', 'error')).toBe(1)
  })

  it('an HTTP client sees the body fail, not a short body', async () => {
    const stable = await upstream('stable', partial('chunked'))
    veer = await startProxy({ stable: { url: stable.url } })
    const res = await request(veer.url)
    expect(res.statusCode).toBe(200)
    await expect(res.body.text()).rejects.toThrow()
  })
})

describe('the client goes away', () => {
  /** What became of each request the upstream received: its body ended, or it was cut off. */
  function recordingUpstream(outcomes: string[]): Handler {
    return (req, res) => {
      let bytes = 0
      req.on('data', (d: Buffer) => (bytes += d.length))
      req.on('end', () => {
        outcomes.push(`end:${bytes}`)
        res.end('ok')
      })
      req.on('close', () => {
        if (!req.complete) outcomes.push(`aborted:${bytes}`)
      })
    }
  }

  it.each([
    ['Content-Length', `Content-Length: 100\r\n\r\n${'x'.repeat(40)}`],
    ['chunked', `Transfer-Encoding: chunked\r\n\r\n28\r\n${'x'.repeat(40)}\r\n`],
  ])(
    'mid-upload (%s): the upstream sees the request cut off, never a complete short body',
    async (_n, rest) => {
      const outcomes: string[] = []
      const stable = await upstream('stable', recordingUpstream(outcomes))
      veer = await startProxy({ stable: { url: stable.url } })
      const client = await RawClient.open(veer.port)
      await client.write(`POST /up HTTP/1.1\r\nHost: app.test\r\n${rest}`)
      await waitUntil(() => stable.seen.length === 1)
      client.close()
      await waitUntil(() => outcomes.length === 1)
      expect(outcomes[0]).toMatch(/^aborted:/)
    },
  )

  it('mid-download: the upstream request is aborted too', async () => {
    let upstreamClosed!: () => void
    const closed = new Promise<void>((resolve) => (upstreamClosed = resolve))
    const stable = await upstream('stable', (req, res) => {
      req.resume()
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('first chunk')
      // Never finishes by itself: only the proxy letting go ends this response.
      res.on('close', () => upstreamClosed())
    })
    veer = await startProxy({ stable: { url: stable.url } })
    const client = await RawClient.open(veer.port)
    await client.write('GET / HTTP/1.1\r\nHost: app.test\r\n\r\n')
    expect(await client.waitFor((b) => b.includes('first chunk'))).toBe(true)
    client.close()
    await within(closed, 5000, 'the upstream response closing')
  })
})
