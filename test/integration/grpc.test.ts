/**
 * gRPC through a real proxy process, with @grpc/grpc-js clients and servers (JSON-serialised messages,
 * so no .proto is needed): unary and bidi calls with metadata and trailers, grpc-status as the outcome
 * (metrics' grpc_code, the fuse), the proxy's own failures as gRPC errors, grpc-timeout honoured,
 * unary calls mirrored and compared (streams not), the fallback to stable only for a canary that could
 * not be connected, and a call the client cancels counted CANCELLED.
 */
import { createServer as createH2Server } from 'node:http2'
import type { AddressInfo } from 'node:net'
import * as grpc from '@grpc/grpc-js'
import { describe, expect, it } from 'vitest'
import { testBed, waitUntil } from '../helpers/bed.ts'
import {
  type Client,
  type EchoOptions,
  type EchoServer,
  echoClient,
  say,
  echoServer as startEcho,
} from '../helpers/grpc.ts'
import { h2connect, h2request } from '../helpers/h2.ts'
import { settled } from '../helpers/shadow.ts'
import { deadPort } from '../helpers/upstream.ts'

let servers: EchoServer[] = []
let clients: grpc.Client[] = []
const bed = testBed(async () => {
  for (const c of clients) c.close()
  clients = []
  await Promise.all(servers.map((s) => s.close()))
  servers = []
})

async function echoServer(name: string, fail?: grpc.status, opts?: EchoOptions): Promise<EchoServer> {
  const s = await startEcho(name, fail, opts)
  servers.push(s)
  return s
}

function client(port: number, options?: grpc.ClientOptions): Client {
  const c = echoClient(port, options)
  clients.push(c)
  return c
}

async function metrics(adminUrl: string): Promise<string> {
  return (await fetch(`${adminUrl}/metrics`)).text()
}

describe('gRPC through veer', () => {
  it('passes unary calls with metadata and trailers, counted with grpc_code', async () => {
    const stable = await echoServer('stable')
    const veer = await bed.proxy({ stable: { url: stable.url } })
    const c = client(veer.port)
    const md = new grpc.Metadata()
    md.set('x-user', 'u42')
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => say(c, `hi ${i}`, md)))
    for (const [i, a] of answers.entries()) {
      expect(a.err).toBeNull()
      expect(a.value).toEqual({ text: `hi ${i}`, by: 'stable', user: 'u42' })
      expect(a.trailers?.get('x-served-by')).toEqual(['stable'])
    }
    const text = await metrics(veer.adminUrl)
    expect(text).toMatch(
      /veer_requests_total\{route="default",version="stable",code="200",grpc_code="OK"\} 10/,
    )
    const access = await veer.waitForLog((l) => l.msg === 'access' && l.path === '/test.Echo/Say')
    expect(access.grpc_code).toBe('OK')
  })

  it('passes a bidi stream message by message', async () => {
    const stable = await echoServer('stable')
    const veer = await bed.proxy({ stable: { url: stable.url } })
    const c = client(veer.port)
    const call = c.chat() as grpc.ClientDuplexStream<{ n: number }, { n: number; by: string }>
    const got: number[] = []
    const ended = new Promise<grpc.StatusObject>((ok) => call.on('status', ok))
    // Each answer before the next message: the stream is not buffered to its end anywhere.
    for (let n = 1; n <= 5; n++) {
      const next = new Promise<{ n: number }>((ok) => call.once('data', ok))
      call.write({ n })
      got.push((await next).n)
    }
    call.end()
    expect((await ended).code).toBe(grpc.status.OK)
    expect(got).toEqual([2, 4, 6, 8, 10])
  })

  it('counts a canary answering UNAVAILABLE as errors, trips the fuse, and stable serves on', async () => {
    const stable = await echoServer('stable')
    const canary = await echoServer('canary', grpc.status.UNAVAILABLE)
    const veer = await bed.proxy({
      stable: { url: stable.url },
      canary: { url: canary.url },
      canaryWeight: 100,
      analysis: { fuse: { consecutiveFailures: 5 }, fallback: { enabled: false } },
    })
    const c = client(veer.port)
    for (let i = 0; i < 5; i++) {
      const a = await say(c, `x${i}`)
      expect(a.err?.code).toBe(grpc.status.UNAVAILABLE)
      expect(a.err?.details).toBe('canary is failing')
    }
    await veer.waitForLog((l) => l.msg === 'canary weight set to 0 by the fuse')
    const tripped = veer.logs.find((l) => l.msg === 'canary fuse tripped')
    expect(tripped?.last).toBe('grpc-status UNAVAILABLE')
    const after = await say(c, 'after')
    expect(after.err).toBeNull()
    expect(after.value?.by).toBe('stable')
    expect(await metrics(veer.adminUrl)).toMatch(
      /veer_requests_total\{route="default",version="canary",code="200",grpc_code="UNAVAILABLE"\} 5/,
    )
  })

  it("answers the proxy's own failures as gRPC errors: UNAVAILABLE, UNIMPLEMENTED", async () => {
    const veer = await bed.proxy({
      match: { host: 'api.example', pathPrefix: '/' },
      stable: { url: `h2c://127.0.0.1:${await deadPort()}` },
    })
    const c = client(veer.port, { 'grpc.default_authority': 'api.example' })
    const down = await say(c, 'x')
    expect(down.err?.code).toBe(grpc.status.UNAVAILABLE)
    expect(down.err?.details).toBe('veer: the upstream refused or failed the connection')
    expect(down.trailers?.get('x-veer-error')).toEqual(['upstream_connect_failed'])
    // No route for this authority.
    const lost = await say(client(veer.port), 'x')
    expect(lost.err?.code).toBe(grpc.status.UNIMPLEMENTED)
    expect(lost.trailers?.get('x-veer-error')).toEqual(['no_route'])
    expect(await metrics(veer.adminUrl)).toMatch(
      /veer_requests_total\{route="default",version="stable",code="error",grpc_code="UNAVAILABLE"\} 1/,
    )
  })

  it('honours grpc-timeout: an upstream that does not answer in time is DEADLINE_EXCEEDED', async () => {
    // A bare HTTP/2 upstream that never answers (grpc-js servers enforce deadlines themselves).
    const silent = createH2Server()
    const sessions: import('node:http2').ServerHttp2Session[] = []
    silent.on('session', (s) => sessions.push(s))
    silent.on('stream', () => {})
    await new Promise<void>((ok) => silent.listen(0, '127.0.0.1', ok))
    const port = (silent.address() as AddressInfo).port
    const veer = await bed.proxy({ stable: { url: `h2c://127.0.0.1:${port}` }, timeouts: { headers: '30s' } })
    const session = await h2connect(veer.url)
    const started = Date.now()
    const a = await h2request(
      session,
      {
        ':method': 'POST',
        ':path': '/test.Echo/Say',
        'content-type': 'application/grpc',
        te: 'trailers',
        'grpc-timeout': '300m',
      },
      Buffer.from([0, 0, 0, 0, 2, 0x7b, 0x7d]),
    )
    const took = Date.now() - started
    session.close()
    await new Promise<void>((ok) => {
      for (const s of sessions) s.destroy()
      silent.close(() => ok())
    })
    expect(a.status).toBe(200)
    expect(a.headers['grpc-status']).toBe('4')
    expect(a.headers['x-veer-error']).toBe('upstream_timeout')
    // Well before the route's 30 s headers timeout.
    expect(took).toBeLessThan(10_000)
    await waitUntil(
      async () => /grpc_code="DEADLINE_EXCEEDED"/.test(await metrics(veer.adminUrl)),
      'the metric',
    )
  })
  it('bounds a streamed answer by grpc-timeout too: DEADLINE_EXCEEDED in the trailers, the upstream stream cancelled', async () => {
    // An upstream that starts its answer, sends one message, and then never ends it.
    const stalled = createH2Server()
    const sessions: import('node:http2').ServerHttp2Session[] = []
    stalled.on('session', (s) => sessions.push(s))
    let upstreamClosed!: () => void
    const cancelled = new Promise<void>((ok) => (upstreamClosed = ok))
    stalled.on('stream', (stream) => {
      stream.on('close', () => upstreamClosed())
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true })
      stream.write(Buffer.from([0, 0, 0, 0, 2, 0x7b, 0x7d]))
    })
    await new Promise<void>((ok) => stalled.listen(0, '127.0.0.1', ok))
    const port = (stalled.address() as AddressInfo).port
    const veer = await bed.proxy({ stable: { url: `h2c://127.0.0.1:${port}` } })
    const session = await h2connect(veer.url)
    const a = await h2request(
      session,
      {
        ':method': 'POST',
        ':path': '/test.Echo/Count',
        'content-type': 'application/grpc',
        te: 'trailers',
        'grpc-timeout': '300m',
      },
      Buffer.from([0, 0, 0, 0, 2, 0x7b, 0x7d]),
    )
    session.close()
    await cancelled
    await new Promise<void>((ok) => {
      for (const s of sessions) s.destroy()
      stalled.close(() => ok())
    })
    expect(a.status).toBe(200)
    // The message sent before the deadline reached the client, then the proxy's status.
    expect(a.body.length).toBe(7)
    expect(a.trailers['grpc-status']).toBe('4')
    expect(a.trailers['x-veer-error']).toBe('upstream_timeout')
    await waitUntil(
      async () => /grpc_code="DEADLINE_EXCEEDED"/.test(await metrics(veer.adminUrl)),
      'the metric',
    )
  })
})

/** A ping-pong bidi call: each message waits for its answer before the next is written. */
async function pingPong(c: Client, count: number): Promise<{ got: number[]; status: grpc.StatusObject }> {
  const call = c.chat() as grpc.ClientDuplexStream<{ n: number }, { n: number }>
  const ended = new Promise<grpc.StatusObject>((ok) => call.on('status', ok))
  const got: number[] = []
  for (let n = 1; n <= count; n++) {
    const next = new Promise<{ n: number }>((ok) => call.once('data', ok))
    call.write({ n })
    got.push((await next).n)
  }
  call.end()
  return { got, status: await ended }
}

/** A server-streaming call: one request message, `to` answer messages. */
function countTo(c: Client, to: number): Promise<{ got: number[]; status: grpc.StatusObject }> {
  return new Promise((ok) => {
    const got: number[] = []
    const call = c.count({ to }) as grpc.ClientReadableStream<{ n: number }>
    call.on('data', (m: { n: number }) => got.push(m.n))
    call.on('status', (status: grpc.StatusObject) => ok({ got, status }))
  })
}

interface Diff {
  path: string
  differences: { field: string; primary: unknown; shadow: unknown }[]
}

async function diffs(adminUrl: string): Promise<Diff[]> {
  const body = (await (await fetch(`${adminUrl}/v1/shadow/diffs`)).json()) as {
    routes: Record<string, Diff[]>
  }
  return body.routes.default ?? []
}

describe('gRPC mirroring', () => {
  it('mirrors a unary call to the shadow and compares it with its grpc-status: a match', async () => {
    // Both answer the same message; their trailers differ (x-served-by), which is not compared.
    const stable = await echoServer('stable', undefined, { by: 'v' })
    const shadow = await echoServer('shadow', undefined, { by: 'v' })
    const veer = await bed.proxy({ stable: { url: stable.url }, shadow: { url: shadow.url, percent: 100 } })
    const c = client(veer.port)
    for (let i = 0; i < 3; i++) {
      const a = await say(c, `hi ${i}`)
      expect(a.err).toBeNull()
      expect(a.value?.text).toBe(`hi ${i}`)
    }
    const stats = await settled(veer)
    expect(stats).toMatchObject({ sent: 3, dropped: 0, errors: 0, compared: 3, mismatches: 0 })
    expect(shadow.says()).toBe(3)
    const text = await metrics(veer.adminUrl)
    expect(text).toMatch(/veer_shadow_requests_total\{route="default",outcome="match"\} 3/)
    expect(text).toMatch(
      /veer_requests_total\{route="default",version="shadow",code="200",grpc_code="OK"\} 3/,
    )
  })

  it('counts a different grpc-status or a different message as a mismatch', async () => {
    const stable = await echoServer('stable', undefined, { by: 'v' })
    // NOT_FOUND for `gone`; every message names it, so the others differ in their body.
    const shadow = await echoServer('shadow', undefined, { notFound: 'gone' })
    const veer = await bed.proxy({ stable: { url: stable.url }, shadow: { url: shadow.url, percent: 100 } })
    const c = client(veer.port)
    expect((await say(c, 'gone')).err).toBeNull()
    await waitUntil(async () => (await settled(veer)).compared === 1, 'the first comparison')
    expect((await say(c, 'other')).err).toBeNull()
    const stats = await settled(veer)
    expect(stats).toMatchObject({ sent: 2, compared: 2, mismatches: 2 })
    expect(await metrics(veer.adminUrl)).toMatch(
      /veer_shadow_requests_total\{route="default",outcome="mismatch"\} 2/,
    )
    const [first, second] = await diffs(veer.adminUrl)
    expect(first!.path).toBe('/test.Echo/Say')
    expect(first!.differences).toContainEqual({ field: 'grpc-status', primary: 'OK', shadow: 'NOT_FOUND' })
    expect(second!.differences.map((d) => d.field)).toEqual(['body'])
    // The shadow lines name each shadow answer's grpc-status, as the access lines do the primary's.
    const shadowLines = () => veer.logs.filter((l) => l.msg === 'shadow')
    await waitUntil(() => shadowLines().length === 2, 'two shadow lines')
    const lines = shadowLines()
    expect(lines.map((l) => [l.outcome, l.grpc_code])).toEqual([
      ['mismatch', 'NOT_FOUND'],
      ['mismatch', 'OK'],
    ])
  })

  it('does not mirror streams: a bidi call is never sent, a server stream is cut at its second message', async () => {
    const stable = await echoServer('stable', undefined, { by: 'v' })
    const shadow = await echoServer('shadow', undefined, { by: 'v' })
    const veer = await bed.proxy({ stable: { url: stable.url }, shadow: { url: shadow.url, percent: 100 } })
    const c = client(veer.port)
    const chat = await pingPong(c, 3)
    expect(chat.status.code).toBe(grpc.status.OK)
    expect(chat.got).toEqual([2, 4, 6])
    const counted = await countTo(c, 3)
    expect(counted.status.code).toBe(grpc.status.OK)
    expect(counted.got).toEqual([1, 2, 3])
    // The marker: a unary call after them is mirrored and compared; by then both streams were judged.
    expect((await say(c, 'after')).err).toBeNull()
    await waitUntil(async () => (await settled(veer)).compared === 1, 'the unary call compared')
    const stats = await settled(veer)
    // The bidi copy never went; the server stream's went (its request was one message) and was cut.
    expect(stats).toMatchObject({ sent: 2, dropped: 2, errors: 0, compared: 1, mismatches: 0 })
    expect(shadow.says()).toBe(1)
    expect(shadow.calls()).toBe(2)
    expect(stable.calls()).toBe(3)
  })
})

describe('gRPC fallback to stable', () => {
  it('retries on stable a call whose canary refuses the connection: unary and a bidi stream', async () => {
    const stable = await echoServer('stable')
    const veer = await bed.proxy({
      stable: { url: stable.url },
      canary: { url: `h2c://127.0.0.1:${await deadPort()}` },
      // Two refusals: short of health.ejectAfter (5), so both calls try the canary first.
      canaryWeight: 100,
    })
    const c = client(veer.port)
    const a = await say(c, 'rescued')
    expect(a.err).toBeNull()
    expect(a.value?.by).toBe('stable')
    // A stream's body is not kept: stable gets the same unread stream, message by message.
    const chat = await pingPong(c, 3)
    expect(chat.status.code).toBe(grpc.status.OK)
    expect(chat.got).toEqual([2, 4, 6])
    expect(stable.calls()).toBe(2)
    const text = await metrics(veer.adminUrl)
    expect(text).toMatch(
      /veer_requests_total\{route="default",version="canary",code="error",grpc_code="UNAVAILABLE"\} 2/,
    )
    expect(text).toMatch(
      /veer_requests_total\{route="default",version="stable",code="200",grpc_code="OK"\} 2/,
    )
    const access = await veer.waitForLog((l) => l.msg === 'access' && l.version === 'canary')
    expect(access.retried).toBe('stable')
  })

  it('does not retry a canary that answered UNAVAILABLE: the call reached it', async () => {
    const stable = await echoServer('stable')
    const canary = await echoServer('canary', grpc.status.UNAVAILABLE)
    const veer = await bed.proxy({
      stable: { url: stable.url },
      canary: { url: canary.url },
      canaryWeight: 100,
    })
    const a = await say(client(veer.port), 'x')
    expect(a.err?.code).toBe(grpc.status.UNAVAILABLE)
    expect(a.err?.details).toBe('canary is failing')
    expect(canary.calls()).toBe(1)
    expect(stable.calls()).toBe(0)
  })
})

describe('gRPC cancellation', () => {
  it('labels a call the client cancels CANCELLED, not counted as an error', async () => {
    const stable = await echoServer('stable')
    const veer = await bed.proxy({ stable: { url: stable.url } })
    const call = client(veer.port).chat() as grpc.ClientDuplexStream<{ n: number }, { n: number }>
    const status = new Promise<grpc.StatusObject>((ok) => call.on('status', ok))
    call.on('error', () => {})
    const first = new Promise<{ n: number }>((ok) => call.once('data', ok))
    call.write({ n: 1 })
    expect((await first).n).toBe(2)
    call.cancel()
    expect((await status).code).toBe(grpc.status.CANCELLED)
    const access = await veer.waitForLog((l) => l.msg === 'access' && l.path === '/test.Echo/Chat')
    expect(access.grpc_code).toBe('CANCELLED')
    expect(access.error).toBe('client_closed')
    expect(await metrics(veer.adminUrl)).toMatch(
      /veer_requests_total\{route="default",version="stable",code="200",grpc_code="CANCELLED"\} 1/,
    )
    const body = (await (await fetch(`${veer.adminUrl}/v1/stats`)).json()) as {
      routes: { stable: { window: { requests: number; errors: number } } }[]
    }
    expect(body.routes[0]!.stable.window).toMatchObject({ requests: 1, errors: 0 })
  })
})
