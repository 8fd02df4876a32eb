/**
 * End to end: a real `veer control` and three real `veer proxy --control` processes. Proxies register
 * and follow every change (measured: API write → all three acked, over 100 changes); a rollout
 * reaches every proxy's traffic; the proxies serve through a control `kill -9` and converge after it.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type ControlProcess,
  startControl,
  startLinkedProxy,
  TOKENS,
  tempDir,
  until,
} from '../helpers/control.ts'
import { startUpstream, type Upstream } from '../helpers/upstream.ts'
import { type VeerProcess, writeConfig } from '../helpers/veer.ts'

let control: ControlProcess
let stable: Upstream
let canary: Upstream
let proxies: VeerProcess[] = []
const stateDir = tempDir()
const tokenFile = join(tempDir(), 'proxy-token')

/** Every `proxy` ack event from control's event stream, with when it arrived. */
let acks: { id: string; revision: number; at: number }[] = []
let events: AbortController

async function follow(c: ControlProcess): Promise<void> {
  events = new AbortController()
  const res = await fetch(`${c.url}/v1/events`, {
    headers: { authorization: `Bearer ${TOKENS.read}` },
    signal: events.signal,
  })
  const reader = res.body!.getReader()
  let buffered = ''
  void (async () => {
    for (;;) {
      const { value, done } = await reader.read()
      if (done) return
      buffered += Buffer.from(value).toString()
      let end = buffered.indexOf('\n\n')
      while (end !== -1) {
        const frame = buffered.slice(0, end)
        buffered = buffered.slice(end + 2)
        end = buffered.indexOf('\n\n')
        if (!frame.includes('event: proxy')) continue
        const data = JSON.parse(frame.split('data: ')[1]!)
        if (data.kind === 'ack') acks.push({ id: data.id, revision: data.revision, at: performance.now() })
      }
    }
  })().catch(() => {})
}

beforeAll(async () => {
  stable = await startUpstream('stable')
  canary = await startUpstream('canary')
  writeFileSync(tokenFile, `${TOKENS.proxy}\n`)
  control = await startControl({ stateDir, env: { VEER_CONTROL_LIVE_MS: '3000' } })
  const file = writeConfig({
    log: { access: false },
    routes: [
      {
        name: 'api',
        stable: { url: stable.url, release: 'v1' },
        canary: { url: canary.url, release: 'v2' },
        canaryWeight: 0,
      },
    ],
  })
  proxies = await Promise.all([0, 1, 2].map(() => startLinkedProxy(file, control, tokenFile)))
  await until(async () => {
    const list = (await control.api('GET', '/v1/proxies')).json.proxies
    return (
      list.length === 3 &&
      list.every((p: { live: boolean; appliedRevision: number }) => p.live && p.appliedRevision >= 1)
    )
  }, 20_000)
  await follow(control)
})

afterAll(async () => {
  events?.abort()
  await Promise.all(proxies.map((p) => p.stop('SIGKILL')))
  await control?.stop()
  await Promise.all([stable?.close(), canary?.close()])
})

async function served(p: VeerProcess, n: number): Promise<number> {
  let toCanary = 0
  for (let i = 0; i < n; i++) {
    const r = await request(`${p.url}/x`)
    await r.body.dump()
    expect(r.statusCode).toBe(200)
    if (r.headers['x-upstream'] === 'canary') toCanary++
  }
  return toCanary
}

const weightOn = async (p: VeerProcess) => {
  const r = await request(`${p.adminUrl}/v1/config`)
  return ((await r.body.json()) as { routes: { weights: { canary: number } }[] }).routes[0]!.weights.canary
}

describe('three real proxies follow control', () => {
  it('every write reaches all three proxies well within a second (median and max over 100 changes)', async () => {
    const delays: number[] = []
    for (let i = 0; i < 100; i++) {
      const t0 = performance.now()
      const put = await control.api('PUT', '/v1/routes/api/weights', { body: { canary: (i % 99) + 1 } })
      expect(put.status).toBe(200)
      const revision = put.json.revision
      const done = await until(
        () => {
          const ids = new Set(acks.filter((a) => a.revision >= revision).map((a) => a.id))
          return ids.size === 3 ? Math.max(...acks.filter((a) => a.revision >= revision).map((a) => a.at)) : 0
        },
        5000,
        2,
      )
      delays.push(done - t0)
    }
    delays.sort((a, b) => a - b)
    const median = (delays[49]! + delays[50]!) / 2
    console.log(
      `API write → all 3 proxies applied and acked, 100 changes: median ${median.toFixed(1)} ms, p90 ${delays[89]!.toFixed(1)} ms, max ${delays[99]!.toFixed(1)} ms`,
    )
    expect(delays[99]!).toBeLessThan(1000)
    // The last write set canary 1 (i = 99).
    for (const p of proxies) expect(await weightOn(p)).toBe(1)
  })

  it('a rollout moves every proxy’s traffic; abort takes it back at once', async () => {
    await control.api('PUT', '/v1/routes/api/weights', { body: { canary: 0 } })
    const r = await control.api('POST', '/v1/routes/api/rollout', {
      body: { steps: [{ weight: 50, pause: '300ms' }, { weight: 100 }], analysis: { enabled: false } },
    })
    expect(r.status).toBe(200)
    const at100 = await until(async () => {
      const v = (await control.api('GET', '/v1/routes/api')).json
      return v.rollout.state === 'waiting-for-promote' ? v : null
    })
    expect(at100).toMatchObject({
      weights: { canary: 100 },
      proxies: { live: 3, inSync: 3 },
      rollout: { step: 2 },
    })
    for (const p of proxies) expect(await served(p, 20)).toBe(20)
    await control.api('POST', '/v1/routes/api/abort', { body: { reason: 'e2e' } })
    await until(async () => (await Promise.all(proxies.map(weightOn))).every((w) => w === 0))
    for (const p of proxies) expect(await served(p, 20)).toBe(0)
  })

  it('proxies serve on their last weights through a control kill -9 and converge after it', async () => {
    await control.api('PUT', '/v1/routes/api/weights', { body: { canary: 100 } })
    await until(async () => (await Promise.all(proxies.map(weightOn))).every((w) => w === 100))
    const port = new URL(control.url).port
    events.abort()
    control.child.kill('SIGKILL')
    await control.exited
    for (const p of proxies) expect(await served(p, 10)).toBe(10)
    control = await startControl({
      stateDir,
      listen: `127.0.0.1:${port}`,
      env: { VEER_CONTROL_LIVE_MS: '3000' },
    })
    acks = []
    await follow(control)
    expect((await control.api('GET', '/v1/routes/api')).json.weights.canary).toBe(100)
    await until(async () => (await control.api('GET', '/v1/proxies')).json.proxies.length === 3, 15_000)
    await control.api('PUT', '/v1/routes/api/weights', { body: { canary: 0 } })
    await until(async () => (await Promise.all(proxies.map(weightOn))).every((w) => w === 0))
    for (const p of proxies) expect(await served(p, 10)).toBe(0)
  })
})
