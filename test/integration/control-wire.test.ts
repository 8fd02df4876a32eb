/**
 * The control side of the wire protocol (config/wire.ts), driven by fake proxies making plain HTTP
 * calls: register, long-poll watch, ack/NACK, report; a rollout step waits for every live proxy's ack;
 * a silent proxy stops holding it up. Also measures the delay from an API write to a watch seeing it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  announced,
  type ControlProcess,
  FakeProxy,
  pairOf,
  startControl,
  TOKENS,
  until,
} from '../helpers/control.ts'

let control: ControlProcess
const timers: NodeJS.Timeout[] = []

beforeAll(async () => {
  control = await startControl({ env: { VEER_CONTROL_LIVE_MS: '1500', VEER_CONTROL_WATCH_MS: '1000' } })
})

afterAll(async () => {
  for (const t of timers) clearInterval(t)
  expect(await control?.stop()).toBe(0)
})

/** Keep a fake proxy live by reporting every 300 ms (as a real one does every second). */
function keepLive(p: FakeProxy): () => void {
  const t = setInterval(() => void p.report(0).catch(() => {}), 300)
  timers.push(t)
  return () => clearInterval(t)
}

const route = async (name: string) => (await control.api('GET', `/v1/routes/${name}`)).json

/** Until control holds a watch of proxy `id` (a change made after this reaches it as a held watch). */
const watching = (id: string) =>
  until(async () =>
    (await control.api('GET', '/v1/proxies')).json.proxies.some(
      (x: { id: string; watching: boolean }) => x.id === id && x.watching,
    ),
  )

/**
 * The marker after "the clock left a step alone": route `name` with one live proxy of its own and a
 * first step of 100 ms. The returned call acks it and waits until it is on step 2: by then the clock has
 * ticked past every ack made before the call.
 */
async function clockWitness(name: string): Promise<() => Promise<void>> {
  const p = new FakeProxy(control, `${name}-1`, [announced(name, 0)])
  await p.register()
  keepLive(p)
  const { revision } = (
    await control.api('POST', `/v1/routes/${name}/rollout`, {
      body: { steps: [{ weight: 10, pause: '100ms' }, { weight: 20 }], analysis: { enabled: false } },
    })
  ).json
  return async () => {
    expect(await p.ack(revision)).toBe(204)
    await until(async () => (await route(name)).rollout.step === 2, 5000)
  }
}

describe('register', () => {
  it('creates unknown routes with the announced weight; after that control is the source of truth', async () => {
    const reg = announced('reg', 15)
    const plain = announced('reg-plain', 0, false)
    const p1 = new FakeProxy(control, 'reg-1', [reg, plain])
    const r1 = await p1.register()
    expect(r1.routes).toEqual({
      reg: { version: 1, pair: pairOf(reg), canary: 15 },
      'reg-plain': { version: 1, pair: pairOf(plain), canary: 0 },
    })
    // The same release pair at another weight: control's weight stands.
    const p2 = new FakeProxy(control, 'reg-2', [announced('reg', 40)])
    const r2 = await p2.register()
    expect(r2.routes).toEqual({ reg: { version: 1, pair: pairOf(reg), canary: 15 } })
    expect(r2.revision).toBe(r1.revision)
    const view = await route('reg')
    expect(view.stable).toEqual({ url: 'http://127.0.0.1:3001', release: 'v1' })
    expect(view.canary).toEqual({ url: 'http://127.0.0.1:3002', release: 'v2' })
    const proxies = (await control.api('GET', '/v1/proxies')).json.proxies
    expect(proxies.find((p: { id: string }) => p.id === 'reg-2')).toMatchObject({
      who: 'edge',
      routes: ['reg'],
      live: true,
    })
  })

  it('refuses a prototype name in a wire body with a 400 naming it, and registers nothing', async () => {
    const send = (path: string, raw: string) =>
      control.api('POST', path, {
        token: TOKENS.proxy,
        raw,
        headers: { 'content-type': 'application/json' },
      })
    const reg = await send('/v1/proxies/register', '{"id":"proto-1","routes":[],"__proto__":{"admin":true}}')
    expect(reg.status).toBe(400)
    expect(reg.json).toEqual({
      error: 'invalid_body',
      message: '__proto__ is not a known setting; allowed here: id, routes, appliedRevision',
    })
    const route = '{"name":"proto","stable":{"url":"http://127.0.0.1:1","constructor":1}}'
    const nested = await send('/v1/proxies/register', `{"id":"proto-1","routes":[${route}]}`)
    expect(nested.json.message).toBe(
      'routes[0].stable.constructor is not a known setting; allowed here: url, release',
    )
    const proxies = (await control.api('GET', '/v1/proxies')).json.proxies
    expect(proxies.map((p: { id: string }) => p.id)).not.toContain('proto-1')
    // A registered proxy's report with a route map key __proto__.
    const p = new FakeProxy(control, 'proto-2', [announced('proto', 0)])
    await p.register()
    const report = await send('/v1/proxies/proto-2/report', '{"revision":1,"routes":{"__proto__":{}}}')
    expect(report.status).toBe(400)
    expect(report.json.message).toBe('routes.__proto__ is the prototype key, never a route name; remove it')
  })

  it('serves routes named constructor and toString as any other: registered, weighted, re-registered', async () => {
    const p = new FakeProxy(control, 'names-1', [announced('constructor', 10), announced('toString', 20)])
    // Own entries: `.constructor` of the parsed answer would be typed (and, absent, found) as Object's.
    const canaryOf = (r: { routes: object }, name: string) =>
      new Map(Object.entries(r.routes)).get(name)?.canary
    const first = await p.register()
    expect(canaryOf(first, 'constructor')).toBe(10)
    expect(canaryOf(first, 'toString')).toBe(20)
    const set = await control.api('PUT', '/v1/routes/constructor/weights', { body: { canary: 30 } })
    expect(set.status).toBe(200)
    // A second registration finds the routes it made (own keys, not Object.prototype's).
    const again = await p.register()
    expect(canaryOf(again, 'constructor')).toBe(30)
    expect((await route('toString')).weights.canary).toBe(20)
  })
})

describe('watch, ack, report', () => {
  it('answers at once when behind, holds until a change, and 204 after the hold time', async () => {
    const p = new FakeProxy(control, 'w-1', [announced('w', 0)])
    const { revision } = await p.register()
    expect((await p.watch(revision - 1))?.revision).toBe(revision)
    const t0 = Date.now()
    expect(await p.watch(revision)).toBeNull()
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900)
    const pending = p.watch(revision)
    await watching('w-1')
    const put = await control.api('PUT', '/v1/routes/w/weights', { body: { canary: 33 } })
    const got = await pending
    expect(got).toEqual({
      revision: put.json.revision,
      routes: { w: { version: put.json.version, pair: pairOf(announced('w')), canary: 33 } },
    })
  })

  it('shows each proxy’s applied revision, NACK and last report', async () => {
    const p = new FakeProxy(control, 'a-1', [announced('a', 0)])
    const { revision } = await p.register()
    expect(await p.ack(revision, 'weights refused: test')).toBe(204)
    let view = (await control.api('GET', '/v1/proxies')).json.proxies.find(
      (x: { id: string }) => x.id === 'a-1',
    )
    expect(view).toMatchObject({ appliedRevision: 0, lastError: 'weights refused: test', lastReportAt: null })
    expect(await p.ack(revision)).toBe(204)
    expect(await p.report(revision)).toBe(204)
    view = (await control.api('GET', '/v1/proxies')).json.proxies.find((x: { id: string }) => x.id === 'a-1')
    expect(view).toMatchObject({ appliedRevision: revision, lastError: null, live: true })
    expect(Date.parse(view.lastReportAt)).toBeGreaterThan(Date.now() - 5000)
  })

  it('an unknown proxy id gets 404 unknown_proxy on watch, ack and report; registering again fixes it', async () => {
    const p = new FakeProxy(control, 'ghost-1', [announced('ghost', 0)])
    for (const status of [
      (await control.api('GET', '/v1/proxies/ghost-1/watch?revision=0', { token: p.token })).status,
      await p.ack(0),
      await p.report(0),
    ])
      expect(status).toBe(404)
    const { revision } = await p.register()
    expect(await p.ack(revision)).toBe(204)
  })
})

describe('a rollout step waits for every live proxy', () => {
  it('counts a step applied only when every live proxy acked its revision; a NACK holds it', async () => {
    const p1 = new FakeProxy(control, 'step-1', [announced('step', 0)])
    const p2 = new FakeProxy(control, 'step-2', [announced('step', 0)])
    await p1.register()
    await p2.register()
    keepLive(p1)
    keepLive(p2)
    const passed = await clockWitness('step-witness')
    const started = (
      await control.api('POST', '/v1/routes/step/rollout', {
        body: { steps: [{ weight: 10, pause: '300ms' }, { weight: 50 }], analysis: { enabled: false } },
      })
    ).json
    const rev = started.revision
    expect(started.rollout.state).toBe('waiting-for-proxies')
    await p1.ack(rev)
    await p2.ack(rev, 'cannot apply')
    await passed()
    let view = await route('step')
    expect(view.rollout).toMatchObject({ step: 1, state: 'waiting-for-proxies' })
    expect(view.proxies).toEqual({ live: 2, inSync: 1, stale: [] })
    const acked = Date.now()
    await p2.ack(rev)
    // The 300 ms pause runs only from the last ack on; then step 2 waits for both proxies again.
    view = await until(async () => {
      const r = await route('step')
      return r.rollout.step === 2 ? r : null
    }, 3000)
    expect(Date.now() - acked).toBeGreaterThanOrEqual(300)
    expect(view.weights.canary).toBe(50)
    expect(view.rollout.state).toBe('waiting-for-proxies')
  })

  it('a proxy that goes silent stops being live and stops holding the step', async () => {
    const p1 = new FakeProxy(control, 'silent-1', [announced('silent', 0)])
    const p2 = new FakeProxy(control, 'silent-2', [announced('silent', 0)])
    await p1.register()
    await p2.register()
    keepLive(p1)
    const passed = await clockWitness('silent-witness')
    const started = (
      await control.api('POST', '/v1/routes/silent/rollout', { body: { steps: [{ weight: 10 }] } })
    ).json
    await p1.ack(started.revision)
    // p2, live but silent, holds the step (its 1.5 s window is not over yet).
    await passed()
    expect((await route('silent')).rollout.state).toBe('waiting-for-proxies')
    // p2 never acks and stops talking: after the 1.5 s liveness window it no longer counts.
    const view = await until(async () => {
      const r = await route('silent')
      return r.rollout.state === 'waiting-for-promote' ? r : null
    }, 4000)
    expect(view.proxies).toEqual({ live: 1, inSync: 1, stale: [] })
    const listed = (await control.api('GET', '/v1/proxies')).json.proxies.find(
      (x: { id: string }) => x.id === 'silent-2',
    )
    expect(listed.live).toBe(false)
  })
})

describe('delay from an API write to a watching proxy', () => {
  it('is well under a second (median and max over 100 changes)', async () => {
    const p = new FakeProxy(control, 'lat-1', [announced('lat', 0)])
    let { revision } = await p.register()
    const delays: number[] = []
    for (let i = 0; i < 100; i++) {
      const held = p.watch(revision)
      await watching('lat-1')
      const t0 = performance.now()
      void control.api('PUT', '/v1/routes/lat/weights', { body: { canary: (i % 100) + 1 } })
      const got = await held
      delays.push(performance.now() - t0)
      expect(got?.routes.lat?.canary).toBe((i % 100) + 1)
      revision = got!.revision
    }
    delays.sort((a, b) => a - b)
    const median = (delays[49]! + delays[50]!) / 2
    const max = delays[99]!
    console.log(
      `write → watch delay over 100 changes: median ${median.toFixed(1)} ms, p90 ${delays[89]!.toFixed(1)} ms, max ${max.toFixed(1)} ms`,
    )
    expect(max).toBeLessThan(1000)
  })
})

describe('fuse reports', () => {
  it('rolls back a trip that raced a newer step, acts once per trip, and ignores a canary it no longer serves', async () => {
    const p = new FakeProxy(control, 'fz-1', [announced('fz', 10)])
    const { revision, routes } = await p.register()
    const tripped = routes.fz!.version
    // Control moved on (a step to 25%) before the proxy's report of a trip at the older version came in.
    await control.api('PUT', '/v1/routes/fz/weights', { body: { canary: 25 } })
    const fuse = {
      reason: '20 consecutive canary errors (last: 503)',
      version: tripped,
      at: Date.now(),
      release: 'v2',
      upstream: 'http://127.0.0.1:3002',
    }
    expect(await p.report(revision, { fz: fuse })).toBe(204)
    await until(async () => (await route('fz')).weights.canary === 0)
    const fuses = async () =>
      (await control.api('GET', '/v1/audit?route=fz&limit=100')).json.entries.filter(
        (e: { who: string }) => e.who === 'fuse',
      ) as { fuse: { at: number; proxy: string } }[]
    expect(await fuses()).toEqual([
      expect.objectContaining({ fuse: expect.objectContaining({ at: fuse.at, proxy: 'fz-1' }) }),
    ])
    // The operator raises the canary again; the same trip, reported again before the proxy applied the
    // rollback, does not overrule them, nor does a trip of another canary release.
    await control.api('PUT', '/v1/routes/fz/weights', { body: { canary: 10 } })
    expect(await p.report(revision, { fz: fuse })).toBe(204)
    expect(await p.report(revision, { fz: { ...fuse, at: fuse.at + 1, release: 'v0' } })).toBe(204)
    // A new trip of this canary is acted on (queued after the reports above, so the audit shows which trips were acted on).
    expect(await p.report(revision, { fz: { ...fuse, at: fuse.at + 2 } })).toBe(204)
    await until(async () => (await route('fz')).weights.canary === 0)
    const all = await fuses()
    expect(all.map((e) => e.fuse.at)).toEqual([fuse.at, fuse.at + 2])
  })
})
