/**
 * HTTP edge cases on both protocols: 103 Early Hints reach the client before the final answer (a
 * client's 100-continue is in http-semantics.test.ts), CONNECT gets a clear 4xx, header names that are also object properties are ordinary
 * fields, bytes after a `Connection: close` request do not cost the answer, and routes match on the
 * normalised path, which is also the path the upstream sees (unless `server.normalizePath` is off).
 */
import { connect as h2connect } from 'node:http2'
import { afterEach, describe, expect, it } from 'vitest'
import { testBed, waitUntil } from '../helpers/bed.ts'
import { startVeer, type VeerProcess, writeConfig } from '../helpers/veer.ts'
import { closeRawClients, RawClient } from './raw-http.ts'

const bed = testBed(closeRawClients)

/** Answers 200 with the path it was asked for. */
function pathEcho(): Parameters<typeof bed.upstream>[1] {
  return (req, res) => {
    req.resume()
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end(req.url)
  }
}

describe('interim 1xx answers', () => {
  it('103 Early Hints reach an HTTP/1.1 client before the final answer, hop-by-hop fields dropped', async () => {
    const stable = await bed.upstream('stable', (req, res) => {
      req.resume()
      res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style', 'x-hint': 'yes' })
      res.writeHead(200, { 'content-length': '2' })
      res.end('ok')
    })
    const veer = await bed.proxy({ stable: { url: stable.url } })
    const client = await RawClient.open(veer.port)
    await client.write('GET /page HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n')
    const text = (await client.readToClose()).toString('latin1')
    const hints = text.indexOf('HTTP/1.1 103')
    const final = text.indexOf('HTTP/1.1 200')
    expect(hints).toBe(0)
    expect(final).toBeGreaterThan(hints)
    const interim = text.slice(0, final).toLowerCase()
    expect(interim).toContain('link: </style.css>; rel=preload; as=style')
    expect(interim).toContain('x-hint: yes')
    expect(text.endsWith('ok')).toBe(true)
  })

  it('103 Early Hints reach an HTTP/2 client as an informational HEADERS frame', async () => {
    const stable = await bed.upstream('stable', (req, res) => {
      req.resume()
      res.writeEarlyHints({ link: '</app.js>; rel=preload; as=script' })
      res.writeHead(200, { 'content-length': '2' })
      res.end('ok')
    })
    const veer = await bed.proxy({ stable: { url: stable.url } })
    const session = h2connect(`http://127.0.0.1:${veer.port}`)
    try {
      const stream = session.request({ ':path': '/page', ':authority': 'app.test' })
      const interim: number[] = []
      let link: unknown
      stream.on('headers', (h) => {
        interim.push(Number(h[':status']))
        link = h.link
      })
      const final = await new Promise<number>((resolve) =>
        stream.on('response', (h) => resolve(Number(h[':status']))),
      )
      stream.resume()
      await new Promise((resolve) => stream.on('end', resolve))
      expect(interim).toEqual([103])
      expect(link).toBe('</app.js>; rel=preload; as=script')
      expect(final).toBe(200)
    } finally {
      session.close()
    }
  })
})

describe('CONNECT', () => {
  it('an HTTP/1.1 CONNECT gets 405 connect_not_supported and the upstream sees nothing', async () => {
    const stable = await bed.upstream('stable', pathEcho())
    const veer = await bed.proxy({ stable: { url: stable.url } })
    const client = await RawClient.open(veer.port)
    await client.write('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n')
    const res = await client.readResponse()
    expect(res.status).toBe(405)
    expect(res.headers['x-veer-error']).toBe('connect_not_supported')
    expect(JSON.parse(res.body.toString()).error).toBe('connect_not_supported')
    await client.closed
    expect(stable.seen).toHaveLength(0)
  })

  it('an HTTP/2 CONNECT gets 405 and the session carries on', async () => {
    const stable = await bed.upstream('stable', pathEcho())
    const veer = await bed.proxy({ stable: { url: stable.url } })
    const session = h2connect(`http://127.0.0.1:${veer.port}`)
    try {
      const tunnel = session.request({ ':method': 'CONNECT', ':authority': 'example.com:443' })
      const status = await new Promise<number>((resolve) =>
        tunnel.on('response', (h) => resolve(Number(h[':status']))),
      )
      tunnel.resume()
      expect(status).toBe(405)
      const next = session.request({ ':path': '/after', ':authority': 'app.test' })
      let body = ''
      next.setEncoding('utf8')
      next.on('data', (d: string) => {
        body += d
      })
      await new Promise((resolve) => next.on('end', resolve))
      expect(body).toBe('/after')
      expect(stable.seen.map((r) => r.url)).toEqual(['/after'])
    } finally {
      session.close()
    }
  })
})

describe('header names that are object properties', () => {
  it('__proto__, constructor and toString pass both ways as ordinary fields', async () => {
    const stable = await bed.upstream('stable', (req, res) => {
      req.resume()
      const seen = req.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase())
      res.setHeader('x-seen', seen.join(' '))
      res.end('ok')
    })
    const veer = await bed.proxy({ stable: { url: stable.url } })
    const client = await RawClient.open(veer.port)
    await client.write(
      'GET / HTTP/1.1\r\nHost: app.test\r\n__proto__: a\r\nconstructor: b\r\ntoString: c\r\nConnection: close\r\n\r\n',
    )
    const res = await client.readResponse()
    expect(res.status).toBe(200)
    const seen = res.headers['x-seen']!.split(' ')
    expect(seen).toEqual(expect.arrayContaining(['__proto__', 'constructor', 'tostring']))
    // None of them was taken for a forwarding field (Via is veer's own alone).
    expect(stable.seen[0]!.headers.via).toBe('1.1 veer')
  })

  it('an upstream answer carrying __proto__ and constructor fields reaches the client with them', async () => {
    // node:http refuses to send a field named __proto__, so this upstream writes its answer by hand.
    const { createServer } = await import('node:net')
    const server = createServer((socket) => {
      socket.once('data', () => {
        socket.end(
          'HTTP/1.1 200 OK\r\n__proto__: p\r\nconstructor: c\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok',
        )
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    try {
      const port = (server.address() as { port: number }).port
      const veer = await bed.proxy({ stable: { url: `http://127.0.0.1:${port}` } })
      const client = await RawClient.open(veer.port)
      await client.write('GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n')
      const res = await client.readResponse()
      expect(res.status).toBe(200)
      expect(res.rawHeaders).toEqual(
        expect.arrayContaining([
          ['__proto__', 'p'],
          ['constructor', 'c'],
        ]),
      )
    } finally {
      server.close()
    }
  })
})

describe('bytes after Connection: close', () => {
  it('the client still gets the answer to its request, then the connection closes', async () => {
    let release: () => void = () => {}
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    const stable = await bed.upstream('stable', (req, res) => {
      req.resume()
      void gate.then(() => res.end('answer'))
    })
    const veer = await bed.proxy({ stable: { url: stable.url } })
    const client = await RawClient.open(veer.port)
    // The garbage arrives while the answer is still being made upstream.
    await client.write(
      'GET /first HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\nGARBAGE \x00\x01 not http\r\n\r\n',
    )
    // The upstream has the request, and veer has read the garbage after it (it reads on as bytes come).
    await waitUntil(() => stable.seen.length === 1, 'the request upstream')
    release()
    const res = await client.readResponse()
    expect(res.status).toBe(200)
    expect(res.body.toString()).toBe('answer')
    await client.closed
  })
})

describe('bytes after a pipelined request', () => {
  it('a keep-alive request followed by bytes that do not parse gets its answer, with Connection: close', async () => {
    const stable = await bed.upstream('stable', (req, res) => {
      req.resume()
      res.end('answer')
    })
    const veer = await bed.proxy({ stable: { url: stable.url } })
    const client = await RawClient.open(veer.port)
    await client.write('GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n\x00\x01 not http\r\n\r\n')
    const res = await client.readResponse()
    expect(res.status).toBe(200)
    expect(res.body.toString()).toBe('answer')
    expect(res.headers.connection).toBe('close')
    await client.closed
  })
})

describe('path normalisation', () => {
  let proxies: VeerProcess[] = []
  afterEach(async () => {
    await Promise.all(proxies.map((p) => p.stop()))
    proxies = []
  })

  /** Routes `/admin` → admin and `/` → stable; returns what each upstream saw for `targets`. */
  async function route(targets: string[], server: Record<string, unknown> = {}) {
    const admin = await bed.upstream('admin', pathEcho())
    const stable = await bed.upstream('stable', pathEcho())
    const config = writeConfig({
      shutdown: { grace: 0 },
      server,
      routes: [
        { name: 'admin', match: { pathPrefix: '/admin' }, stable: { url: admin.url } },
        { name: 'site', stable: { url: stable.url } },
      ],
    })
    const veer = await startVeer(['--config', config])
    proxies.push(veer)
    for (const target of targets) {
      const client = await RawClient.open(veer.port)
      await client.write(`GET ${target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n`)
      expect((await client.readResponse()).status).toBe(200)
    }
    return { admin: admin.seen.map((r) => r.url), site: stable.seen.map((r) => r.url) }
  }

  it('dot segments, doubled slashes and unreserved escapes are routed and forwarded normalised', async () => {
    const seen = await route([
      '/public/../admin/users',
      '//admin//users',
      '/%61dmin/users',
      '/%2e%2e/admin/x?next=/../y',
      '/public/./page',
      '/public%2F..%2Fadmin',
    ])
    expect(seen.admin).toEqual(['/admin/users', '/admin/users', '/admin/users', '/admin/x?next=/../y'])
    // An escaped slash is not a separator: `/public%2F..%2Fadmin` is one segment, and stays as sent.
    expect(seen.site).toEqual(['/public/page', '/public%2F..%2Fadmin'])
  })

  it('server.normalizePath: false routes and forwards the path as sent', async () => {
    const seen = await route(['/public/../admin/users', '//admin//users'], { normalizePath: false })
    expect(seen.admin).toEqual([])
    expect(seen.site).toEqual(['/public/../admin/users', '//admin//users'])
  })

  it('HTTP/2 :path is normalised too', async () => {
    const admin = await bed.upstream('admin', pathEcho())
    const stable = await bed.upstream('stable', pathEcho())
    const config = writeConfig({
      shutdown: { grace: 0 },
      routes: [
        { name: 'admin', match: { pathPrefix: '/admin' }, stable: { url: admin.url } },
        { name: 'site', stable: { url: stable.url } },
      ],
    })
    const veer = await startVeer(['--config', config])
    proxies.push(veer)
    const session = h2connect(`http://127.0.0.1:${veer.port}`)
    try {
      const stream = session.request({ ':path': '/x/../admin/./y', ':authority': 'app.test' })
      let body = ''
      stream.setEncoding('utf8')
      stream.on('data', (d: string) => {
        body += d
      })
      await new Promise((resolve) => stream.on('end', resolve))
      expect(body).toBe('/admin/y')
      expect(stable.seen).toHaveLength(0)
    } finally {
      session.close()
    }
  })
})
