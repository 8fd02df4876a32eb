/**
 * `veer proxy --control`: real proxy processes against a small real control (test/helpers/fake-control.ts).
 * The proxy registers its routes, follows weight changes within a second and acks them (NACKs what it
 * cannot apply; what the wire schema refuses is not read, nor acked), reports per-version outcomes
 * every second, serves on its last weights through a control outage and converges after it, comes up
 * on its last-known weights when restarted while control is down, keeps control's weights over a
 * reloaded file, and still drains cleanly on SIGTERM.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { request } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import { type FakeControl, startFakeControl } from '../helpers/fake-control.ts'
import { startUpstream, type Upstream } from '../helpers/upstream.ts'
import { runVeer, startVeer, type VeerProcess, writeConfig } from '../helpers/veer.ts'

const TOKEN = 'test-proxy-token'

let upstreams: Upstream[] = []
let proxies: VeerProcess[] = []
let control: FakeControl | undefined

afterEach(async () => {
  await Promise.all(proxies.map((p) => p.stop('SIGKILL')))
  proxies = []
  await control?.stop()
  control = undefined
  await Promise.all(upstreams.map((u) => u.close()))
  upstreams = []
})

/** Stable answers 200; canary answers 500 on /fail and after `?ms=N` delays. */
async function twoVersions(): Promise<{ stable: Upstream; canary: Upstream }> {
  const stable = await startUpstream('stable')
  const canary = await startUpstream('canary', (req, res) => {
    req.resume()
    const url = new URL(req.url ?? '/', 'http://x')
    const ms = Number(url.searchParams.get('ms') ?? 0)
    setTimeout(() => {
      res.writeHead(url.pathname === '/fail' ? 500 : 200, { 'x-upstream': 'canary' })
      res.end('canary')
    }, ms)
  })
  upstreams = [stable, canary]
  return { stable, canary }
}

function config(stable: Upstream, canary: Upstream | null, canaryWeight = 0, extra: object[] = []) {
  return {
    log: { access: false },
    routes: [
      {
        name: 'api',
        match: { pathPrefix: '/' },
        stable: { url: stable.url, release: 's-1' },
        ...(canary ? { canary: { url: canary.url, release: 'c-2' } } : {}),
        canaryWeight,
        allowOverride: true,
      },
      { name: 'web', match: { host: 'web.test' }, stable: { url: stable.url } },
      ...extra,
    ],
  }
}

async function linked(
  file: string,
  stateDir = mkdtempSync(join(tmpdir(), 'veer-state-')),
  env: NodeJS.ProcessEnv = { VEER_TOKEN: TOKEN },
  extra: string[] = [],
): Promise<VeerProcess> {
  const v = await startVeer(
    ['--config', file, '--control', control!.url, '--state-dir', stateDir, ...extra],
    env,
  )
  proxies.push(v)
  return v
}

interface ConfigView {
  version: number
  control?: { url: string; id: string; connected: boolean; revision: number; lastError: string | null }
  routes: { name: string; weights: { stable: number; canary: number } }[]
}

async function view(v: VeerProcess): Promise<ConfigView> {
  const res = await request(`${v.adminUrl}/v1/config`)
  return (await res.body.json()) as ConfigView
}

const canaryWeight = async (v: VeerProcess, route = 'api') =>
  (await view(v)).routes.find((r) => r.name === route)!.weights.canary

/** Versions that served `n` requests. */
async function served(v: VeerProcess, n: number, path = '/', headers: Record<string, string> = {}) {
  const out = { stable: 0, canary: 0, failed: 0 }
  for (let i = 0; i < n; i++) {
    const res = await request(`${v.url}${path}`, { headers })
    await res.body.dump()
    const version = String(res.headers['x-veer-version'])
    if (version === 'stable' || version === 'canary') out[version]++
    else out.failed++
  }
  return out
}

async function until(test: () => boolean | Promise<boolean>, ms = 5_000): Promise<void> {
  const deadline = performance.now() + ms
  while (!(await test())) {
    if (performance.now() > deadline) throw new Error(`condition not met within ${ms} ms`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** The ack of `revision` (or of a later one: control may have moved on, e.g. adopting a route). */
const applied = (revision: number, ms?: number) =>
  control!.waitFor('ack', (a) => a.body.revision >= revision && a.body.error === null, ms)

const percentile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!

describe('veer proxy --control', () => {
  it('registers its routes and releases, acks, and re-registers when control forgets it', async () => {
    control = await startFakeControl(TOKEN)
    const { stable, canary } = await twoVersions()
    const v = await linked(writeConfig(config(stable, canary, 10)))
    const reg = await control.waitFor('register', () => true)
    expect(reg.body.id).toMatch(new RegExp(`-${v.child.pid}-\\d+$`))
    expect(reg.body).toEqual({
      id: reg.id,
      appliedRevision: 0,
      routes: [
        {
          name: 'api',
          stable: { url: stable.url, release: 's-1' },
          canary: { url: canary.url, release: 'c-2' },
          shadow: null,
          canaryWeight: 10,
        },
        {
          name: 'web',
          stable: { url: stable.url, release: 'unknown' },
          canary: null,
          shadow: null,
          canaryWeight: 0,
        },
      ],
    })
    // Control adopted the routes it did not know (a new revision), and the proxy acked that one.
    await control.waitFor('ack', (a) => a.body.revision === control!.revision && a.body.error === null)
    expect(await view(v)).toMatchObject({
      control: { url: control.url, id: reg.id, connected: true, revision: control.revision, lastError: null },
    })
    expect(await canaryWeight(v)).toBe(10)

    // Control restarted without dropping the connection (its proxy table is gone): the next call is a
    // 404 (a report within a second), and the proxy registers again and follows on.
    control.forget()
    await control.waitFor('register', (r) => r !== reg, 3_000)
    const rev = control.setWeights({ api: 35 })
    await control.waitFor('ack', (a) => a.body.revision === rev && a.body.error === null)
    expect(await canaryWeight(v)).toBe(35)
  })

  it('follows weight changes within a second (50 changes) and NACKs what it cannot apply', async () => {
    control = await startFakeControl(TOKEN)
    const { stable, canary } = await twoVersions()
    const v = await linked(writeConfig(config(stable, canary)))
    await control.waitFor('ack', (a) => a.body.revision === control!.revision)
    const delays: number[] = []
    for (let i = 0; i < 50; i++) {
      const weight = (i * 37) % 101
      const t0 = performance.now()
      const rev = control.setWeights({ api: weight })
      const ack = await control.waitFor('ack', (a) => a.body.revision === rev)
      delays.push(ack.at - t0)
      expect(ack.body.error).toBeNull()
    }
    delays.sort((a, b) => a - b)
    const median = percentile(delays, 0.5)
    const max = delays.at(-1)!
    console.log(
      `control-link follow delay (set → applied and acked) over ${delays.length} changes: median ${median.toFixed(1)} ms, p90 ${percentile(delays, 0.9).toFixed(1)} ms, max ${max.toFixed(1)} ms`,
    )
    expect(max).toBeLessThan(1000)
    expect(await canaryWeight(v)).toBe((49 * 37) % 101)

    // Traffic follows: all canary at 100, all stable at 0.
    let rev = control.setWeights({ api: 100 })
    await control.waitFor('ack', (a) => a.body.revision === rev)
    expect(await served(v, 20)).toEqual({ stable: 0, canary: 20, failed: 0 })
    rev = control.setWeights({ api: 0 })
    await control.waitFor('ack', (a) => a.body.revision === rev)
    expect(await served(v, 20)).toEqual({ stable: 20, canary: 0, failed: 0 })

    // A weight for a route with no canary here: refused whole (api's 60 is not applied either), NACKed
    // once with the reason, and the proxy goes on following.
    const bad = control.setWeights({ api: 60, web: 20 })
    const nack = await control.waitFor('ack', (a) => a.body.revision === bad)
    expect(nack.body.error).toMatch(/routes\[1\]\.canary.*"web".*canary weight 20/)
    expect(await canaryWeight(v)).toBe(0)
    expect((await view(v)).control).toMatchObject({ connected: true, revision: rev })
    expect((await view(v)).control!.lastError).toMatch(/refused/)
    const good = control.setWeights({ api: 45, web: 0 })
    expect((await control.waitFor('ack', (a) => a.body.revision === good)).body.error).toBeNull()
    expect(await canaryWeight(v)).toBe(45)
    expect(control.acks.filter((a) => a.body.revision === bad)).toHaveLength(1)
  })

  it('refuses unread, and does not ack, a revision the wire schema refuses; reads and NACKs a weight of 150', async () => {
    control = await startFakeControl(TOKEN)
    const { stable, canary } = await twoVersions()
    const v = await linked(writeConfig(config(stable, canary)))
    const { revision } = (await applied(control.setWeights({ api: 30 }))).body
    // A route map with a key __proto__ (JSON.parse makes it an own key): refused by the shared schema,
    // as the proxy refuses any revision it cannot read: not applied, not acked, logged, retried.
    const api = JSON.stringify({ ...control.routes.api!, canary: 80 })
    const bad = control.answerRaw(`{"api":${api},"__proto__":${api}}`)
    const warned = await v.waitForLog((l) => String(l.error).includes('__proto__'))
    expect(warned).toMatchObject({
      msg: 'control unreachable; serving on the last weights, retrying',
      error:
        'control sent a revision this proxy cannot read: routes.__proto__ is the prototype key, never a route name; remove it',
    })
    expect(await canaryWeight(v)).toBe(30)
    expect((await view(v)).control).toMatchObject({ connected: false, revision })
    // A weight out of range is read, then refused whole and NACKed with the reason.
    const high = control.setWeights({ api: 150 })
    const nack = await control.waitFor('ack', (a) => a.body.revision === high)
    expect(nack.body.error).toMatch(
      /control sent 150 for route "api"; a weight is a whole number from 0 to 100/,
    )
    expect(await canaryWeight(v)).toBe(30)
    expect(control.acks.filter((a) => a.body.revision === bad)).toEqual([])
    const good = control.setWeights({ api: 40 })
    expect((await control.waitFor('ack', (a) => a.body.revision === good)).body.error).toBeNull()
    expect(await canaryWeight(v)).toBe(40)
  })

  it('reports every 250 ms slot with the outcome counts of the traffic it served', async () => {
    control = await startFakeControl(TOKEN, 1_000) // short watches: the 204 path is taken too
    const { stable, canary } = await twoVersions()
    const v = await linked(writeConfig(config(stable, canary)))
    await control.waitFor('ack', (a) => a.body.revision === control!.revision)
    const id = (await view(v)).control!.id
    expect(await served(v, 20)).toEqual({ stable: 20, canary: 0, failed: 0 })
    expect(await served(v, 6, '/ok?ms=30', { 'x-veer-version': 'canary' })).toMatchObject({ canary: 6 })
    expect(await served(v, 4, '/fail', { 'x-veer-version': 'canary' })).toMatchObject({ canary: 4 })
    const sent = performance.now()
    // Every request has ended by now; the reports that cover this slot arrive within ~1 s.
    await until(() => control!.reports.filter((r) => r.at > sent).length >= 3, 5_000)
    const mine = control.reports.filter((r) => r.id === id)
    const total = (version: 'stable' | 'canary') => {
      const sum = { requests: 0, errors: 0, latency: 0 }
      for (const r of mine) {
        const counts = r.body.routes.api![version]!
        sum.requests += counts.requests
        sum.errors += counts.errors
        sum.latency += counts.latency.reduce((a, b) => a + b, 0)
      }
      return sum
    }
    expect(total('stable')).toEqual({ requests: 20, errors: 0, latency: 20 })
    expect(total('canary')).toEqual({ requests: 10, errors: 4, latency: 10 })
    expect(
      mine.every((r) => r.body.routes.web!.canary === null && r.body.revision === control!.revision),
    ).toBe(true)
    // Reports keep coming, each covering whole slots (a late one also covers the slots it missed,
    // so none is lost). How punctual they are is a benchmark's business, not a test's: a loaded machine
    // delays timers.
    expect(mine.length).toBeGreaterThanOrEqual(3)
    for (const r of mine) {
      expect(r.body.intervalMs % 250).toBe(0)
      expect(r.body.intervalMs).toBeGreaterThanOrEqual(250)
    }
    // The canary requests that took 30 ms are in a bucket of 30 ms: ±9% buckets.
    const buckets = mine.flatMap((r) => r.body.routes.api!.canary!.latency.map((n, b) => ({ n, b })))
    expect(buckets.some(({ n, b }) => n > 0 && 0.05 * 2 ** (b / 4) >= 30 && 0.05 * 2 ** (b / 4) < 60)).toBe(
      true,
    )
    // The 1 s watches end with 204 and are asked again.
    await until(() => control!.watches >= 2, 5_000)
  })

  it('serves on its last weights while control is down or failing, and converges after it returns', async () => {
    control = await startFakeControl(TOKEN)
    const { stable, canary } = await twoVersions()
    const v = await linked(writeConfig(config(stable, canary)))
    let rev = control.setWeights({ api: 100 })
    await applied(rev)

    await control.stop()
    await until(async () => (await view(v)).control!.connected === false)
    expect((await view(v)).control!.lastError).toMatch(/ECONNREFUSED|ECONNRESET|closed|socket/i)
    expect(await served(v, 20)).toEqual({ stable: 0, canary: 20, failed: 0 })
    await v.waitForLog((l) => l.msg === 'control unreachable; serving on the last weights, retrying')
    rev = control.setWeights({ api: 0 }) // while no proxy can see it

    // Back, but answering 503 for a while: still serving on the old weights.
    control.failWith = 503
    await control.start()
    // The proxy has asked since and got a 503: an answer it could have taken new weights from was refused.
    await until(async () => /503/.test((await view(v)).control!.lastError ?? ''))
    expect(await served(v, 10)).toEqual({ stable: 0, canary: 10, failed: 0 })
    expect((await view(v)).control).toMatchObject({
      connected: false,
      lastError: expect.stringMatching(/503/),
    })
    const healthy = performance.now()
    control.failWith = null
    const ack = await control.waitFor('ack', (a) => a.body.revision === rev, 6_000)
    console.log(`control-link reconverged ${(ack.at - healthy).toFixed(0)} ms after control answered again`)
    expect(ack.at - healthy).toBeLessThan(5_500) // the backoff's cap, plus a little
    expect(await served(v, 20)).toEqual({ stable: 20, canary: 0, failed: 0 })
    expect((await view(v)).control).toMatchObject({ connected: true, revision: rev })
    // The warning came once for the outage, not once per retry.
    expect(
      v.logs.filter((l) => l.msg === 'control unreachable; serving on the last weights, retrying'),
    ).toHaveLength(1)
  })

  it('comes up on its last-known weights when restarted while control is down', async () => {
    control = await startFakeControl(TOKEN)
    const { stable, canary } = await twoVersions()
    const file = writeConfig(config(stable, canary, 5))
    const stateDir = join(mkdtempSync(join(tmpdir(), 'veer-state-')), 'nested')
    const tokenFile = join(mkdtempSync(join(tmpdir(), 'veer-token-')), 'token')
    writeFileSync(tokenFile, `${TOKEN}\n`)
    const first = await linked(file, stateDir, {}, ['--token-file', tokenFile])
    const rev = (await applied(control.setWeights({ api: 70 }))).body.revision
    const cacheFile = join(stateDir, 'control-cache.json')
    await until(() => {
      try {
        return JSON.parse(readFileSync(cacheFile, 'utf8')).revision === rev
      } catch {
        return false
      }
    })
    expect(JSON.parse(readFileSync(cacheFile, 'utf8'))).toMatchObject({
      revision: rev,
      routes: { api: { canary: 70 }, web: { canary: 0 } },
    })
    expect(await first.stop()).toBe(0)
    await control.stop()

    const second = await linked(file, stateDir, {}, ['--token-file', tokenFile])
    // From its first answer, before control was ever reached.
    expect(await view(second)).toMatchObject({
      control: { connected: false, revision: rev },
      routes: [{ name: 'api', weights: { stable: 30, canary: 70 } }, { name: 'web' }],
    })
    const split = await served(second, 100)
    expect(split.failed).toBe(0)
    expect(Math.abs(split.canary - 70)).toBeLessThanOrEqual(2)

    await control.start()
    const reg = await control.waitFor('register', (r) => r.id !== undefined && r.body.appliedRevision === rev)
    expect(reg.id).toBe((await view(second)).control!.id)
    await control.waitFor('ack', (a) => a.id === reg.id && a.body.revision === rev && a.body.error === null)
  })

  it('keeps control weights over a reloaded file of the same releases, and serves a new release pair as its file says', async () => {
    control = await startFakeControl(TOKEN)
    const { stable, canary } = await twoVersions()
    const file = writeConfig(config(stable, canary))
    const v = await linked(file)
    const rev = (await applied(control.setWeights({ api: 40 }))).body.revision

    const extra = { name: 'extra', match: { pathPrefix: '/extra' }, stable: { url: stable.url } }
    writeConfig(config(stable, canary, 5, [extra]), join(file, '..'))
    await v.waitForLog((l) => l.msg === 'config applied' && l.trigger === 'file change')
    expect(await canaryWeight(v)).toBe(40)
    const reg = await control.waitFor('register', (r) => r.body.routes.some((x) => x.name === 'extra'))
    const api = reg.body.routes.find((r) => r.name === 'api')!
    expect(api.canaryWeight).toBe(5)
    expect(api.changedFrom).toBeUndefined() // same stable and canary: not a release change
    expect(reg.body.appliedRevision).toBe(rev)

    // Without its canary, api serves another pair: control's 40 is not for it. The file's settings
    // serve from the reload on (all stable), and control is told what it changed from.
    writeConfig(config(stable, null, 0, [extra]), join(file, '..'))
    const changed = await control.waitFor('register', (r) =>
      r.body.routes.some((x) => x.name === 'api' && x.canary === null),
    )
    expect(changed.body.routes.find((r) => r.name === 'api')!.changedFrom).toEqual({
      stable: { url: stable.url, release: 's-1' },
      canary: { url: canary.url, release: 'c-2' },
    })
    await control.waitFor('ack', (a) => a.body.revision === control!.revision && a.body.error === null)
    expect(await canaryWeight(v)).toBe(0)
    expect(await served(v, 10)).toEqual({ stable: 10, canary: 0, failed: 0 })
  })

  it('still drains cleanly on SIGTERM with the link running', async () => {
    control = await startFakeControl(TOKEN)
    const { stable, canary } = await twoVersions()
    const v = await linked(writeConfig(config(stable, canary)))
    await control.waitFor('ack', (a) => a.body.revision === control!.revision)
    await control.waitFor('report', () => true, 3_000)
    const slow = request(`${v.url}/slow?ms=500`, { headers: { 'x-veer-version': 'canary' } })
    // In flight: the canary has it (and answers in 500 ms) when the signal comes.
    await until(() => canary.seen.some((req) => req.url?.startsWith('/slow')))
    const t0 = performance.now()
    v.child.kill('SIGTERM')
    const res = await slow
    expect(res.statusCode).toBe(200)
    expect(await res.body.text()).toBe('canary')
    expect(await v.exited).toBe(0)
    // The grace (1 s) and no more: the held watch does not keep the proxy up.
    expect(performance.now() - t0).toBeLessThan(2_500)
    expect(v.logs.some((l) => l.msg === 'veer proxy stopped')).toBe(true)
  })
})

describe('veer proxy --control flags', () => {
  const STABLE = 'http://127.0.0.1:9'
  const dir = mkdtempSync(join(tmpdir(), 'veer-flags-'))
  const empty = join(dir, 'empty')
  writeFileSync(empty, '\n')
  it.each([
    [
      ['--control', 'http://127.0.0.1:9900'],
      {},
      /^veer proxy: --control needs a token: pass --token-file FILE or set VEER_TOKEN$/,
    ],
    [
      ['--control', 'http://127.0.0.1:9900', '--token-file', join(dir, 'nope')],
      {},
      /--token-file: cannot read .*nope \(no such file\)/,
    ],
    [['--control', 'http://127.0.0.1:9900', '--token-file', empty], {}, /--token-file: .*empty is empty/],
    [['--token-file', empty], {}, /--token-file needs --control URL/],
    [
      ['--control', 'ftp://x'],
      { VEER_TOKEN: 't' },
      /--control must be the http:\/\/ or https:\/\/ URL .*"ftp:\/\/x"/,
    ],
    [
      ['--control', 'http://127.0.0.1:9900', '--state-dir', join(empty, 'sub')],
      { VEER_TOKEN: 't' },
      /--state-dir: cannot create .*empty\/sub \((ENOTDIR|EEXIST)\); point --state-dir at a writable directory/,
    ],
  ])('%j exits 2 with one line', async (flags, env, line) => {
    const result = await runVeer(['proxy', '--stable', STABLE, ...flags], 10_000, { VEER_TOKEN: '', ...env })
    expect(result.code).toBe(2)
    expect(result.stderr.trim().split('\n')).toHaveLength(1)
    expect(result.stderr.trim()).toMatch(line)
    expect(result.stdout).toBe('')
  })
})
