/**
 * HTTP/2 on the traffic port through a real proxy process: cleartext with prior knowledge beside
 * HTTP/1.1 on the same port, trailers, the proxy's own answers, a client's reset, the 2023–2024 abuse
 * patterns (rapid reset, CONTINUATION flood) cut off with GOAWAY while other clients carry on, and the
 * drain's GOAWAY. Upstreams are HTTP/1.1.
 */
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { testBed, waitUntil } from '../helpers/bed.ts'
import { h2connect, h2get, h2request } from '../helpers/h2.ts'
import { FLAG, FRAME, frame, headerField, RawH2, requestBlock } from './raw-h2.ts'

let raws: RawH2[] = []
const bed = testBed(() => {
  for (const r of raws) r.close()
  raws = []
})

async function raw(port: number): Promise<RawH2> {
  const r = await RawH2.open(port)
  raws.push(r)
  return r
}

/** An upstream whose requests wait until `release()`; `closed` counts requests whose client went away. */
function holding() {
  const held: ServerResponse[] = []
  let closed = 0
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    req.resume()
    res.on('close', () => {
      if (!res.writableFinished) closed++
    })
    if (req.url === '/hold') held.push(res)
    else res.end('quick')
  }
  return {
    handler,
    held,
    get closed() {
      return closed
    },
    release() {
      for (const res of held.splice(0)) res.end('released')
    },
  }
}

describe('HTTP/2 with prior knowledge on the cleartext port', () => {
  it('carries streams to the HTTP/1.1 upstream, Host from :authority, beside HTTP/1.1 on the same port', async () => {
    const up = await bed.upstream('stable')
    const veer = await bed.proxy({ stable: { url: up.url } })
    const session = await h2connect(veer.url)
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        h2request(session, {
          ':path': `/items/${i}?q=${i}`,
          ':authority': 'shop.example',
          'x-user': `u${i}`,
        }),
      ),
    )
    session.close()
    for (const [i, a] of answers.entries()) {
      expect(a.status).toBe(200)
      expect(a.headers['x-veer-version']).toBe('stable')
      // The answer came from an HTTP/1.1 upstream; the request reached veer over HTTP/2.
      expect(a.headers.via).toBe('1.1 veer')
      const seen = JSON.parse(a.body)
      expect(seen.headers.via).toBe('2 veer')
      expect(seen.url).toBe(`/items/${i}?q=${i}`)
      expect(seen.headers.host).toBe('shop.example')
      expect(seen.headers['x-user']).toBe(`u${i}`)
      expect(seen.headers['x-forwarded-proto']).toBe('http')
      // No pseudo-header field reaches the upstream as a header.
      expect(seen.rawHeaders.filter((n: string, k: number) => k % 2 === 0 && n.startsWith(':'))).toEqual([])
    }
    // HTTP/1.1 on the same port.
    const h1 = await fetch(`${veer.url}/plain`)
    expect(h1.status).toBe(200)
    expect(((await h1.json()) as { url: string }).url).toBe('/plain')
  })

  it('streams a request body up and the answer, with its trailers, back', async () => {
    const up = await bed.upstream('stable', (req, res) => {
      const hash = createHash('sha256')
      let n = 0
      req.on('data', (c: Buffer) => {
        hash.update(c)
        n += c.length
      })
      req.on('end', () => {
        res.writeHead(200, { trailer: 'x-digest', 'content-type': 'text/plain' })
        res.write(`got ${n}`)
        res.addTrailers({ 'x-digest': hash.digest('hex') })
        res.end()
      })
    })
    const veer = await bed.proxy({ stable: { url: up.url } })
    const body = Buffer.alloc(3 * 1024 * 1024, 7)
    const session = await h2connect(veer.url)
    const a = await h2request(session, { ':method': 'POST', ':path': '/upload' }, body)
    session.close()
    expect(a.status).toBe(200)
    expect(a.body).toBe(`got ${body.length}`)
    expect(a.trailers['x-digest']).toBe(createHash('sha256').update(body).digest('hex'))
  })

  it("answers the proxy's own refusals as HTTP/2 answers, and the connection carries on", async () => {
    const up = await bed.upstream('stable')
    const veer = await bed.proxy({ stable: { url: up.url }, match: { pathPrefix: '/api' } })
    const session = await h2connect(veer.url)
    const refused = await h2request(session, { ':path': '/elsewhere' })
    expect(refused.status).toBe(404)
    expect(refused.headers['x-veer-error']).toBe('no_route')
    expect(JSON.parse(refused.body).error).toBe('no_route')
    const next = await h2request(session, { ':path': '/api/x' })
    expect(next.status).toBe(200)
    session.close()
    expect(up.seen.map((r) => r.url)).toEqual(['/api/x'])
  })

  it('curl --http2-prior-knowledge gets its answer over HTTP/2', async () => {
    const up = await bed.upstream('stable')
    const veer = await bed.proxy({ stable: { url: up.url } })
    const { stdout } = await promisify(execFile)('curl', [
      '-sS',
      '--http2-prior-knowledge',
      '-o',
      '/dev/null',
      '-w',
      '%{http_version} %{http_code}',
      `${veer.url}/curl`,
    ])
    expect(stdout).toBe('2 200')
  })

  it("a client's RST_STREAM ends that upstream request only; its other streams carry on", async () => {
    const h = holding()
    const up = await bed.upstream('stable', h.handler)
    const veer = await bed.proxy({ stable: { url: up.url } })
    const session = await h2connect(veer.url)
    const gone = session.request({ ':path': '/hold' })
    gone.on('error', () => {})
    await waitUntil(() => h.held.length === 1, 'the upstream to hold the request')
    gone.close()
    await waitUntil(() => h.closed === 1, 'the upstream request to be aborted')
    const after = await h2request(session, { ':path': '/quick' })
    expect(after.status).toBe(200)
    expect(after.body).toBe('quick')
    session.close()
  })
})

describe('HTTP/2 abuse is cut off with GOAWAY; other clients carry on', () => {
  it('rapid reset (CVE-2023-44487): past the reset budget the connection gets GOAWAY', async () => {
    const up = await bed.upstream('stable')
    const veer = await bed.proxy(
      { stable: { url: up.url } },
      { log: { access: false }, server: { http2: { resetBurst: 20, resetRate: 1 } } },
    )
    const bad = await raw(veer.port)
    const cancel = Buffer.alloc(4)
    cancel.writeUInt32BE(8) // CANCEL
    // Five times the burst, in one write: the proxy reads it all before it cuts the connection, so
    // the client gets the GOAWAY rather than a TCP reset of its unread bytes.
    const sent = 100
    const frames: Buffer[] = []
    for (let i = 0; i < sent; i++) {
      const id = 2 * i + 1
      frames.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, requestBlock('/r')))
      frames.push(frame(FRAME.RST_STREAM, 0, id, cancel))
    }
    bad.send(Buffer.concat(frames))
    expect(await bad.until(() => bad.goaway !== null)).toBe(true)
    // Its last stream is about the burst's: the streams after it were never taken.
    expect(bad.goaway!.lastStream).toBeLessThan(2 * 40)
    await bad.until(() => bad.closed)
    expect(bad.closed).toBe(true)
    // Far fewer streams than were sent reached the upstream.
    expect(up.seen.length).toBeLessThan(sent / 2)
    const good = await h2get(veer.url, '/fine')
    expect(good.status).toBe(200)
  })

  it('a CONTINUATION flood (CVE-2024-27316 family) is cut off before any request reaches the upstream', async () => {
    const up = await bed.upstream('stable')
    const veer = await bed.proxy({ stable: { url: up.url } }, { log: { access: false } })
    const bad = await raw(veer.port)
    // A HEADERS frame without END_HEADERS, then CONTINUATION frames that never end the block.
    const piece = headerField('x-pad', 'a')
    const frames = [frame(FRAME.HEADERS, FLAG.END_STREAM, 1, requestBlock('/flood'))]
    for (let i = 0; i < 200; i++) frames.push(frame(FRAME.CONTINUATION, 0, 1, piece))
    bad.send(Buffer.concat(frames))
    expect(await bad.until(() => bad.goaway !== null)).toBe(true)
    await bad.until(() => bad.closed)
    expect(bad.closed).toBe(true)
    const good = await h2get(veer.url, '/fine')
    expect(good.status).toBe(200)
    expect(up.seen.map((r) => r.url)).toEqual(['/fine'])
  })
})

describe('HTTP/2 drain', () => {
  it('SIGTERM: GOAWAY to the connection, its stream in flight finishes, exit 0', async () => {
    const h = holding()
    const up = await bed.upstream('stable', h.handler)
    const veer = await bed.proxy(
      { stable: { url: up.url } },
      { shutdown: { grace: '200ms', deadline: '10s' } },
    )
    const session = await h2connect(veer.url)
    let goaway = false
    session.on('goaway', () => (goaway = true))
    session.on('error', () => {})
    const inflight = h2request(session, { ':path': '/hold' })
    await waitUntil(() => h.held.length === 1, 'the upstream to hold the request')
    veer.child.kill('SIGTERM')
    await waitUntil(() => goaway, 'GOAWAY from the draining proxy')
    h.release()
    const a = await inflight
    expect(a.status).toBe(200)
    expect(a.body).toBe('released')
    expect(await veer.exited).toBe(0)
  })
})
