/**
 * Header rewriting through a real proxy process: hop-by-hop fields and fields named in Connection are
 * removed both ways, forwarding fields follow the trusted-hop count, Via is added both ways, and the
 * upstream comes only from the config.
 */
import { request } from 'undici'
import { describe, expect, it } from 'vitest'
import { testBed } from '../helpers/bed.ts'
import type { VeerProcess } from '../helpers/veer.ts'
import { closeRawClients, errorOf, RawClient, rawRequest } from './raw-http.ts'

const bed = testBed(closeRawClients)
let veer: VeerProcess | undefined
const upstream = bed.upstream

interface Echo {
  name: string
  method: string
  url: string
  headers: Record<string, string>
  rawHeaders: string[]
}

async function startProxy(
  route: Record<string, unknown>,
  top: Record<string, unknown> = {},
): Promise<VeerProcess> {
  veer = await bed.proxy(route, top)
  return veer
}

/** Lower-cased names of a raw header list. */
function names(raw: readonly string[]): string[] {
  return raw.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase())
}

describe('hop-by-hop fields', () => {
  it('removes hop-by-hop request fields and every field the Connection header names', async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } })
    const res = await rawRequest(
      veer.port,
      'GET /hop HTTP/1.1\r\n' +
        'Host: app.test\r\n' +
        'Connection: keep-alive, X-Secret\r\n' +
        'Connection: x-other\r\n' +
        'Keep-Alive: timeout=77\r\n' +
        'TE: trailers\r\n' +
        'Upgrade: h2c\r\n' +
        'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n' +
        'Proxy-Connection: keep-alive\r\n' +
        'x-secret: 1\r\n' +
        'X-Other: 2\r\n' +
        'x-kept: yes\r\n' +
        '\r\n',
    )
    expect(res.status).toBe(200)
    expect(stable.seen).toHaveLength(1)
    const seen = stable.seen[0]!
    const got = names(seen.rawHeaders)
    for (const hop of [
      'keep-alive',
      'te',
      'upgrade',
      'http2-settings',
      'proxy-connection',
      'x-secret',
      'x-other',
    ]) {
      expect(got, `${hop} must not reach the upstream`).not.toContain(hop)
    }
    // undici may say keep-alive for its own hop; nothing of the client's Connection value survives.
    expect(seen.headers.connection ?? 'keep-alive').toBe('keep-alive')
    expect(seen.headers['x-kept']).toBe('yes')
    expect(seen.url).toBe('/hop')
  })

  it('removes hop-by-hop response fields and every field the upstream Connection header names', async () => {
    const stable = await upstream('stable', (req, res) => {
      req.resume()
      res.writeHead(200, [
        ['Connection', 'X-Internal'],
        ['Keep-Alive', 'timeout=77, max=9'],
        ['Proxy-Connection', 'keep-alive'],
        ['x-internal', 'secret'],
        ['x-public', 'ok'],
        ['content-type', 'text/plain'],
        ['Transfer-Encoding', 'chunked'],
      ] as unknown as string[])
      res.end('hello')
    })
    veer = await startProxy({ stable: { url: stable.url } })
    const res = await rawRequest(veer.port, 'GET / HTTP/1.1\r\nHost: app.test\r\n\r\n')
    expect(res.status).toBe(200)
    expect(res.body.toString()).toBe('hello')
    expect(res.headers['x-public']).toBe('ok')
    expect(res.headers['x-internal']).toBeUndefined()
    expect(res.headers['proxy-connection']).toBeUndefined()
    // The client hop's own keep-alive fields are the proxy's, not the upstream's.
    expect(res.headers['keep-alive'] ?? '').not.toContain('max=9')
    expect(res.headers.connection ?? '').not.toMatch(/x-internal/i)
  })
})

describe('end-to-end response fields', () => {
  it('passes repeated fields (Set-Cookie) through as separate lines', async () => {
    const stable = await upstream('stable', (req, res) => {
      req.resume()
      res.setHeader('set-cookie', ['a=1; Path=/', 'b=2; Path=/'])
      res.setHeader('content-length', '2')
      res.end('ok')
    })
    veer = await startProxy({ stable: { url: stable.url } })
    const res = await rawRequest(veer.port, 'GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n')
    const cookies = res.rawHeaders.filter(([n]) => n.toLowerCase() === 'set-cookie').map(([, v]) => v)
    expect(cookies).toEqual(['a=1; Path=/', 'b=2; Path=/'])
  })
})

describe('forwarding fields with trustedHops 0', () => {
  it('discards client-supplied forwarding fields and sets them from the connection', async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } })
    const res = await request(`${veer.url}/fwd`, {
      headers: {
        host: 'app.test',
        'x-forwarded-for': '6.6.6.6',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'evil.example',
        forwarded: 'for=6.6.6.6;proto=https',
        via: '1.1 spoofed',
      },
    })
    const echo = (await res.body.json()) as Echo
    expect(res.statusCode).toBe(200)
    expect(echo.headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(echo.headers['x-forwarded-proto']).toBe('http')
    expect(echo.headers['x-forwarded-host']).toBe('app.test')
    expect(echo.headers.forwarded).toBe('for=127.0.0.1;proto=http;host=app.test')
    expect(JSON.stringify(echo.headers)).not.toContain('6.6.6.6')
    expect(JSON.stringify(echo.headers)).not.toContain('evil.example')
    // Via is a trace, not a trust decision: the proxy appends itself.
    expect(echo.headers.via).toMatch(/, 1\.1 veer$/)
    // Each forwarding field is sent exactly once.
    const sent = names(echo.rawHeaders)
    for (const f of [
      'x-forwarded-for',
      'x-forwarded-proto',
      'x-forwarded-host',
      'forwarded',
      'via',
      'host',
    ]) {
      expect(
        sent.filter((n) => n === f),
        f,
      ).toHaveLength(1)
    }
  })

  it('adds Via to the response and names the serving version', async () => {
    const stable = await upstream('stable', (req, res) => {
      req.resume()
      res.writeHead(200, { via: '1.0 upstream-cache', 'content-length': '2' })
      res.end('ok')
    })
    veer = await startProxy({ stable: { url: stable.url } })
    const res = await request(veer.url)
    await res.body.dump()
    expect(res.headers.via).toBe('1.0 upstream-cache, 1.1 veer')
    expect(res.headers['x-veer-version']).toBe('stable')
  })

  it('adds Via to the request and the response when neither side sent one', async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } })
    const res = await request(veer.url)
    const echo = (await res.body.json()) as Echo
    expect(echo.headers.via).toBe('1.1 veer')
    expect(res.headers.via).toBe('1.1 veer')
  })

  it("writes the request's own version in its Via hop: an HTTP/1.0 request gets 1.0 veer", async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } })
    const res = await rawRequest(veer.port, 'GET /one-zero HTTP/1.0\r\nHost: app.test\r\n\r\n')
    expect(res.status).toBe(200)
    const echo = JSON.parse(res.body.toString()) as Echo
    expect(echo.url).toBe('/one-zero')
    expect(echo.headers.via).toBe('1.0 veer')
    // The answer came from the upstream over HTTP/1.1.
    expect(res.headers.via).toBe('1.1 veer')
  })
})

describe('forwarding fields with trustedHops 1', () => {
  it("keeps the rightmost entry of the client's X-Forwarded-For, then the peer", async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } }, { trustedHops: 1 })
    const res = await rawRequest(
      veer.port,
      'GET / HTTP/1.1\r\nHost: app.test\r\n' +
        'X-Forwarded-For: 6.6.6.6, 10.0.0.1\r\n' +
        'X-Forwarded-For: 10.0.0.2\r\n' +
        'X-Forwarded-Proto: https\r\n' +
        'X-Forwarded-Host: public.example\r\n' +
        'Forwarded: for=6.6.6.6, for=10.0.0.2;proto=https\r\n' +
        'Connection: close\r\n\r\n',
    )
    expect(res.status).toBe(200)
    const echo = JSON.parse(res.body.toString()) as Echo
    expect(echo.headers['x-forwarded-for']).toBe('10.0.0.2, 127.0.0.1')
    expect(echo.headers['x-forwarded-proto']).toBe('https')
    expect(echo.headers['x-forwarded-host']).toBe('public.example')
    expect(echo.headers.forwarded).toBe('for=10.0.0.2;proto=https, for=127.0.0.1;proto=https;host=app.test')
    expect(JSON.stringify(echo.headers)).not.toContain('6.6.6.6')
  })

  it('takes proto and host from the nearest trusted hop when they arrive as lists', async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } }, { trustedHops: 1 })
    // The client said https and a spoofed host; the trusted proxy appended what it saw.
    const res = await rawRequest(
      veer.port,
      'GET / HTTP/1.1\r\nHost: app.test\r\n' +
        'X-Forwarded-Proto: https\r\nX-Forwarded-Proto: http\r\n' +
        'X-Forwarded-Host: spoofed.example, real.example\r\n' +
        'Connection: close\r\n\r\n',
    )
    const echo = JSON.parse(res.body.toString()) as Echo
    expect(echo.headers['x-forwarded-proto']).toBe('http')
    expect(echo.headers['x-forwarded-host']).toBe('real.example')
    expect(echo.headers.forwarded).toBe('for=127.0.0.1;proto=http;host=app.test')
  })

  it('without client forwarding fields, starts the list with the peer', async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } }, { trustedHops: 1 })
    const res = await request(veer.url, { headers: { host: 'app.test' } })
    const echo = (await res.body.json()) as Echo
    expect(echo.headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(echo.headers['x-forwarded-proto']).toBe('http')
    expect(echo.headers['x-forwarded-host']).toBe('app.test')
  })
})

describe('Host and the request target', () => {
  it("preserveHost false sends the upstream's host, and X-Forwarded-Host keeps the client's", async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url }, preserveHost: false })
    const res = await request(veer.url, { headers: { host: 'app.test' } })
    const echo = (await res.body.json()) as Echo
    expect(echo.headers.host).toBe(`127.0.0.1:${stable.port}`)
    expect(echo.headers['x-forwarded-host']).toBe('app.test')
  })

  it("preserveHost (the default) sends the client's Host", async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } })
    const res = await request(veer.url, { headers: { host: 'app.test' } })
    const echo = (await res.body.json()) as Echo
    expect(echo.headers.host).toBe('app.test')
  })

  it('refuses an absolute-form target with 400 bad_request_target; the upstream sees nothing', async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } })
    const res = await rawRequest(veer.port, 'GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n')
    expect(res.status).toBe(400)
    expect(res.headers['x-veer-error']).toBe('bad_request_target')
    expect(errorOf(res).error).toBe('bad_request_target')
    expect(stable.seen).toHaveLength(0)
  })

  it('refuses an asterisk-form and an authority-form (CONNECT) target; nothing is tunnelled', async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } })
    const star = await rawRequest(veer.port, 'OPTIONS * HTTP/1.1\r\nHost: app.test\r\n\r\n')
    expect(star.status).toBe(400)
    expect(star.headers['x-veer-error']).toBe('bad_request_target')
    const client = await RawClient.open(veer.port)
    await client.write('CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n')
    const answer = (await client.readToClose()).toString('latin1')
    // Either an error answer or a closed connection; never "200 Connection established".
    expect(answer).not.toMatch(/^HTTP\/1\.1 2/)
    expect(stable.seen).toHaveLength(0)
  })

  it('routes a request for a foreign Host or a //host path to the configured upstream only', async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } })
    const res = await rawRequest(
      veer.port,
      'GET //evil.example/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n',
    )
    expect(res.status).toBe(200)
    const echo = JSON.parse(res.body.toString()) as Echo
    expect(echo.name).toBe('stable')
    // Doubled slashes are merged (server.normalizePath): no upstream can read it as `//authority/…`.
    expect(echo.url).toBe('/evil.example/x')
    expect(stable.seen).toHaveLength(1)
  })
})
