/**
 * Several `veer control` replicas on one etcd prefix (a real 3-member etcd): one leads and runs the
 * rollout clock; kill -9 of the leader mid-rollout elects another within the lease TTL and the rollout
 * goes on to its end, every step audited once, no acknowledged write lost; a leader stopped past its
 * lease and continued has lost the lead and writes nothing; a write to a follower reaches the proxies
 * of another replica; racing If-Match writes to different replicas have one winner.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { NotLeaderError } from '../../control/control-store.ts'
import { EtcdStore } from '../../control/etcd-store.ts'
import { createLogger } from '../../control/log.ts'
import {
  announced,
  type ControlProcess,
  FakeProxy,
  followEvents,
  runCli,
  startControl,
  TOKENS,
  tempDir,
  until,
  writeTokenFile,
} from '../helpers/control.ts'
import { type EtcdCluster, startEtcd } from '../helpers/etcd.ts'
import { startVeer, writeConfig } from '../helpers/veer.ts'

const TTL = 2

let etcd: EtcdCluster
let running: ControlProcess[] = []
let prefixes = 0

beforeAll(async () => {
  etcd = await startEtcd(3)
})
afterAll(async () => {
  await etcd?.close()
})
afterEach(async () => {
  for (const c of running) if (c.child.signalCode === null) c.child.kill('SIGCONT')
  await Promise.all(running.map((c) => c.stop('SIGKILL')))
  running = []
})

/** Three replicas on a fresh prefix; resolves once they agree on a leader: [leader, ...followers]. */
async function replicas(): Promise<ControlProcess[]> {
  const prefix = `/r${++prefixes}/`
  const tokenFile = writeTokenFile()
  const all = await Promise.all(
    [0, 1, 2].map(() =>
      startControl({ etcd: { endpoints: etcd.endpoints, prefix, leaseTtl: TTL }, tokenFile }),
    ),
  )
  running.push(...all)
  let views: { role: string; leader?: { id: string } | null }[] = []
  const leader = await until(async () => {
    views = await Promise.all(all.map(async (c) => (await c.api('GET', '/v1/control')).json))
    const id = views[0]?.leader?.id
    if (id === undefined || !views.every((v) => v.leader?.id === id)) return null
    return all[views.findIndex((v) => v.role === 'leader')] ?? null
  }).catch((err) => {
    throw new Error(`${err.message}: the replicas say ${JSON.stringify(views)}`)
  })
  return [leader!, ...all.filter((c) => c !== leader)]
}

/** A proxy that follows whichever replica of `controls` answers, acking every revision. */
function follow(id: string, controls: ControlProcess[], routes = [announced('shop', 0)]) {
  let at = 0
  let stopped = false
  let proxy = new FakeProxy(controls[0]!, id, routes)
  const state = { revision: 0, moves: 0, refused: [] as number[] }
  const loop = (async () => {
    let registered = false
    while (!stopped) {
      try {
        if (!registered) {
          const r = await proxy.register(state.revision)
          registered = true
          if (r.revision > state.revision) state.revision = r.revision
          const s = await proxy.ack(r.revision)
          if (s !== 204) state.refused.push(s)
          continue
        }
        const r = await proxy.watch(state.revision)
        if (r === null) continue
        state.revision = r.revision
        const s = await proxy.ack(r.revision)
        if (s !== 204) state.refused.push(s)
      } catch {
        if (stopped) return
        // The replica is gone (or answers 5xx): the next one in the list.
        at = (at + 1) % controls.length
        proxy = new FakeProxy(controls[at]!, id, routes)
        registered = false
        state.moves++
      }
    }
  })()
  return {
    state,
    get control() {
      return proxy.control
    },
    stop: async () => {
      stopped = true
      await loop
    },
  }
}

const actions = (entries: { action: string }[]) => entries.map((e) => e.action)

describe('control replicas on one etcd prefix', () => {
  it('kill -9 the leader mid-rollout: a new leader within the lease TTL, the rollout ends, every step once', async () => {
    const [leader, a, b] = await replicas()
    const routes = [announced('shop', 0), announced('cart', 0)]
    const p1 = follow('edge-1', [a!, b!, leader!], routes)
    const p2 = follow('edge-2', [leader!, a!, b!], routes)
    await until(async () => (await a!.api('GET', '/v1/routes/cart')).status === 200)
    // Writes to a follower all along, across the kill: each acknowledged one must be in the audit.
    let acked = 0
    let stop = false
    const writer = (async () => {
      for (let n = 1; !stop; n++) {
        const r = await b!.api('PUT', '/v1/routes/cart/weights', { body: { canary: n % 101 } })
        if (r.status === 200) acked = Math.max(acked, r.json.version)
      }
    })()
    const plan = {
      steps: [
        { weight: 10, pause: '300ms' },
        { weight: 30, pause: '300ms' },
        { weight: 60, pause: '300ms' },
        { weight: 100, pause: '0s' },
      ],
      analysis: { enabled: false },
    }
    // On the writer's replica: its queue orders the start among the writes (on another replica the
    // start could find `meta` moved by the writer at each of its tries).
    const started = await b!.api('POST', '/v1/routes/shop/rollout', { body: plan })
    expect(started.status, started.text).toBe(200)
    await until(async () => (await a!.api('GET', '/v1/routes/shop')).json.rollout?.step >= 1, 20_000)
    const old = (await leader!.api('GET', '/v1/control')).json.replica
    leader!.child.kill('SIGKILL')
    const killed = performance.now()
    await leader!.exited
    const next = await until(
      async () => {
        for (const c of [a!, b!]) {
          const v = (await c.api('GET', '/v1/control')).json
          if (v.role === 'leader' && v.replica !== old) return c
        }
        return null
      },
      20_000,
      10,
    )
    const failover = performance.now() - killed
    if (next === null) throw new Error('no leader')
    console.log(`failover: a new leader ${Math.round(failover)} ms after kill -9 (lease TTL ${TTL} s)`)
    // The lease runs out within the TTL of the kill (renewed every third of it); etcd expires leases in a
    // loop every 500 ms; then the next candidate's watch sees the key go and GET /v1/control shows it.
    expect(failover).toBeLessThan(TTL * 1000 + 1500)
    const done = await until(async () => {
      const r = (await next.api('GET', '/v1/routes/shop')).json
      return r.rollout?.phase === 'completed' ? r : null
    }, 30_000)
    expect(done.weights).toEqual({ stable: 0, canary: 100 })
    stop = true
    await writer
    await Promise.all([p1.stop(), p2.stop()])
    const audit = (await next.api('GET', '/v1/audit?route=shop')).json.entries
    expect(actions(audit).filter((x) => x !== 'route-register')).toEqual([
      'rollout-start',
      'rollout-step',
      'rollout-step',
      'rollout-step',
      'rollout-complete',
    ])
    const cart = (await next.api('GET', '/v1/routes/cart')).json
    expect(cart.version).toBeGreaterThanOrEqual(acked)
    const sets = (await next.api('GET', '/v1/audit?route=cart&limit=1000')).json.entries
    expect(sets.filter((e: { action: string }) => e.action === 'set-weight').length).toBe(cart.version - 1)
    expect([...p1.state.refused, ...p2.state.refused]).toEqual([])
  })

  it('a veer proxy given every replica stays in sync across kill -9 of the one it follows: no weight change', async () => {
    const [leader, a, b] = await replicas()
    const tokenFile = join(tempDir(), 'proxy-token')
    writeFileSync(tokenFile, `${TOKENS.proxy}\n`)
    const file = writeConfig({
      log: { access: false },
      shutdown: { grace: 0 },
      routes: [
        {
          name: 'shop',
          stable: { url: 'http://127.0.0.1:9', release: 'v1' },
          canary: { url: 'http://127.0.0.1:9', release: 'v2' },
        },
      ],
    })
    const proxy = await startVeer([
      '--config',
      file,
      '--control',
      [leader!, a!, b!].map((c) => c.url).join(','),
      '--token-file',
      tokenFile,
      '--state-dir',
      tempDir(),
    ])
    try {
      await until(async () => (await a!.api('GET', '/v1/routes/shop')).status === 200)
      const set = await a!.api('PUT', '/v1/routes/shop/weights', { body: { canary: 30 } })
      expect(set.status).toBe(200)
      const inSync = (c: ControlProcess) =>
        until(async () => {
          const p = (await c.api('GET', '/v1/proxies')).json.proxies?.find((x: { live: boolean }) => x.live)
          return p?.appliedRevision === set.json.revision ? p : null
        })
      await inSync(leader!)
      const applied = proxy.logs.filter((l) => l.msg === 'config applied').length
      leader!.child.kill('SIGKILL')
      await leader!.exited
      await proxy.waitForLog((l) => l.msg === 'moving to the next control replica')
      const there = await inSync(a!)
      expect(there.appliedRevision).toBe(set.json.revision)
      expect(proxy.logs.filter((l) => l.msg === 'config applied').length).toBe(applied)
      expect(proxy.logs.filter((l) => l.msg === 'control weights refused, keeping the current ones')).toEqual(
        [],
      )
      // The CLI too moves on past the dead replica; a write is not sent twice.
      const cli = await runCli([
        'set-weight',
        'shop',
        '35',
        '--control',
        `${leader!.url},${a!.url}`,
        '--token-file',
        a!.tokenFile,
      ])
      expect(cli.code, cli.stderr).toBe(0)
      expect((await a!.api('GET', '/v1/routes/shop')).json.weights.canary).toBe(35)
      // It follows the new replica: a change made on the third reaches it.
      const next = await b!.api('PUT', '/v1/routes/shop/weights', { body: { canary: 40 } })
      await until(async () =>
        (await a!.api('GET', '/v1/proxies')).json.proxies?.some(
          (x: { appliedRevision: number }) => x.appliedRevision === next.json.revision,
        ),
      )
    } finally {
      await proxy.stop('SIGKILL')
    }
  })

  it('SIGSTOP the leader past its lease, then SIGCONT: it has lost the lead and writes nothing', async () => {
    const [leader, a, b] = await replicas()
    const p1 = follow('edge-1', [a!, b!])
    await until(async () => (await a!.api('GET', '/v1/routes/shop')).status === 200)
    const plan = {
      steps: [
        { weight: 10, pause: '500ms' },
        { weight: 50, pause: '200ms' },
        { weight: 100, pause: '0s' },
      ],
      analysis: { enabled: false },
    }
    const old = (await leader!.api('GET', '/v1/control')).json.replica
    expect((await a!.api('POST', '/v1/routes/shop/rollout', { body: plan })).status).toBe(200)
    // Stopped with step 1's pause running: it falls due while the leader cannot renew its lease, so
    // at SIGCONT its clock holds a step to take that the new leader has long taken.
    await until(async () => (await leader!.api('GET', '/v1/routes/shop')).json.rollout?.applied === true)
    leader!.child.kill('SIGSTOP')
    const next = (await until(
      async () => {
        for (const c of [a!, b!]) {
          const v = (await c.api('GET', '/v1/control')).json
          if (v.role === 'leader' && v.replica !== old) return c
        }
        return null
      },
      20_000,
      10,
    ))!
    await until(
      async () => (await next.api('GET', '/v1/routes/shop')).json.rollout?.phase === 'completed',
      30_000,
    )
    leader!.child.kill('SIGCONT')
    await leader!.waitForLog((l) => l.msg === 'lost the lead: rollout clock stopped')
    expect((await leader!.api('GET', '/v1/control')).json.role).toBe('follower')
    // Its observer follows the election: it names the new leader.
    const newId = (await next.api('GET', '/v1/control')).json.replica
    await until(async () => (await leader!.api('GET', '/v1/control')).json.leader?.id === newId)
    // Its own view catches up with the new leader's changes (a positive marker after anything it did).
    await until(async () => (await leader!.api('GET', '/v1/routes/shop')).json.rollout?.phase === 'completed')
    const audit = (await next.api('GET', '/v1/audit?route=shop')).json.entries
    expect(actions(audit)).toEqual([
      'route-register',
      'rollout-start',
      'rollout-step',
      'rollout-step',
      'rollout-complete',
    ])
    expect(leader!.logs.filter((l) => l.msg === 'rollout tick failed')).toEqual([])
    expect((await leader!.api('GET', '/metrics', { token: TOKENS.read })).text).toMatch(
      /^veer_control_leader 0$/m,
    )
    expect((await next.api('GET', '/metrics', { token: TOKENS.read })).text).toMatch(
      /^veer_control_leader 1$/m,
    )
    await p1.stop()
  })

  it('every replica knows every proxy from etcd: who it talks to, what it applied, whether it is live', async () => {
    const [leader, a, b] = await replicas()
    const idOf = async (c: ControlProcess) => (await c.api('GET', '/v1/control')).json.replica as string
    const [aId, leaderId] = [await idOf(a!), await idOf(leader!)]
    const proxy = new FakeProxy(a!, 'edge-a', [announced('shop', 0)])
    const reg = await proxy.register()
    expect(await proxy.ack(reg.revision)).toBe(204)
    const seen = async (c: ControlProcess) =>
      (
        (await c.api('GET', '/v1/proxies')).json.proxies as {
          id: string
          replica: string | null
          appliedRevision: number
        }[]
      ).find((p) => p.id === 'edge-a')
    for (const c of [leader!, b!])
      expect(await until(() => seen(c))).toMatchObject({ replica: aId, live: true, routes: ['shop'] })
    expect(await seen(a!)).toMatchObject({ replica: null })
    // An ack taken by a follower reaches the leader's registry through etcd.
    const polling = proxy.watch(reg.revision)
    const set = await b!.api('PUT', '/v1/routes/shop/weights', { body: { canary: 7 } })
    expect((await polling)?.revision).toBe(set.json.revision)
    expect(await proxy.ack(set.json.revision)).toBe(204)
    await until(async () => (await seen(leader!))?.appliedRevision === set.json.revision)
    // A proxy that moves to another replica is that replica's from then on, everywhere.
    await new FakeProxy(b!, 'edge-a', [announced('shop', 7)]).register(set.json.revision)
    const bId = await idOf(b!)
    for (const c of [leader!, a!]) await until(async () => (await seen(c))?.replica === bId)
    // A report forwarded to the replica that forwarded it has looped: refused, nothing taken.
    const loop = await a!.api('POST', '/v1/proxies/edge-a/report', {
      token: TOKENS.proxy,
      headers: { 'x-veer-forwarded-by': aId },
      body: { revision: set.json.revision, intervalMs: 250, routes: {} },
    })
    expect([loop.status, loop.json.error]).toEqual([508, 'forward_loop'])
    expect(leaderId).not.toBe(aId)
    // A proxy ahead of every replica (etcd restored from an older snapshot, say): after a quorum read
    // the replica answers with what etcd has, as the state dir's control does.
    const ahead = await new FakeProxy(a!, 'edge-ahead', [announced('shop', 7)]).register(1_000_000)
    expect(ahead.revision).toBe((await a!.api('GET', '/v1/routes')).json.revision)
  })

  it('a write to a follower is applied and seen by proxies and /v1/events of another replica', async () => {
    const [leader, a, b] = await replicas()
    const proxy = new FakeProxy(b!, 'edge-1', [announced('shop', 0)])
    const reg = await proxy.register()
    await until(async () => (await a!.api('GET', '/v1/routes/shop')).status === 200)
    const events = await followEvents(leader!)
    const polling = proxy.watch(reg.revision)
    const set = await a!.api('PUT', '/v1/routes/shop/weights', { body: { canary: 42 } })
    expect(set.status).toBe(200)
    const woke = await polling
    expect(woke?.routes.shop?.canary).toBe(42)
    expect(woke?.revision).toBe(set.json.revision)
    const frame = await until(() =>
      events.frames.find((f) => f.event === 'change' && f.data.action === 'set-weight'),
    )
    expect(frame!.data.state.weights).toEqual({ stable: 58, canary: 42 })
    expect(frame!.id).toBe(String(set.json.revision))
    // The audit says which replica wrote it.
    expect(frame!.data.replica).toBe((await a!.api('GET', '/v1/control')).json.replica)
    await events.close()
  })

  it("the leader sees every follower's proxies: a step waits for their acks; a fuse reported to a follower rolls back", async () => {
    const [leader, a] = await replicas()
    const proxy = new FakeProxy(a!, 'edge-1', [announced('shop', 0)])
    const reg = await proxy.register()
    // The follower fed the registration to the leader: it knows the proxy it never talked to.
    await until(async () =>
      (await leader!.api('GET', '/v1/proxies')).json.proxies.some((p: { id: string }) => p.id === 'edge-1'),
    )
    await proxy.ack(reg.revision)
    const plan = { steps: [{ weight: 20, pause: '0s' }, { weight: 100 }], analysis: { enabled: false } }
    const started = await a!.api('POST', '/v1/routes/shop/rollout', { body: plan })
    expect(started.status).toBe(200)
    // Not acked: the leader holds the step (no rollout-step), and then takes it once the ack is fed.
    const w = await proxy.watch(reg.revision)
    expect(w?.routes.shop?.canary).toBe(20)
    const before = (await leader!.api('GET', '/v1/routes/shop')).json
    expect(before.rollout.applied).toBe(false)
    await proxy.ack(w!.revision)
    await until(async () => (await leader!.api('GET', '/v1/routes/shop')).json.rollout?.step === 1)
    // A fuse tripped at the follower's proxy: the leader rolls back.
    const route = (await a!.api('GET', '/v1/routes/shop')).json
    await until(async () => (await a!.api('GET', '/v1/routes/shop')).json.rollout?.step === 1)
    expect(
      await proxy.report(route.revision, {
        shop: { reason: '5 consecutive canary failures', version: route.version, at: Date.now() },
      }),
    ).toBe(204)
    const back = await until(async () => {
      const r = (await a!.api('GET', '/v1/routes/shop')).json
      return r.weights.canary === 0 ? r : null
    })
    expect(back.rollout.phase).toBe('aborted')
    const audit = (await a!.api('GET', '/v1/audit?route=shop')).json.entries
    expect(audit.at(-1)).toMatchObject({ who: 'fuse', rollback: 'fuse' })
  })

  it('racing If-Match writes to different replicas: exactly one wins; an unrelated write is re-decided, not 412', async () => {
    const [leader, a, b] = await replicas()
    await new FakeProxy(a!, 'edge-1', [announced('shop', 0), announced('cart', 0)]).register()
    const all = [leader!, a!, b!]
    for (let round = 1; round <= 5; round++) {
      const etag = (await a!.api('GET', '/v1/routes/shop')).headers.get('etag')!
      for (const c of all)
        await until(async () => (await c.api('GET', '/v1/routes/shop')).headers.get('etag') === etag)
      const replies = await Promise.all(
        all.map((c, i) =>
          c.api('PUT', '/v1/routes/shop/weights', {
            body: { canary: round * 3 + i },
            headers: { 'if-match': etag },
          }),
        ),
      )
      expect(replies.map((r) => r.status).sort()).toEqual([200, 412, 412])
    }
    // Writes to two routes on two replicas at once: the meta compare fails for one, which catches up
    // and is decided again; both are applied.
    for (let round = 1; round <= 5; round++) {
      const [x, y] = await Promise.all([
        a!.api('PUT', '/v1/routes/shop/weights', { body: { canary: round } }),
        b!.api('PUT', '/v1/routes/cart/weights', { body: { canary: round } }),
      ])
      expect([x!.status, y!.status]).toEqual([200, 200])
    }
    const sets = async (c: ControlProcess) =>
      (await c.api('GET', '/v1/audit?limit=1000')).json.entries.filter(
        (e: { action: string }) => e.action === 'set-weight',
      ).length
    // The leader's watch brings the last of them.
    await until(async () => (await sets(leader!)) >= 15)
    expect(await sets(leader!)).toBe(15)
  })
})

describe('the fence', () => {
  it('a write fenced with an election key that is gone (or another create revision) writes nothing', async () => {
    const prefix = `/f${++prefixes}/`
    const store = await EtcdStore.open(
      { endpoints: etcd.endpoints.split(','), prefix, tls: null },
      createLogger('silent'),
    )
    try {
      const key = `${prefix}election/control/1`
      await etcd.ctl('put', key, 'me')
      const created = Number(JSON.parse(await etcd.ctl('get', key, '-w', 'json')).kvs[0].create_revision)
      const next = { ...store.state, revision: 1 }
      const draft = {
        who: 'rollout',
        role: 'system',
        action: 'denied',
        route: null,
        from: null,
        to: null,
        why: null,
      }
      await expect(
        store.commit(next, [draft], Date.now(), { key, createRevision: created + 1 }),
      ).rejects.toThrow(NotLeaderError)
      await etcd.ctl('del', key)
      await expect(store.commit(next, [draft], Date.now(), { key, createRevision: created })).rejects.toThrow(
        NotLeaderError,
      )
      expect(await etcd.ctl('get', '--prefix', '--keys-only', `${prefix}audit/`)).toBe('')
      expect(await etcd.ctl('get', '--prefix', '--keys-only', `${prefix}meta`)).toBe('')
      // With the key there, the same write goes through.
      await etcd.ctl('put', key, 'me')
      const again = Number(JSON.parse(await etcd.ctl('get', key, '-w', 'json')).kvs[0].create_revision)
      expect(await store.commit(next, [draft], Date.now(), { key, createRevision: again })).toHaveLength(1)
    } finally {
      await store.close()
    }
  })
})
