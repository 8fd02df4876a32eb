/**
 * The upstream URL's scheme picks the protocol, through a real proxy process to real upstreams:
 * `h2c://` cleartext HTTP/2 (streams multiplexed on few connections, GOAWAY taken in stride),
 * `https://` with ALPN (h2 when the upstream offers it, else HTTP/1.1), verified against `ca` for the
 * URL's host or `serverName`; a certificate that does not verify is `upstream_tls_failed` and no request
 * reaches that upstream. CA files that cannot be used stop the start with one line.
 */
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { describe, expect, it } from 'vitest'
import { testBed, waitUntil } from '../helpers/bed.ts'
import { makeCa } from '../helpers/certs.ts'
import { h2connect, h2request } from '../helpers/h2.ts'
import { type H2Handler, type H2Upstream, startH2Upstream } from '../helpers/h2-upstream.ts'
import { proxyRefuses, writeConfig } from '../helpers/veer.ts'

let opened: { close(): Promise<void> }[] = []
const bed = testBed(async () => {
  await Promise.all(opened.map((u) => u.close()))
  opened = []
})
const ca = makeCa()
const local = ca.leaf('local', ['localhost', '127.0.0.1'])
const internal = ca.leaf('internal', ['api.internal'])

async function h2Upstream(
  name: string,
  opts: Parameters<typeof startH2Upstream>[1] = {},
): Promise<H2Upstream> {
  const u = await startH2Upstream(name, opts)
  opened.push(u)
  return u
}

/** An h2 upstream handler that holds /slow until `release()` and answers anything else at once. */
function holdingSlow(): { handler: H2Handler; release: (() => void) | null } {
  const held: { handler: H2Handler; release: (() => void) | null } = {
    release: null,
    handler: (req, res) => {
      req.resume()
      if (req.url === '/slow') {
        held.release = () => res.end('slow done')
        return
      }
      res.end(`fast ${req.url}`)
    },
  }
  return held
}

describe('h2c:// upstreams', () => {
  it('carries HTTP/1.1 and HTTP/2 clients to a cleartext HTTP/2 upstream, multiplexed', async () => {
    const up = await h2Upstream('stable')
    const veer = await bed.proxy({ stable: { url: up.url }, connections: 4 })
    const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => fetch(`${veer.url}/items/${i}`)))
    for (const [i, res] of answers.entries()) {
      expect(res.status).toBe(200)
      const seen = (await res.json()) as { httpVersion: string; url: string; headers: Record<string, string> }
      expect(seen.httpVersion).toBe('2.0')
      expect(seen.url).toBe(`/items/${i}`)
      // The client's Host is the upstream's :authority.
      expect(seen.headers[':authority']).toBe(`127.0.0.1:${veer.port}`)
      expect(seen.headers['x-forwarded-proto']).toBe('http')
      // Via names the version each hop received (RFC 9110 7.6.3): HTTP/1.1 from the client, HTTP/2 back.
      expect(seen.headers.via).toBe('1.1 veer')
      expect(res.headers.get('via')).toBe('2 veer')
    }
    // 30 requests at once on at most `connections` HTTP/2 connections, not one each.
    expect(up.sessions.length).toBeGreaterThanOrEqual(1)
    expect(up.sessions.length).toBeLessThanOrEqual(4)

    const session = await h2connect(veer.url)
    const a = await h2request(session, { ':path': '/h2', ':authority': 'shop.example' })
    session.close()
    expect(a.status).toBe(200)
    expect(JSON.parse(a.body).httpVersion).toBe('2.0')
    expect(JSON.parse(a.body).headers.via).toBe('2 veer')
    expect(a.headers.via).toBe('2 veer')
  })

  it('passes response trailers from an HTTP/2 upstream to an HTTP/2 client', async () => {
    const handler: H2Handler = (req, res) => {
      req.resume()
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/octet-stream', trailer: 'x-checksum' })
        res.write('part one, ')
        res.addTrailers({ 'x-checksum': 'abc123' })
        res.end('part two')
      })
    }
    const up = await h2Upstream('stable', { handler })
    const veer = await bed.proxy({ stable: { url: up.url } })
    const session = await h2connect(veer.url)
    const a = await h2request(session, { ':path': '/t', ':authority': 'x' })
    session.close()
    expect(a.status).toBe(200)
    expect(a.body).toBe('part one, part two')
    expect(a.trailers['x-checksum']).toBe('abc123')
  })

  it('after an upstream GOAWAY, the stream in flight finishes and the next request gets a new connection', async () => {
    const slowOne = holdingSlow()
    const up = await h2Upstream('stable', { handler: slowOne.handler })
    const veer = await bed.proxy({ stable: { url: up.url }, connections: 1 })
    const slow = fetch(`${veer.url}/slow`)
    await waitUntil(() => slowOne.release !== null, 'the slow request at the upstream')
    expect(up.sessions).toHaveLength(1)
    // The upstream is going away (a rolling restart): it ends its connection gracefully.
    up.sessions[0]!.close()
    slowOne.release!()
    const first = await slow
    expect(first.status).toBe(200)
    expect(await first.text()).toBe('slow done')
    const next = await fetch(`${veer.url}/after`)
    expect(next.status).toBe(200)
    expect(await next.text()).toBe('fast /after')
    expect(up.sessions).toHaveLength(2)
  })
  it('a session that got GOAWAY takes no new stream: the next request opens a new one while it drains', async () => {
    const slowOne = holdingSlow()
    const up = await h2Upstream('stable', { handler: slowOne.handler })
    const veer = await bed.proxy({ stable: { url: up.url }, connections: 1 })
    const slow = fetch(`${veer.url}/slow`)
    await waitUntil(() => slowOne.release !== null, 'the slow request at the upstream')
    let goaway = false
    up.sessions[0]!.close()
    up.sessions[0]!.on('close', () => (goaway = true))
    // Answered on a second session while the first still carries the slow stream.
    const during = await fetch(`${veer.url}/during`)
    expect([during.status, await during.text()]).toEqual([200, 'fast /during'])
    expect(up.sessions).toHaveLength(2)
    expect(goaway).toBe(false)
    slowOne.release!()
    const first = await slow
    expect([first.status, await first.text()]).toEqual([200, 'slow done'])
  })

  it('keeps to the upstream\u2019s SETTINGS_MAX_CONCURRENT_STREAMS: the rest wait for a free stream', async () => {
    let open = 0
    let most = 0
    const waiting: (() => void)[] = []
    const handler: H2Handler = (req, res) => {
      open++
      most = Math.max(most, open)
      req.resume()
      waiting.push(() => {
        open--
        res.end(`ok ${req.url}`)
      })
    }
    const up = await h2Upstream('stable', { handler })
    up.server.updateSettings({ maxConcurrentStreams: 2 })
    const veer = await bed.proxy({ stable: { url: up.url }, connections: 1 })
    // One first, so the session and its SETTINGS are there before the rest.
    const warm = fetch(`${veer.url}/warm`)
    await waitUntil(() => waiting.length === 1, 'the first request at the upstream')
    waiting.shift()!()
    expect((await warm).status).toBe(200)
    const all = Array.from({ length: 6 }, (_, i) => fetch(`${veer.url}/n${i}`))
    for (let answered = 0; answered < 6; answered++) {
      await waitUntil(() => waiting.length > 0, 'a request at the upstream')
      expect(open).toBeLessThanOrEqual(2)
      waiting.shift()!()
    }
    const answers = await Promise.all(all)
    expect(answers.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200])
    expect(most).toBe(2)
    expect(up.sessions).toHaveLength(1)
  })

  it('an upload the upstream answers early (413, body unread) or the client resets: the session carries on', async () => {
    const aborted: string[] = []
    const handler: H2Handler = (req, res) => {
      if (req.url === '/big') {
        // Answers at once and never reads the body: the answer reaches the client all the same.
        res.writeHead(413, { 'content-type': 'text/plain' })
        res.end('too big')
        return
      }
      if (req.url === '/reset') {
        req.on('aborted', () => aborted.push(req.url))
        req.resume()
        return
      }
      req.resume()
      req.on('end', () => res.end(`ok ${req.url}`))
    }
    const up = await h2Upstream('stable', { handler })
    const veer = await bed.proxy({ stable: { url: up.url }, connections: 1 })
    const session = await h2connect(veer.url)
    const early = await h2request(session, { ':method': 'POST', ':path': '/big' }, Buffer.alloc(32 * 1024, 1))
    expect([early.status, early.body]).toEqual([413, 'too big'])

    // A client that resets its upload half-way: the upstream's stream is reset too.
    const half = session.request({ ':method': 'POST', ':path': '/reset' }, { endStream: false })
    half.on('error', () => {})
    half.write(Buffer.alloc(64 * 1024, 2))
    await waitUntil(() => up.seen.some((r) => r.url === '/reset'), 'the upload at the upstream')
    half.close(8 /* CANCEL */)
    await waitUntil(() => aborted.length === 1, 'the upstream stream reset')

    const after = await h2request(session, { ':method': 'POST', ':path': '/after' }, 'small')
    session.close()
    expect([after.status, after.body]).toEqual([200, 'ok /after'])
    // All on the one upstream connection: neither failure cost it (no GOAWAY, no ENHANCE_YOUR_CALM).
    expect(up.sessions).toHaveLength(1)
    const access = () => veer.logs.filter((l) => l.msg === 'access')
    await waitUntil(() => access().length === 3, 'three access lines')
    const lines = access().map((l) => [l.path, l.status, l.error])
    expect(lines).toContainEqual(['/big', 413, undefined])
    expect(lines).toContainEqual(['/reset', null, 'client_closed'])
  })
})

describe('https:// upstreams', () => {
  it('speaks h2 to an upstream that offers it and HTTP/1.1 to one that does not, verified with ca', async () => {
    const h2 = await h2Upstream('canary', { tls: local })
    const h1 = createHttpsServer({ cert: local.certText, key: local.keyText }, (req, res) => {
      res.end(JSON.stringify({ httpVersion: req.httpVersion, host: req.headers.host }))
    })
    await new Promise<void>((ok) => h1.listen(0, '127.0.0.1', ok))
    opened.push({ close: () => new Promise<void>((ok) => h1.close(() => ok())) })
    h1.on('connection', (s) => opened.push({ close: async () => void s.destroy() }))
    const h1Url = `https://127.0.0.1:${(h1.address() as AddressInfo).port}`
    const veer = await bed.proxy({
      stable: { url: h1Url, ca: ca.cert },
      canary: { url: h2.url, ca: ca.cert },
      allowOverride: true,
    })
    const toStable = await fetch(`${veer.url}/s`)
    expect(toStable.status).toBe(200)
    expect(toStable.headers.get('via')).toBe('1.1 veer')
    expect(await toStable.json()).toEqual({ httpVersion: '1.1', host: `127.0.0.1:${veer.port}` })
    const toCanary = await fetch(`${veer.url}/c`, {
      headers: { host: 'shop.example', 'x-veer-version': 'canary' },
    })
    expect(toCanary.status).toBe(200)
    // ALPN picked h2 on this connection: the answer came in over HTTP/2.
    expect(toCanary.headers.get('via')).toBe('2 veer')
    const seen = (await toCanary.json()) as {
      httpVersion: string
      url: string
      headers: Record<string, string>
    }
    expect(seen.httpVersion).toBe('2.0')
    expect(seen.headers[':authority']).toBe(`127.0.0.1:${veer.port}`)
  })

  it('checks the certificate against serverName; one that does not verify is upstream_tls_failed', async () => {
    const named = await h2Upstream('stable', { tls: internal })
    const good = await bed.proxy({ stable: { url: named.url, ca: ca.cert, serverName: 'api.internal' } })
    expect((await fetch(`${good.url}/ok`)).status).toBe(200)

    // The URL's host (127.0.0.1) is not in the certificate.
    const wrongName = await bed.proxy({ stable: { url: named.url, ca: ca.cert } })
    const r1 = await fetch(`${wrongName.url}/x`)
    expect(r1.status).toBe(502)
    expect(r1.headers.get('x-veer-error')).toBe('upstream_tls_failed')
    // Not signed by a CA veer trusts (the system CAs, without `ca`).
    const untrusted = await bed.proxy({ stable: { url: named.url, serverName: 'api.internal' } })
    const r2 = await fetch(`${untrusted.url}/y`)
    expect(r2.status).toBe(502)
    expect(r2.headers.get('x-veer-error')).toBe('upstream_tls_failed')
    expect(named.seen.map((r) => r.url)).toEqual(['/ok'])
    const metrics = await (await fetch(`${untrusted.adminUrl}/metrics`)).text()
    expect(metrics).toMatch(/veer_requests_total\{route="default",version="stable",code="error"[^}]*\} 1/)
  })
})

describe('upstream settings that cannot work stop the start with one line', () => {
  const fails = async (stable: Record<string, unknown>, ...patterns: RegExp[]) => {
    const lines = await proxyRefuses(['--config', writeConfig({ routes: [{ name: 'default', stable }] })])
    expect(lines, lines.join('\n')).toHaveLength(1)
    for (const p of patterns) expect(lines[0]).toMatch(p)
  }

  it('names the field', async () => {
    await fails(
      { url: 'ftp://127.0.0.1:21' },
      /routes\[0\]\.stable\.url/,
      /http:\/\/, https:\/\/ or h2c:\/\//,
    )
    await fails({ url: 'h2c://127.0.0.1:9/path' }, /routes\[0\]\.stable\.url/, /origin only/)
    await fails(
      { url: 'http://127.0.0.1:9', ca: ca.cert },
      /routes\[0\]\.stable\.ca/,
      /only to an https:\/\/ upstream/,
    )
    await fails(
      { url: 'https://127.0.0.1:9', ca: `${ca.dir}/nope.pem` },
      /routes\[0\]\.stable\.ca/,
      /no such file/,
    )
    await fails(
      { url: 'https://127.0.0.1:9', ca: local.key },
      /routes\[0\]\.stable\.ca/,
      /not a PEM CA certificate/,
    )
  })
})
