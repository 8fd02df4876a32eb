/**
 * Upgrade passthrough through a real proxy process: `Upgrade: websocket` is tunnelled only once the
 * upstream answers 101; a refused upgrade is relayed and closed; `Upgrade: h2c` is served as a plain
 * request with the upgrade fields removed. To an HTTP/2 upstream, the upgrade is an extended CONNECT
 * (RFC 8441) whose 2xx the client gets as its 101.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http'
import { createServer as createH2Server, type ServerHttp2Session } from 'node:http2'
import type { AddressInfo, Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { testBed, waitUntil } from '../helpers/bed.ts'
import { deadPort } from '../helpers/upstream.ts'
import type { VeerProcess } from '../helpers/veer.ts'
import { closeRawClients, errorOf, RawClient, serverSocketInode, socketReleased, within } from './raw-http.ts'

let veer: VeerProcess | undefined
let servers: Server[] = []
/** Upgraded upstream sockets: http.Server no longer tracks them, so closing it would wait on them. */
let upgraded: Socket[] = []

const bed = testBed(async () => {
  closeRawClients()
  for (const s of upgraded) s.destroy()
  upgraded = []
  await Promise.all(
    servers.map(
      (s) =>
        new Promise<void>((resolve) => {
          s.closeAllConnections()
          s.close(() => resolve())
        }),
    ),
  )
  servers = []
})

async function startProxy(
  route: Record<string, unknown>,
  top: Record<string, unknown> = {},
): Promise<VeerProcess> {
  veer = await bed.proxy(route, top)
  return veer
}

interface WsUpstream {
  readonly url: string
  /** Upgrade requests the upstream received, with the bytes that came in the same packet. */
  readonly upgrades: { req: IncomingMessage; head: Buffer }[]
  /** Plain (non-upgrade) requests. */
  readonly plain: IncomingMessage[]
  /** Sockets of upgrade requests (closed sockets included). */
  readonly sockets: Socket[]
}

/**
 * An upstream that answers an upgrade with a hand-written 101 and then echoes every byte back, or with
 * `refuse` (a raw HTTP answer) instead of the 101; 'hold' answers nothing until the test writes to the
 * socket itself.
 */
async function wsUpstream(refuse?: string | 'hold'): Promise<WsUpstream> {
  const upgrades: { req: IncomingMessage; head: Buffer }[] = []
  const plain: IncomingMessage[] = []
  const sockets: Socket[] = []
  const server = createServer((req, res) => {
    plain.push(req)
    req.resume()
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ headers: req.headers }))
  })
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    upgrades.push({ req, head })
    sockets.push(socket)
    upgraded.push(socket)
    socket.on('error', () => {})
    socket.on('end', () => socket.end())
    if (refuse === 'hold') return
    if (refuse !== undefined) {
      socket.end(refuse)
      return
    }
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n',
    )
    if (head.length > 0) socket.write(head)
    socket.on('data', (d: Buffer) => socket.write(d))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  servers.push(server)
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, upgrades, plain, sockets }
}

/** Through the tunnel to an echoing upstream: each message comes back whole, in turn. */
async function echoes(client: RawClient, messages: readonly string[]): Promise<void> {
  for (const msg of messages) {
    const before = client.pending.length
    await client.write(msg)
    expect(await client.waitFor((b) => b.length - before >= msg.length)).toBe(true)
    expect(client.pending.subarray(before).toString()).toBe(msg)
  }
}

const UPGRADE =
  'GET /chat HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nx-user: u1\r\n\r\n'

describe('WebSocket upgrade', () => {
  it('tunnels bytes both ways after the upstream answers 101', async () => {
    const ws = await wsUpstream()
    veer = await startProxy({ stable: { url: ws.url } })
    const client = await RawClient.open(veer.port)
    await client.write(UPGRADE)
    const res = await client.readResponse()
    expect(res.status).toBe(101)
    expect(res.headers.upgrade?.toLowerCase()).toBe('websocket')
    expect(res.headers.connection?.toLowerCase()).toContain('upgrade')
    expect(res.headers['sec-websocket-accept']).toBe('s3pPLMBiTxaQ9kYGzzhZRbK+xOo=')
    expect(res.headers['x-veer-version']).toBe('stable')
    expect(res.headers.via).toBe('1.1 veer')

    // The upstream got a proper upgrade request with the client's fields and the forwarding fields.
    expect(ws.upgrades).toHaveLength(1)
    const seen = ws.upgrades[0]!.req
    expect(seen.url).toBe('/chat')
    expect(seen.headers.upgrade).toBe('websocket')
    expect(seen.headers['sec-websocket-key']).toBe('dGhlIHNhbXBsZSBub25jZQ==')
    expect(seen.headers['x-user']).toBe('u1')
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1')

    await echoes(client, ['ping-1', 'ping-2', 'x'.repeat(64 * 1024)])
    // Closing one side closes the other.
    client.socket.end()
    await client.closed
  })

  it('upstream-initiated bytes and close reach the client', async () => {
    const ws = await wsUpstream()
    veer = await startProxy({ stable: { url: ws.url } })
    const client = await RawClient.open(veer.port)
    await client.write(UPGRADE)
    expect((await client.readResponse()).status).toBe(101)
    const up = ws.sockets[0]!
    up.write('hello from upstream')
    expect(await client.waitFor((b) => b.toString().includes('hello from upstream'))).toBe(true)
    up.destroy()
    await client.closed
    expect(client.isClosed).toBe(true)
  })

  it('bytes sent right behind the upgrade request reach the upstream only after its 101', async () => {
    const ws = await wsUpstream()
    veer = await startProxy({ stable: { url: ws.url } })
    const client = await RawClient.open(veer.port)
    await client.write(`${UPGRADE}early`)
    expect((await client.readResponse()).status).toBe(101)
    expect(await client.waitFor((b) => b.toString() === 'early')).toBe(true)
    // Nothing came with the upgrade request itself: the proxy held the bytes until the upstream agreed.
    expect(ws.upgrades[0]!.head.length).toBe(0)
  })

  it('an upstream that refuses (403 instead of 101): the client gets the 403, the connection closes, no tunnel', async () => {
    const ws = await wsUpstream(
      'HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nno way',
    )
    veer = await startProxy({ stable: { url: ws.url } })
    const client = await RawClient.open(veer.port)
    const inode = await serverSocketInode(veer.port, client)
    await client.write(UPGRADE)
    const res = await client.readResponse()
    expect(res.status).toBe(403)
    expect(res.body.toString()).toBe('no way')
    expect(res.headers.upgrade).toBeUndefined()
    // Bytes written now must go nowhere: the connection closes.
    client.socket.write('not tunnelled')
    await client.closed
    expect(client.pending.length).toBe(0)
    expect(ws.upgrades).toHaveLength(1)
    // ...and the proxy lets go of it (it must read on to see the client's close, not leave it half-open).
    expect(await socketReleased(veer.child.pid!, inode)).toBe(true)
  })

  it('a client that leaves before the upstream answers 101: the upstream connection is closed, not left open', async () => {
    const ws = await wsUpstream('hold')
    veer = await startProxy({ stable: { url: ws.url } })
    const client = await RawClient.open(veer.port)
    await client.write(UPGRADE)
    await waitUntil(() => ws.sockets.length === 1)
    const up = ws.sockets[0]!
    const upClosed = new Promise<void>((resolve) => up.once('close', () => resolve()))
    client.close()
    await client.closed
    up.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n')
    await within(upClosed, 5000, 'the upstream connection closing')
  })

  it('an upstream without upgrade support answers as plain HTTP: relayed, then closed', async () => {
    const plain = await bed.upstream('plain', (req, res) => {
      req.resume()
      res.writeHead(426, { 'content-type': 'text/plain', 'content-length': '8' })
      res.end('upgrade?')
    })
    // A server with no 'upgrade' listener hands the request to its request handler.
    veer = await startProxy({ stable: { url: plain.url } })
    const client = await RawClient.open(veer.port)
    await client.write(UPGRADE)
    const res = await client.readResponse()
    expect(res.status).toBe(426)
    expect(res.body.toString()).toBe('upgrade?')
    await client.closed
  })

  it('an unreachable upstream: 502 upstream_connect_failed on the socket, then closed', async () => {
    const port = await deadPort()
    veer = await startProxy({ stable: { url: `http://127.0.0.1:${port}` } })
    const client = await RawClient.open(veer.port)
    const inode = await serverSocketInode(veer.port, client)
    await client.write(UPGRADE)
    const res = await client.readResponse()
    expect(res.status).toBe(502)
    expect(res.headers['x-veer-error']).toBe('upstream_connect_failed')
    expect(errorOf(res).error).toBe('upstream_connect_failed')
    client.socket.write('more bytes')
    await client.closed
    expect(await socketReleased(veer.child.pid!, inode)).toBe(true)
  })
})

describe('WebSocket upgrade and passive health', () => {
  /** Close the upstream's listener (and every connection to it): connects to its port are refused. */
  const stop = (server: Server) =>
    new Promise<void>((resolve) => {
      for (const s of upgraded) s.destroy()
      server.closeAllConnections()
      server.close(() => resolve())
    })
  const reopen = (server: Server, port: number) =>
    new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))

  it('a 101 is a connection made: it ends the streak of connect failures, as an answer does', async () => {
    const ws = await wsUpstream()
    const server = servers[servers.length - 1]!
    const port = Number(new URL(ws.url).port)
    veer = await startProxy({ stable: { url: ws.url } }, { health: { ejectAfter: 2, ejectFor: '60s' } })
    const get = () => fetch(`http://127.0.0.1:${veer!.port}/x`).then((r) => r.status)
    await stop(server)
    expect(await get()).toBe(502) // connect failure 1 of 2
    await reopen(server, port)
    const client = await RawClient.open(veer.port)
    await client.write(UPGRADE)
    expect((await client.readResponse()).status).toBe(101)
    client.socket.destroy()
    await stop(server)
    // Had the 101 not counted, this second failure in a row would eject the only upstream.
    expect(await get()).toBe(502)
    await reopen(server, port)
    expect(await get()).toBe(200)
  })
})

describe('Upgrade: h2c', () => {
  it('is not tunnelled: the upstream sees a plain request without Upgrade or HTTP2-Settings', async () => {
    const ws = await wsUpstream()
    veer = await startProxy({ stable: { url: ws.url } })
    const client = await RawClient.open(veer.port)
    await client.write(
      'GET /h2 HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n' +
        'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n',
    )
    const res = await client.readResponse()
    expect(res.status).toBe(200)
    expect(res.headers.upgrade).toBeUndefined()
    expect(ws.upgrades).toHaveLength(0)
    expect(ws.plain).toHaveLength(1)
    const headers = ws.plain[0]!.headers
    expect(headers.upgrade).toBeUndefined()
    expect(headers['http2-settings']).toBeUndefined()
    expect(headers.connection ?? 'keep-alive').toBe('keep-alive')
    // The connection is still plain HTTP/1.1: a second request on it is answered normally.
    await client.write('GET /again HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n')
    expect((await client.readResponse()).status).toBe(200)
    expect(ws.plain.map((r) => r.url)).toEqual(['/h2', '/again'])
  })
})

describe('WebSocket upgrade to an HTTP/2 upstream (RFC 8441)', () => {
  interface H2WsUpstream {
    readonly url: string
    /** Request heads of every stream opened to it. */
    readonly streams: Record<string, string | string[] | undefined>[]
    close(): Promise<void>
  }

  /**
   * A cleartext HTTP/2 upstream that announces extended CONNECT (or not, with `connect: false`) and
   * accepts a websocket CONNECT with 200 and `sec-websocket-protocol: chat`, then echoes every byte;
   * with `refuse`, it answers that status and a body instead.
   */
  async function h2WsUpstream(opts: { connect?: boolean; refuse?: number } = {}): Promise<H2WsUpstream> {
    const streams: H2WsUpstream['streams'] = []
    const server = createH2Server({ settings: { enableConnectProtocol: opts.connect ?? true } })
    const sessions: ServerHttp2Session[] = []
    server.on('session', (s) => sessions.push(s))
    server.on('stream', (stream, headers) => {
      streams.push({ ...headers })
      if (opts.refuse !== undefined) {
        stream.respond({ ':status': opts.refuse, 'content-type': 'text/plain' })
        stream.end('not here')
        return
      }
      stream.respond({ ':status': 200, 'sec-websocket-protocol': 'chat' })
      stream.on('data', (d: Buffer) => stream.write(d))
      stream.on('end', () => stream.end())
    })
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok))
    return {
      url: `h2c://127.0.0.1:${(server.address() as AddressInfo).port}`,
      streams,
      close: () =>
        new Promise<void>((ok) => {
          for (const s of sessions) s.destroy()
          server.close(() => ok())
        }),
    }
  }

  let h2: H2WsUpstream | undefined
  afterEach(async () => {
    await h2?.close()
    h2 = undefined
  })

  it('sends an extended CONNECT and answers the client 101 with the accept it computes; bytes pass both ways', async () => {
    h2 = await h2WsUpstream()
    veer = await startProxy({ stable: { url: h2.url } })
    const client = await RawClient.open(veer.port)
    await client.write(UPGRADE.replace('\r\n\r\n', '\r\nSec-WebSocket-Protocol: chat\r\n\r\n'))
    const res = await client.readResponse()
    expect(res.status).toBe(101)
    expect(res.headers.upgrade).toBe('websocket')
    expect(res.headers.connection).toBe('Upgrade')
    // RFC 6455's own example: this key's accept is s3pPLMBiTxaQ9kYGzzhZRbK+xOo=.
    expect(res.headers['sec-websocket-accept']).toBe('s3pPLMBiTxaQ9kYGzzhZRbK+xOo=')
    expect(res.headers['sec-websocket-protocol']).toBe('chat')
    // The upstream's answer came in over HTTP/2.
    expect(res.headers.via).toBe('2 veer')
    expect(h2.streams).toHaveLength(1)
    expect(h2.streams[0]).toMatchObject({
      ':method': 'CONNECT',
      ':protocol': 'websocket',
      ':path': '/chat',
      'sec-websocket-version': '13',
      'x-user': 'u1',
    })
    expect(h2.streams[0]).not.toHaveProperty('upgrade')
    await echoes(client, ['ping-1', 'x'.repeat(64 * 1024)])
    client.socket.end()
    await client.closed
    const line = await veer.waitForLog((l) => l.msg === 'access')
    expect(line).toMatchObject({ path: '/chat', status: 101 })
  })

  it('relays a refusal (403 on the stream) and closes the connection', async () => {
    h2 = await h2WsUpstream({ refuse: 403 })
    veer = await startProxy({ stable: { url: h2.url } })
    const client = await RawClient.open(veer.port)
    await client.write(UPGRADE)
    const res = await client.readResponse()
    expect(res.status).toBe(403)
    expect(res.body.toString()).toBe('not here')
    expect(res.headers.connection).toBe('close')
    await client.closed
  })

  it('an HTTP/2 upstream without extended CONNECT: 502 upstream_no_websocket, no stream opened', async () => {
    h2 = await h2WsUpstream({ connect: false })
    veer = await startProxy({ stable: { url: h2.url } })
    const client = await RawClient.open(veer.port)
    await client.write(UPGRADE)
    const res = await client.readResponse()
    expect(res.status).toBe(502)
    expect(errorOf(res).error).toBe('upstream_no_websocket')
    await client.closed
    // A plain request after it reaches the upstream: the first stream it sees is that one.
    const plain = await fetch(`${veer.url}/after`)
    await plain.arrayBuffer()
    expect(h2.streams.map((s) => s[':path'])).toEqual(['/after'])
  })
})
