/**
 * RFC 9110/9112 behaviour through a real proxy process: bodiless answers, trailers, 100-continue,
 * chunked uploads, and the requests the proxy must refuse before any upstream sees them.
 */
import { request as httpRequest } from 'node:http'
import { describe, expect, it } from 'vitest'
import { testBed, waitUntil } from '../helpers/bed.ts'
import type { Handler } from '../helpers/upstream.ts'
import type { VeerProcess } from '../helpers/veer.ts'
import {
  closeRawClients,
  errorOf,
  RawClient,
  rawRequest,
  serverSocketInode,
  socketReleased,
} from './raw-http.ts'

const bed = testBed(closeRawClients)
let veer: VeerProcess | undefined
const upstream = bed.upstream

async function startProxy(
  route: Record<string, unknown>,
  top: Record<string, unknown> = {},
): Promise<VeerProcess> {
  veer = await bed.proxy(route, top)
  return veer
}

/** Answers with the request body's length and text. */
const echoBody: Handler = (req, res) => {
  const parts: Buffer[] = []
  req.on('data', (d: Buffer) => parts.push(d))
  req.on('end', () => {
    const body = Buffer.concat(parts)
    const text = JSON.stringify({ length: body.length, body: body.toString(), headers: req.headers })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
    res.end(text)
  })
}

const GET_CLOSE = 'GET /after HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n'

describe('answers without a body', () => {
  it('HEAD gets the headers, content-length kept, and no body bytes', async () => {
    const stable = await upstream('stable', (req, res) => {
      req.resume()
      if (req.method === 'HEAD') {
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '1234' })
        res.end()
        return
      }
      res.writeHead(200, { 'content-length': '5' })
      res.end('after')
    })
    veer = await startProxy({ stable: { url: stable.url } })
    const client = await RawClient.open(veer.port)
    // Pipelined: a body byte after the HEAD answer would corrupt the second response.
    await client.write(`HEAD /h HTTP/1.1\r\nHost: app.test\r\n\r\n${GET_CLOSE}`)
    const head = await client.readResponse({ head: true })
    expect(head.status).toBe(200)
    expect(head.headers['content-length']).toBe('1234')
    expect(head.headers['transfer-encoding']).toBeUndefined()
    // The next bytes must be the next status line (readResponse throws on anything else).
    const next = await client.readResponse()
    expect(next.status).toBe(200)
    expect(next.body.toString()).toBe('after')
    expect(stable.seen.map((r) => r.method)).toEqual(['HEAD', 'GET'])
  })

  it.each([204, 304])('%i carries no body, and the connection stays usable', async (status) => {
    const stable = await upstream('stable', (req, res) => {
      req.resume()
      if (req.url === '/after') {
        res.writeHead(200, { 'content-length': '5' })
        res.end('after')
        return
      }
      // A 304 may describe the representation it stands for, length included.
      res.writeHead(status, status === 304 ? { etag: '"v1"', 'content-length': '50' } : { 'x-done': 'yes' })
      res.end()
    })
    veer = await startProxy({ stable: { url: stable.url } })
    const client = await RawClient.open(veer.port)
    await client.write(`GET /r HTTP/1.1\r\nHost: app.test\r\nIf-None-Match: "v1"\r\n\r\n${GET_CLOSE}`)
    const first = await client.readResponse()
    expect(first.status).toBe(status)
    expect(first.headers['transfer-encoding']).toBeUndefined()
    if (status === 304) expect(first.headers.etag).toBe('"v1"')
    else expect(first.headers['x-done']).toBe('yes')
    const next = await client.readResponse()
    expect(next.status).toBe(200)
    expect(next.body.toString()).toBe('after')
    expect(stable.seen[0]!.headers['if-none-match']).toBe('"v1"')
  })
})

describe('trailers', () => {
  it('relays the upstream trailers to a client that sent TE: trailers', async () => {
    const stable = await upstream('stable', (req, res) => {
      req.resume()
      res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' })
      res.write('hello ')
      res.write('world')
      res.addTrailers({ 'x-checksum': 'abc123' })
      res.end()
    })
    veer = await startProxy({ stable: { url: stable.url } })
    const got = await new Promise<{
      body: string
      trailers: NodeJS.Dict<string>
      headers: NodeJS.Dict<string | string[]>
    }>((resolve, reject) => {
      const req = httpRequest(`${veer!.url}/t`, { headers: { te: 'trailers' }, agent: false }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (d: string) => (body += d))
        res.on('end', () => resolve({ body, trailers: res.trailers, headers: res.headers }))
        res.on('error', reject)
      })
      req.on('error', reject)
      req.end()
    })
    expect(got.body).toBe('hello world')
    expect(got.headers['transfer-encoding']).toBe('chunked')
    expect(got.headers.trailer).toBe('x-checksum')
    expect(got.trailers['x-checksum']).toBe('abc123')
  })
})

describe('request bodies', () => {
  it('Expect: 100-continue: the client gets 100 Continue, then the upstream answer to the whole body', async () => {
    const stable = await upstream('stable', echoBody)
    veer = await startProxy({ stable: { url: stable.url } })
    const body = 'x'.repeat(10_000)
    const client = await RawClient.open(veer.port)
    await client.write(
      `POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`,
    )
    const cont = await client.readResponse()
    expect(cont.status).toBe(100)
    await client.write(body)
    const res = await client.readResponse()
    expect(res.status).toBe(200)
    const echo = JSON.parse(res.body.toString()) as {
      length: number
      body: string
      headers: Record<string, string>
    }
    expect(echo.length).toBe(body.length)
    expect(echo.body).toBe(body)
    // The proxy answered the expectation itself: it is not passed on.
    expect(echo.headers.expect).toBeUndefined()
  })

  it('a chunked upload without Content-Length arrives whole, streamed as it comes', async () => {
    const stable = await upstream('stable', echoBody)
    veer = await startProxy({ stable: { url: stable.url } })
    const client = await RawClient.open(veer.port)
    await client.write(
      'POST /up HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n',
    )
    // The upstream has the request before the body is finished: the proxy streams, it does not buffer.
    await waitUntil(() => stable.seen.length === 1)
    await client.write('1\r\n \r\n')
    await client.write('6\r\nworld!\r\n0\r\n\r\n')
    const res = await client.readResponse()
    expect(res.status).toBe(200)
    const echo = JSON.parse(res.body.toString()) as {
      length: number
      body: string
      headers: Record<string, string>
    }
    expect(echo.body).toBe('hello world!')
    expect(echo.headers['content-length']).toBeUndefined()
  })
})

describe('refused before any upstream sees them', () => {
  it('duplicate Host → 400 duplicate_host', async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } })
    const res = await rawRequest(veer.port, 'GET / HTTP/1.1\r\nHost: app.test\r\nHost: evil.example\r\n\r\n')
    expect(res.status).toBe(400)
    expect(res.headers['x-veer-error']).toBe('duplicate_host')
    expect(errorOf(res).error).toBe('duplicate_host')
    expect(stable.seen).toHaveLength(0)
  })

  it('an HTTP/1.1 request without Host gets the proxy’s own JSON 400', async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } })
    const res = await rawRequest(veer.port, 'GET / HTTP/1.1\r\nConnection: close\r\n\r\n')
    expect(res.status).toBe(400)
    expect(res.headers['x-veer-error']).toBe('missing_host')
    expect(errorOf(res).error).toBe('missing_host')
    expect(stable.seen).toHaveLength(0)
  })

  // Node's parser accepts `Transfer-Encoding: gzip, chunked` and only undoes the chunking: passed on,
  // the still-gzipped bytes would reach the upstream as if they were the body. RFC 9112 6.1: 501.
  it('a transfer coding other than chunked → 501; the upstream sees nothing', async () => {
    const stable = await upstream('stable', echoBody)
    veer = await startProxy({ stable: { url: stable.url } })
    const res = await rawRequest(
      veer.port,
      'POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n',
    )
    expect(res.status).toBe(501)
    expect(res.headers['x-veer-error']).toBe('unsupported_transfer_coding')
    expect(stable.seen).toHaveLength(0)
  })

  it('absolute-form target → 400 bad_request_target', async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } })
    const res = await rawRequest(
      veer.port,
      `GET ${stable.url}/ HTTP/1.1\r\nHost: 127.0.0.1:${stable.port}\r\n\r\n`,
    )
    expect(res.status).toBe(400)
    expect(res.headers['x-veer-error']).toBe('bad_request_target')
    expect(stable.seen).toHaveLength(0)
  })

  it.each([
    [
      'Content-Length with Transfer-Encoding',
      'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    ],
    ['two differing Content-Length', 'Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!'],
    ['Content-Length list', 'Content-Length: 5, 6\r\n\r\nhello!'],
  ])('%s → 400, connection closed', async (_name, rest) => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } })
    const client = await RawClient.open(veer.port)
    const inode = await serverSocketInode(veer.port, client)
    await client.write(`POST /smuggle HTTP/1.1\r\nHost: app.test\r\n${rest}`)
    const res = await client.readResponse()
    expect(res.status).toBe(400)
    expect(res.headers['x-veer-error']).toBe('bad_request')
    expect(errorOf(res).error).toBe('bad_request')
    client.socket.write('GET / HTTP/1.1\r\nHost: app.test\r\n\r\n')
    await client.closed
    expect(await socketReleased(veer.child.pid!, inode)).toBe(true)
    expect(stable.seen).toHaveLength(0)
  })

  it('a header block over server.maxHeaderBytes → 431 headers_too_large', async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } }, { server: { maxHeaderBytes: 2048 } })
    const small = await rawRequest(
      veer.port,
      `GET / HTTP/1.1\r\nHost: app.test\r\nx-pad: ${'a'.repeat(1000)}\r\n\r\n`,
    )
    expect(small.status).toBe(200)
    const res = await rawRequest(
      veer.port,
      `GET / HTTP/1.1\r\nHost: app.test\r\nx-pad: ${'a'.repeat(4000)}\r\n\r\n`,
    )
    expect(res.status).toBe(431)
    expect(res.headers['x-veer-error']).toBe('headers_too_large')
    await res.client.closed
    expect(stable.seen).toHaveLength(1)
  })

  it('more fields than server.maxHeaders → 431 too_many_headers; exactly the limit passes', async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } }, { server: { maxHeaders: 20 } })
    const fields = (n: number) => Array.from({ length: n }, (_, i) => `x-f${i}: ${i}\r\n`).join('')
    // Host, Connection and 18 more: exactly 20 fields pass; one more is refused.
    const ok = await rawRequest(
      veer.port,
      `GET / HTTP/1.1\r\nHost: app.test\r\n${fields(18)}Connection: close\r\n\r\n`,
    )
    expect(ok.status).toBe(200)
    const oneOver = await rawRequest(
      veer.port,
      `GET / HTTP/1.1\r\nHost: app.test\r\n${fields(19)}Connection: close\r\n\r\n`,
    )
    expect(oneOver.status).toBe(431)
    expect(oneOver.headers['x-veer-error']).toBe('too_many_headers')
    // Far over the limit is refused too (the error code is checked by the skipped test below).
    const over = await rawRequest(veer.port, `GET / HTTP/1.1\r\nHost: app.test\r\n${fields(40)}\r\n`)
    expect(over.status).toBe(431)
    expect(stable.seen).toHaveLength(1)
  })

  // Node's own parser limit would answer headers_too_large; the proxy counts fields itself.
  it('far more fields than server.maxHeaders → 431 too_many_headers, not headers_too_large', async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } }, { server: { maxHeaders: 20 } })
    const fields = Array.from({ length: 40 }, (_, i) => `x-f${i}: ${i}\r\n`).join('')
    const over = await rawRequest(veer.port, `GET / HTTP/1.1\r\nHost: app.test\r\n${fields}\r\n`)
    expect(over.status).toBe(431)
    expect(over.headers['x-veer-error']).toBe('too_many_headers')
    expect(errorOf(over).error).toBe('too_many_headers')
    expect(stable.seen).toHaveLength(0)
  })

  it('slowloris: headers trickled slowly get 408 request_timeout after server.headersTimeout, then close', async () => {
    const stable = await upstream('stable')
    veer = await startProxy({ stable: { url: stable.url } }, { server: { headersTimeout: '500ms' } })
    const client = await RawClient.open(veer.port)
    await client.write('GET / HTTP/1.1\r\nHost: app.test\r\n')
    // One field every 100 ms keeps the connection busy but never finishes the head. The answer must
    // come while the attack is still going (Node's own default would let it run for 60 s): at most
    // 100 fields are sent.
    for (let i = 0; i < 100 && client.pending.length === 0 && !client.isClosed; i++) {
      await new Promise((r) => setTimeout(r, 100))
      if (!client.isClosed) client.socket.write(`x-slow-${i}: ${i}\r\n`)
    }
    expect(client.pending.length, 'no answer while the headers were still trickling').toBeGreaterThan(0)
    const res = await client.readResponse()
    expect(res.status).toBe(408)
    expect(res.headers['x-veer-error']).toBe('request_timeout')
    await client.closed
    expect(stable.seen).toHaveLength(0)
  })
})
