/**
 * A dead or failing shadow through a real process on loopback: a shadow on a closed port is ejected
 * after `health.ejectAfter` connect failures, so its copies are dropped unsent (connect attempts stay
 * bounded) while every primary answer is byte-identical; once something listens on that port again, a
 * probe after `health.ejectFor` connects and mirroring resumes. A shadow that accepts and resets every
 * connection is not ejected (it connects), and its error lines are written at most once a second, the
 * next one telling how many were held back; the trace span of a failure whose line was held back ends.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createNetServer, type Server, type Socket } from 'node:net'
import { request } from 'undici'
import { describe, expect, it } from 'vitest'
import { testBed, waitUntil } from '../helpers/bed.ts'
import { settled } from '../helpers/shadow.ts'
import { deadPort } from '../helpers/upstream.ts'
import type { VeerProcess } from '../helpers/veer.ts'

/** Servers a test binds itself (on a given port, or plain TCP), closed after it with their connections. */
const servers: Server[] = []
const sockets = new Set<Socket>()
const bed = testBed(async () => {
  for (const s of sockets) s.destroy()
  sockets.clear()
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve()))))
})

function track<S extends Server>(server: S): S {
  servers.push(server)
  server.on('connection', (s: Socket) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  return server
}

const EJECT_AFTER = 3
const EJECT_FOR_MS = 1000
const health = { health: { ejectAfter: EJECT_AFTER, ejectFor: `${EJECT_FOR_MS}ms` } }

/** The same bytes for the same request: a path-seeded body, and for a POST the hash of what it got. */
function answer(req: IncomingMessage, res: ServerResponse): void {
  const hash = createHash('sha256')
  req.on('data', (c: Buffer) => hash.update(c))
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' })
    res.end(expected(req.method!, req.url!, hash.digest('hex')))
  })
}

function expected(method: string, url: string, bodySha: string): Buffer {
  const seed = createHash('sha256').update(`${method} ${url}`).digest()
  return Buffer.concat([Buffer.from(`${method} ${url} ${bodySha}\n`), seed, seed])
}

const EMPTY_SHA = createHash('sha256').digest('hex')

async function outcomes(v: VeerProcess, outcome: string): Promise<number> {
  const text = await (await request(`${v.adminUrl}/metrics`)).body.text()
  const line = text
    .split('\n')
    .find((l) => l.startsWith(`veer_shadow_requests_total{route="default",outcome="${outcome}"}`))
  return line === undefined ? 0 : Number(line.split(' ').pop())
}

/** Request `i` through the proxy (even: POST with a body, odd: GET); fails unless its answer is exact. */
async function one(v: VeerProcess, i: number, payload: Buffer): Promise<void> {
  const post = i % 2 === 0
  const url = `/items/${i}?q=${i}`
  const res = await request(`${v.url}${url}`, post ? { method: 'POST', body: payload } : {})
  const body = Buffer.from(await res.body.arrayBuffer())
  expect(res.statusCode, `${url}: ${body}`).toBe(200)
  const sha = post ? createHash('sha256').update(payload).digest('hex') : EMPTY_SHA
  expect(body.equals(expected(post ? 'POST' : 'GET', url, sha)), `${url} answered other bytes`).toBe(true)
}

/** `n` requests from `from`, `concurrency` at a time. */
async function run(v: VeerProcess, from: number, n: number, concurrency: number, payload: Buffer) {
  let next = from
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < from + n) await one(v, next++, payload)
    }),
  )
}

function listen(server: Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
}

describe('a dead or failing shadow', () => {
  it('ejects a shadow on a closed port (copies dropped unsent, connect attempts bounded, primary byte-identical) and mirrors again once it listens', async () => {
    const stable = await bed.upstream('stable', answer)
    const port = await deadPort()
    const v = await bed.proxy(
      {
        stable: { url: stable.url },
        shadow: { url: `http://127.0.0.1:${port}`, compare: { noiseSample: 0 } },
      },
      health,
    )
    const payload = randomBytes(16 * 1024)
    const N = 200
    const CONCURRENCY = 10

    const started = Date.now()
    await run(v, 0, N, CONCURRENCY, payload)
    const elapsed = Date.now() - started
    expect(stable.seen).toHaveLength(N)

    const dead = await settled(v)
    expect(dead.sent + dead.dropped).toBe(N)
    expect(dead.errors).toBe(dead.sent)
    expect(dead.compared).toBe(0)
    // Before the ejection at most EJECT_AFTER failures plus what was in flight with them (one copy per
    // client connection); after it, one probe per EJECT_FOR_MS.
    const probes = Math.floor(elapsed / EJECT_FOR_MS) + 1
    expect(dead.sent, `sent ${dead.sent} in ${elapsed} ms`).toBeLessThanOrEqual(
      EJECT_AFTER + CONCURRENCY + probes,
    )
    expect(dead.dropped).toBeGreaterThanOrEqual(N - (EJECT_AFTER + CONCURRENCY + probes))
    expect(await outcomes(v, 'sent')).toBe(dead.sent)
    expect(await outcomes(v, 'dropped')).toBe(dead.dropped)
    expect(await outcomes(v, 'error')).toBe(dead.errors)

    // The shadow comes back on the same port: the first request after the ejection is the probe.
    const seen: string[] = []
    const shadow = createHttpServer((req, res) => {
      seen.push(req.url!)
      answer(req, res)
    })
    track(shadow)
    await listen(shadow, port)
    let i = N
    await waitUntil(
      async () => {
        await one(v, i++, payload)
        return seen.length > 0
      },
      'a probe to reach the revived shadow',
      EJECT_FOR_MS + 5000,
    )
    const probed = await settled(v)
    expect(probed.ejected).toBe(false)

    // From then on every request is mirrored, and the shadow's answers match the primary's.
    const M = 40
    await run(v, i, M, 4, payload)
    const after = await settled(v)
    expect(after.sent - probed.sent).toBe(M)
    expect(after.dropped).toBe(probed.dropped)
    expect(after.errors).toBe(dead.errors)
    expect(after.compared).toBeGreaterThanOrEqual(M)
    expect(after.mismatches).toBe(0)
    expect(seen.length).toBe(after.sent - dead.sent)
  })

  it("writes a failing shadow's error lines at most once a second, the next telling how many were held back", async () => {
    const stable = await bed.upstream('stable', answer)
    // Accepts every connection and closes it at once: a failure after connecting, so no ejection.
    const resetting = createNetServer((socket) => socket.destroy())
    track(resetting)
    await listen(resetting, 0)
    const port = (resetting.address() as { port: number }).port
    const v = await bed.proxy(
      {
        stable: { url: stable.url },
        shadow: { url: `http://127.0.0.1:${port}`, compare: { noiseSample: 0 } },
      },
      health,
    )
    const payload = randomBytes(1024)
    const N = 200
    const started = Date.now()
    await run(v, 0, N, 10, payload)
    const burst = await settled(v)
    expect(burst.sent).toBe(N)
    expect(burst.dropped).toBe(0)
    expect(burst.errors).toBe(N)

    const errorLines = () => v.logs.filter((l) => l.msg === 'shadow' && l.outcome === 'error')
    const held = () =>
      v.logs.filter((l) => l.msg === 'shadow errors suppressed').reduce((n, l) => n + Number(l.suppressed), 0)
    // One more failure a while later writes its line, and the count of those held back before it.
    let i = N
    await waitUntil(
      async () => {
        await one(v, i++, payload)
        return errorLines().length + held() >= N
      },
      'the held-back error lines to be counted',
      10_000,
    )
    const seconds = (Date.now() - started) / 1000
    const final = await settled(v)
    expect(errorLines().length, `${errorLines().length} lines in ${seconds} s`).toBeLessThanOrEqual(
      Math.ceil(seconds) + 1,
    )
    // Each failure is either written or counted once in a later line.
    expect(errorLines().length + held()).toBeLessThanOrEqual(final.errors)
    for (const l of v.logs.filter((l) => l.msg === 'shadow errors suppressed'))
      expect(l).toMatchObject({ route: 'default', version: 'shadow', upstream: `http://127.0.0.1:${port}` })
  })
  it('ends the trace span of every failed shadow copy, those whose line was held back included', async () => {
    const spans: { name: string; attributes: { key: string; value: { stringValue?: string } }[] }[] = []
    const collector = track(
      createHttpServer((req, res) => {
        let body = ''
        req.on('data', (d) => (body += d))
        req.on('end', () => {
          const doc = JSON.parse(body) as { resourceSpans: { scopeSpans: { spans: typeof spans }[] }[] }
          for (const rs of doc.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans)
          res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
        })
      }),
    )
    await listen(collector, 0)
    const stable = await bed.upstream('stable', answer)
    const resetting = track(createNetServer((socket) => socket.destroy()))
    await listen(resetting, 0)
    const v = await bed.proxy(
      {
        stable: { url: stable.url },
        shadow: {
          url: `http://127.0.0.1:${(resetting.address() as { port: number }).port}`,
          compare: { noiseSample: 0 },
        },
      },
      health,
      {
        OTEL_TRACES_EXPORTER: 'otlp',
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(collector.address() as { port: number }).port}`,
        OTEL_BSP_SCHEDULE_DELAY: '100',
      },
    )
    const N = 20
    const traced = { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' }
    for (let i = 0; i < N; i++) {
      const res = await request(`${v.url}/traced/${i}`, { headers: traced })
      await res.body.dump()
      expect(res.statusCode).toBe(200)
    }
    expect((await settled(v)).errors).toBe(N)
    const shadowSpans = () => spans.filter((s) => s.name === 'shadow GET default')
    await waitUntil(() => shadowSpans().length >= N, `${N} shadow spans`, 10_000)
    expect(shadowSpans()).toHaveLength(N)
    for (const span of shadowSpans())
      expect(span.attributes.find((a) => a.key === 'veer.shadow.outcome')?.value.stringValue).toBe('error')
    // Written lines: far fewer than the failures (N requests one after another take well under 10 s).
    await waitUntil(
      () => v.logs.some((l) => l.msg === 'shadow' && l.outcome === 'error'),
      'the first error line',
    )
    expect(v.logs.filter((l) => l.msg === 'shadow' && l.outcome === 'error').length).toBeLessThan(N)
  })
})
