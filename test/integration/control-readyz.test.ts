/**
 * Control's GET /readyz, the Kubernetes readiness probe: no token, 200 while the store is open and the
 * API serves, 503 once control is closing (SIGTERM, a failed write). The 503 is checked on control's
 * API in process (a real store, engine and HTTP server), where `closing` can be held; a real process
 * passes through it too fast to catch without racing its exit.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createApi } from '../../control/api.ts'
import { FailureLimiter, parseTokens } from '../../control/auth.ts'
import { Denials } from '../../control/denials.ts'
import { ControlMetrics } from '../../control/metrics.ts'
import { type ControlProcess, startControl, TOKENS } from '../helpers/control.ts'
import { engineBed } from '../helpers/engine.ts'

describe('veer control GET /readyz', () => {
  let control: ControlProcess
  beforeAll(async () => {
    control = await startControl()
  })
  afterAll(async () => {
    expect(await control?.stop()).toBe(0)
  })

  it('is 200 without a token while control serves; HEAD too; other methods 405', async () => {
    const r = await control.api('GET', '/readyz', { token: null })
    expect([r.status, r.json]).toEqual([200, { status: 'ready', revision: 0 }])
    expect((await control.api('HEAD', '/readyz', { token: null })).status).toBe(200)
    const post = await control.api('POST', '/readyz', { token: null })
    expect([post.status, post.json.error, post.headers.get('allow')]).toEqual([
      405,
      'method_not_allowed',
      'GET',
    ])
  })
})

describe('control API /readyz while closing', () => {
  let server: Server
  let url = ''
  let closing = false
  beforeAll(async () => {
    const log = pino({ level: 'silent' })
    const { engine, link, proxies, events } = await engineBed({
      log,
      judge: () => ({ result: 'pass', reason: '' }),
    })
    const tokens = parseTokens(null, 'VEER_TOKEN', TOKENS.operator)
    if (!tokens.ok) throw new Error(tokens.error)
    const handler = createApi({
      engine,
      link,
      proxies,
      events,
      tokens: () => tokens.tokens,
      limiter: new FailureLimiter(),
      denials: new Denials((draft) => engine.deny(draft), 60_000),
      log,
      watchMs: 1000,
      closing: () => closing,
      metrics: new ControlMetrics(),
    })
    server = createServer(handler)
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })
  afterAll(() => new Promise((ok) => (server ? server.close(ok) : ok(undefined))))

  it('answers 200 while open and 503 once closing, while /healthz stays 200', async () => {
    const ready = await fetch(`${url}/readyz`)
    expect([ready.status, (await ready.json()) as unknown]).toEqual([
      200,
      { status: 'ready', revision: expect.any(Number) },
    ])
    closing = true
    const stopping = await fetch(`${url}/readyz`)
    expect([stopping.status, await stopping.json()]).toEqual([503, { status: 'shutting_down' }])
    expect((await fetch(`${url}/healthz`)).status).toBe(200)
  })
})
