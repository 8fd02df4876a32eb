/**
 * Webhooks on rollout events reach a real loopback receiver with a Slack-compatible `text`; a flaky
 * receiver gets retries; a failing or hanging receiver never slows the API or the rollout.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { announced, type ControlProcess, FakeProxy, startControl, until } from '../helpers/control.ts'

interface Receiver {
  url: string
  server: Server
  // biome-ignore lint/suspicious/noExplicitAny: payloads are checked by the assertions
  bodies: Record<string, any>[]
  attempts: number
}

async function receiver(
  answer: (attempt: number, req: IncomingMessage, res: ServerResponse) => void,
): Promise<Receiver> {
  const r: Receiver = { url: '', server: createServer(), bodies: [], attempts: 0 }
  r.server.on('request', (req, res) => {
    let text = ''
    req.on('data', (d) => (text += d))
    req.on('end', () => {
      r.attempts++
      try {
        r.bodies.push({ ...JSON.parse(text), _type: req.headers['content-type'], _path: req.url })
      } catch {}
      answer(r.attempts, req, res)
    })
  })
  await new Promise<void>((resolve) => r.server.listen(0, '127.0.0.1', resolve))
  r.url = `http://127.0.0.1:${(r.server.address() as AddressInfo).port}/hooks/secret-path`
  return r
}

let ok: Receiver
let flaky: Receiver
let failing: Receiver
let hanging: Receiver
let control: ControlProcess

beforeAll(async () => {
  ok = await receiver((_, __, res) => res.writeHead(200).end('ok'))
  flaky = await receiver((n, _, res) => res.writeHead(n <= 2 ? 503 : 204).end())
  failing = await receiver((_, __, res) => res.writeHead(500).end('no'))
  hanging = await receiver(() => {})
  control = await startControl({
    args: ['--webhook', ok.url, '--webhook', failing.url, '--webhook', hanging.url],
    env: { VEER_WEBHOOKS: flaky.url },
  })
  await new FakeProxy(control, 'edge-1', [announced('shop', 0)]).register()
})

afterAll(async () => {
  expect(await control?.stop()).toBe(0)
  for (const r of [ok, flaky, failing, hanging]) {
    r?.server.closeAllConnections()
    r?.server.close()
  }
})

describe('webhooks', () => {
  it('deliver every rollout event, in order, with a Slack-compatible text; failing receivers block nothing', async () => {
    const slowest: number[] = []
    const call = async (path: string, body: unknown) => {
      const t0 = Date.now()
      const r = await control.api('POST', `/v1/routes/shop/${path}`, { body })
      slowest.push(Date.now() - t0)
      expect(r.status).toBe(200)
      return r.json
    }
    await call('rollout', {
      steps: [{ weight: 10 }, { weight: 40, pause: '1h' }, { weight: 100 }],
      reason: 'ship v2',
    })
    await call('promote', {})
    await call('pause', { reason: 'lunch' })
    await call('resume', {})
    const last = await call('abort', { reason: 'errors up' })
    // The API answered at once although one receiver hangs and another fails every time.
    expect(Math.max(...slowest)).toBeLessThan(1000)
    expect(last.weights.canary).toBe(0)

    await until(() => ok.bodies.length >= 6, 5000)
    expect(ok.bodies.map((b) => b.event)).toEqual([
      'started',
      'promoted',
      'step',
      'paused',
      'resumed',
      'rolled-back',
    ])
    const started = ok.bodies[0]!
    expect(started).toMatchObject({
      source: 'veer',
      event: 'started',
      route: 'shop',
      step: 1,
      steps: 3,
      weight: 10,
      previousWeight: 0,
      who: 'alice',
      why: 'ship v2',
      _type: 'application/json',
      _path: '/hooks/secret-path',
    })
    expect(started.text).toBe(
      ':rocket: veer: route *shop* rollout started: step 1/3, canary 0% → 10% (by alice) — ship v2',
    )
    const rolledBack = ok.bodies[5]!
    expect(rolledBack).toMatchObject({
      event: 'rolled-back',
      weight: 0,
      previousWeight: 40,
      why: 'errors up',
    })
    expect(rolledBack.text).toMatch(/ROLLED BACK/)
    for (const b of ok.bodies) {
      expect(typeof b.revision).toBe('number')
      expect(Number.isNaN(Date.parse(b.time))).toBe(false)
    }

    // The flaky receiver got its first event on the third attempt, then the rest in order.
    await until(() => flaky.bodies.length >= 8, 5000)
    expect(flaky.bodies.slice(0, 3).map((b) => b.event)).toEqual(['started', 'started', 'started'])
    expect(flaky.bodies.slice(2).map((b) => b.event)).toEqual([
      'started',
      'promoted',
      'step',
      'paused',
      'resumed',
      'rolled-back',
    ])
    // The failing one is retried (6 attempts with 50 ms doubling backoff here) and then given up on.
    await until(() => failing.attempts >= 6, 5000)
    await until(() => control.logs.some((l) => l.msg === 'webhook failed, event dropped'), 5000)
    const dropped = control.logs.find((l) => l.msg === 'webhook failed, event dropped')!
    expect(dropped).toMatchObject({ attempts: 6, problem: 'HTTP 500' })
    // Logs name a webhook by origin only: the path of a Slack URL is its secret.
    expect(JSON.stringify(control.logs)).not.toContain('secret-path')
    expect(hanging.attempts).toBe(1)
  })

  it('tell of a release change: a new canary announced, at its file weight, with the proxy that said so', async () => {
    const before = ok.bodies.length
    const next = { ...announced('hooked', 0), canary: { url: 'http://127.0.0.1:3004', release: 'v3' } }
    await new FakeProxy(control, 'edge-2', [announced('hooked', 20)]).register()
    await new FakeProxy(control, 'edge-2', [next]).register()
    await until(() => ok.bodies.some((b, i) => i >= before && b.event === 'release-changed'), 5000)
    const hook = ok.bodies.slice(before).find((b) => b.event === 'release-changed')!
    expect(hook).toMatchObject({ route: 'hooked', who: 'edge', previousWeight: 20, weight: 0 })
    expect(hook.why).toMatch(/edge-2/)
    expect(hook.text).toMatch(
      /^:package: veer: route \*hooked\* has a new release pair: canary 20% → 0% \(by edge\) — /,
    )
  })
})
