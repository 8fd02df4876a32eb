/**
 * gRPC through a real proxy process, with @grpc/grpc-js clients and servers (JSON-serialised messages,
 * so no .proto is needed): unary and bidi calls with metadata and trailers, grpc-status as the outcome
 * (metrics' grpc_code, the fuse), the proxy's own failures as gRPC errors, and grpc-timeout honoured.
 */
import { createServer as createH2Server } from 'node:http2'
import type { AddressInfo } from 'node:net'
import * as grpc from '@grpc/grpc-js'
import { describe, expect, it } from 'vitest'
import { testBed, waitUntil } from '../helpers/bed.ts'
import { type Client, type EchoServer, echoClient, say, echoServer as startEcho } from '../helpers/grpc.ts'
import { h2connect, h2request } from '../helpers/h2.ts'
import { deadPort } from '../helpers/upstream.ts'

let servers: EchoServer[] = []
let clients: grpc.Client[] = []
const bed = testBed(async () => {
  for (const c of clients) c.close()
  clients = []
  await Promise.all(servers.map((s) => s.close()))
  servers = []
})

async function echoServer(name: string, fail?: grpc.status): Promise<EchoServer> {
  const s = await startEcho(name, fail)
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

  it('does not mirror gRPC calls (a plain request on the same route is)', async () => {
    const stable = await echoServer('stable')
    const shadow = await echoServer('shadow')
    const veer = await bed.proxy({ stable: { url: stable.url }, shadow: { url: shadow.url, percent: 100 } })
    const a = await say(client(veer.port), 'not copied')
    expect(a.err).toBeNull()
    // The marker: a plain HTTP/2 request after it is mirrored; once its copy is counted, the call's
    // would have been too.
    const session = await h2connect(veer.url)
    await h2request(session, { ':path': '/plain' })
    session.close()
    await waitUntil(
      async () =>
        /veer_shadow_requests_total\{route="default",outcome="sent"\} 1/.test(await metrics(veer.adminUrl)),
      'the plain request mirrored',
    )
    expect(shadow.calls()).toBe(0)
    expect(stable.calls()).toBe(1)
  })
})
