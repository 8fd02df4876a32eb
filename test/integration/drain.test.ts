/**
 * SIGTERM under load: /readyz turns 503 during the grace, responses carry `Connection: close`, new
 * connections are still accepted during the grace and refused after it, every request accepted
 * completes, and the process exits 0. A request slower than the deadline is cut there.
 */
import { Agent, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http'
import { connect, type Socket } from 'node:net'
import { Client, request } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import { startUpstream, type Upstream } from '../helpers/upstream.ts'
import { startVeer, type VeerProcess, writeConfig } from '../helpers/veer.ts'

let upstream: Upstream | undefined
let veer: VeerProcess | undefined
let agent: Agent | undefined

afterEach(async () => {
  agent?.destroy()
  agent = undefined
  await veer?.stop('SIGKILL')
  veer = undefined
  await upstream?.close()
  upstream = undefined
  held.length = 0
  slowPending = 0
})

/** `/slow?ms=N` requests the upstream is answering now. */
let slowPending = 0
/** Answers for `/hold`, given when the test says so. */
const held: (() => void)[] = []

/** `/slow?ms=N` answers after N ms (default 1000), `/hold` when released, `/hang` never; else at once. */
function handler(req: IncomingMessage, res: ServerResponse): void {
  req.resume()
  const url = new URL(req.url ?? '/', 'http://x')
  if (url.pathname === '/hang') return
  const answer = () => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end(url.pathname)
  }
  if (url.pathname === '/hold') {
    held.push(answer)
    return
  }
  if (url.pathname !== '/slow') {
    answer()
    return
  }
  slowPending++
  setTimeout(
    () => {
      slowPending--
      answer()
    },
    Number(url.searchParams.get('ms') ?? 1000),
  )
}

/** Resolves once `test()` holds, checking every `everyMs`, at most `tries` times. */
async function until(
  test: () => boolean | Promise<boolean>,
  what: string,
  tries = 200,
  everyMs = 25,
): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await test()) return
    await new Promise((r) => setTimeout(r, everyMs))
  }
  throw new Error(`timed out waiting for ${what}`)
}

/** Resolves true when a fresh TCP connection to the port is refused. */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(false)
    })
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'))
  })
}

type Outcome =
  | { status: number; connection: string | undefined }
  | { code: string; message: string; reused: boolean; bytesRead: number }

function get(agent: Agent, port: number, path: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, agent })
    req.on('response', (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection }))
      res.on('error', (err: NodeJS.ErrnoException) =>
        resolve({ code: err.code ?? 'ERR', message: err.message, reused: req.reusedSocket, bytesRead: -1 }),
      )
    })
    req.on('error', (err: NodeJS.ErrnoException) =>
      resolve({
        code: err.code ?? 'ERR',
        message: err.message,
        reused: req.reusedSocket,
        bytesRead: req.socket?.bytesRead ?? 0,
      }),
    )
    req.end()
  })
}

async function readyz(adminUrl: string): Promise<number> {
  const res = await request(`${adminUrl}/readyz`)
  await res.body.dump()
  return res.statusCode
}

interface Done {
  path: string
  status: number
  connection: string | undefined
  /** Phase when the request was sent and when its answer was complete. */
  sent: Phase
  ended: Phase
}
/** 0: before SIGTERM; 1: SIGTERM sent; 2: /readyz seen answering 503. */
type Phase = 0 | 1 | 2

describe('SIGTERM drain', () => {
  it('under keep-alive load: readyz 503, Connection: close, in-flight requests finish, exit 0, zero failures', async () => {
    upstream = await startUpstream('stable', handler)
    const file = writeConfig({
      shutdown: { grace: '1s', deadline: '10s' },
      log: { access: false },
      routes: [{ name: 'default', stable: { url: upstream.url } }],
    })
    veer = await startVeer(['--config', file])
    const v = veer
    expect(await readyz(v.adminUrl)).toBe(200)

    let phase: Phase = 0
    const done: Done[] = []
    const failures: { path: string; sent: Phase; error: string }[] = []
    let notAccepted = 0
    // node:http's keep-alive agent (20 connections) rather than undici: it tells whether a request went
    // out on a fresh or a reused connection, and how much came back on it before it failed.
    agent = new Agent({ keepAlive: true, maxSockets: 20 })
    const a = agent
    // Workers 0-4 ask for a 1 s answer, the other 15 for an immediate one, each in a loop until the
    // proxy does not take the connection any more (expected only after SIGTERM).
    const worker = async (i: number) => {
      const path = i < 5 ? '/slow?ms=1000' : '/fast'
      for (let n = 0; n < 1_000_000; n++) {
        const sent = phase
        const outcome = await get(a, v.port, path)
        if ('status' in outcome) {
          done.push({ path, status: outcome.status, connection: outcome.connection, sent, ended: phase })
          continue
        }
        // Not accepted: the connection was refused, or reset before a byte came back on a connection
        // of its own. After the listener closes, that is a handshake the kernel had completed but veer
        // never accepted (closing a listening socket resets its accept queue): nothing was taken.
        if (
          phase > 0 &&
          !outcome.reused &&
          outcome.bytesRead === 0 &&
          /^(ECONNREFUSED|ECONNRESET|EPIPE)$/.test(outcome.code)
        ) {
          notAccepted++
        } else {
          failures.push({
            path,
            sent,
            error: `${outcome.code} ${outcome.message} (reused: ${outcome.reused})`,
          })
        }
        return
      }
    }
    const workers = Array.from({ length: 20 }, (_, i) => worker(i))

    // A request the upstream holds until the test lets it go: it outlives the grace, so the process must
    // still be there, draining, once new connections are refused.
    const long = request(`${v.url}/hold`).then(async (res) => ({
      status: res.statusCode,
      connection: res.headers.connection,
      body: await res.body.text(),
    }))

    // Load is flowing, the held request is in, and all five slow requests are at the upstream.
    await until(() => done.length >= 500 && held.length === 1 && slowPending === 5, 'load')
    expect(failures).toEqual([])
    const before = done.length
    phase = 1
    v.child.kill('SIGTERM')
    await until(async () => (await readyz(v.adminUrl)) === 503, '/readyz to answer 503')
    phase = 2

    // During the grace a brand-new connection is still served, and told to close.
    const fresh = new Client(v.url)
    const late = await fresh.request({ path: '/fast', method: 'GET' })
    expect(await late.body.text()).toBe('/fast')
    expect(late.statusCode).toBe(200)
    expect(late.headers.connection).toBe('close')
    await fresh.close()

    // After the grace, new connections are refused while the held request still runs.
    await until(() => refused(v.port), 'new connections to be refused')
    expect(v.child.exitCode).toBeNull()
    held.shift()!()

    expect(await long).toEqual({ status: 200, connection: 'close', body: '/hold' })
    await Promise.all(workers)
    expect(await v.exited).toBe(0)

    expect(failures).toEqual([])
    expect(done.filter((d) => d.status !== 200)).toEqual([])
    expect(done.length).toBeGreaterThan(before)
    // Every worker ended on a connection that was not accepted, never on a failed request.
    expect(notAccepted).toBe(20)
    // Requests in flight at SIGTERM (sent before, answered after) all completed, the five slow ones included.
    const inflight = done.filter((d) => d.sent === 0 && d.ended > 0)
    expect(inflight.filter((d) => d.path.startsWith('/slow')).length).toBe(5)
    // Every answer sent once /readyz said 503 told the client to close its connection.
    const duringDrain = done.filter((d) => d.sent === 2)
    expect(duringDrain.length).toBeGreaterThan(0)
    expect(duringDrain.filter((d) => d.connection !== 'close')).toEqual([])
    // So did the slow answers that were in flight at SIGTERM (their headers came after it).
    expect(inflight.filter((d) => d.path.startsWith('/slow') && d.connection !== 'close')).toEqual([])
    expect(v.logs.some((l) => l.msg === 'draining')).toBe(true)
    expect(v.logs.some((l) => l.msg === 'veer proxy stopped')).toBe(true)
  })

  it('serves a connection opened during the grace whose request only comes after it', async () => {
    upstream = await startUpstream('stable', handler)
    const file = writeConfig({
      shutdown: { grace: '300ms', deadline: '10s' },
      routes: [{ name: 'default', stable: { url: upstream.url } }],
    })
    veer = await startVeer(['--config', file])
    const v = veer
    v.child.kill('SIGTERM')
    await until(async () => (await readyz(v.adminUrl)) === 503, '/readyz to answer 503')
    const socket = connect(v.port, '127.0.0.1')
    await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject))
    let answer = ''
    socket.on('data', (d) => (answer += d))
    const ended = new Promise((resolve) => socket.once('close', resolve))
    // The grace is over once new connections are refused; only then does this one send its request.
    await until(() => refused(v.port), 'new connections to be refused')
    // write, not end: Node's server drops the answer to a client that half-closes before it comes.
    socket.write('GET /late HTTP/1.1\r\nHost: veer\r\n\r\n')
    await ended
    expect(answer).toMatch(/^HTTP\/1\.1 200 /)
    expect(answer).toMatch(/\r\nconnection: close\r\n/i)
    expect(answer.slice(answer.indexOf('\r\n\r\n'))).toContain('/late')
    expect(await v.exited).toBe(0)
  })

  it('closes an open WebSocket tunnel and exits 0 rather than wait for it', async () => {
    upstream = await startUpstream('stable', handler)
    upstream.server.on('upgrade', (_req, socket: Socket) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n')
      socket.on('data', (d) => socket.write(d))
    })
    const file = writeConfig({
      shutdown: { grace: '100ms', deadline: '10s' },
      routes: [{ name: 'default', stable: { url: upstream.url } }],
    })
    veer = await startVeer(['--config', file])
    const v = veer
    const socket = connect(v.port, '127.0.0.1')
    let received = ''
    const echoed = new Promise<void>((resolve) =>
      socket.on('data', (d) => {
        received += d
        if (received.endsWith('ping')) resolve()
      }),
    )
    const closed = new Promise((resolve) => socket.once('close', resolve))
    socket.write(
      'GET /ws HTTP/1.1\r\nHost: veer\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    )
    await until(() => received.startsWith('HTTP/1.1 101'), 'the 101')
    socket.write('ping')
    await echoed
    v.child.kill('SIGTERM')
    expect(await v.exited).toBe(0)
    await closed
  })

  it('cuts a request slower than shutdown.deadline at the deadline and still exits 0', async () => {
    upstream = await startUpstream('stable', handler)
    const file = writeConfig({
      shutdown: { grace: '100ms', deadline: '1s' },
      routes: [{ name: 'default', stable: { url: upstream.url } }],
    })
    veer = await startVeer(['--config', file])
    const v = veer
    const hung = request(`${v.url}/hang`).then(
      async (res) => {
        await res.body.text()
        return `answered ${res.statusCode}`
      },
      (err: Error) => `failed: ${err.message}`,
    )
    await until(() => upstream!.seen.some((r) => r.url === '/hang'), 'the upstream to get the request')
    v.child.kill('SIGTERM')
    const outcome = await hung
    // The upstream never answers: the only way this request ends is the proxy cutting it.
    expect(outcome).toMatch(/^failed: /)
    expect(await v.exited).toBe(0)
    expect(v.logs.some((l) => l.msg === 'drain deadline passed, closing the remaining connections')).toBe(
      true,
    )
    expect(v.logs.some((l) => l.msg === 'veer proxy stopped')).toBe(true)
  })
})
