/**
 * Release identity end to end (README "Releasing a new version"): a real `veer control`, real
 * `veer proxy --control` processes and three real upstreams, one per release. A weight belongs to a
 * (stable, canary) pair: when a proxy's config names a new pair, the new canary starts at the file's
 * `canaryWeight` — never at the old canary's weight, not for one request: not during the reload, not
 * from the proxy's cache after a restart while control is down, not when two proxies disagree.
 */
import { writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { request } from 'undici'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { type ControlProcess, runCli, startControl, TOKENS, tempDir, until } from '../helpers/control.ts'
import { startUpstream, type Upstream } from '../helpers/upstream.ts'
import { startVeer, type VeerProcess, writeConfig } from '../helpers/veer.ts'

const tokenFile = join(tempDir(), 'proxy-token')
let releases: Record<'v1' | 'v2' | 'v3' | 'v4', Upstream>
let control: ControlProcess | null = null
let proxies: VeerProcess[] = []

beforeAll(async () => {
  writeFileSync(tokenFile, `${TOKENS.proxy}\n`)
  const [v1, v2, v3, v4] = await Promise.all(['v1', 'v2', 'v3', 'v4'].map((n) => startUpstream(n)))
  releases = { v1: v1!, v2: v2!, v3: v3!, v4: v4! }
})

afterEach(async () => {
  await Promise.all(proxies.map((p) => p.stop('SIGKILL')))
  proxies = []
  await control?.stop('SIGKILL')
  control = null
})

afterAll(async () => {
  await Promise.all(Object.values(releases).map((u) => u.close()))
})

type Release = keyof typeof releases

/** A proxy config for route `api`: stable and canary by release name (its upstream is that release's). */
function config(stable: Release, canary: Release | null, canaryWeight?: number) {
  return {
    log: { access: false },
    routes: [
      {
        name: 'api',
        stable: { url: releases[stable].url, release: stable },
        ...(canary && { canary: { url: releases[canary].url, release: canary } }),
        ...(canaryWeight !== undefined && { canaryWeight }),
      },
    ],
  }
}

/** A proxy of `file` following control at `url`; unless `url` is given, once it has registered. */
async function linked(
  file: string,
  stateDir = tempDir('veer-proxy-state-'),
  url?: string,
): Promise<VeerProcess> {
  const to = url ?? control!.url
  const args = ['--config', file, '--control', to, '--token-file', tokenFile, '--state-dir', stateDir]
  const p = await startVeer(args)
  proxies.push(p)
  if (url === undefined) await p.waitForLog((l) => l.msg === 'control connected')
  return p
}

interface ProxyView {
  control: { id: string; connected: boolean; revision: number; otherReleases: string[] }
  routes: { name: string; weights: { stable: number; canary: number } }[]
}

const proxyView = async (p: VeerProcess): Promise<ProxyView> =>
  (await (await request(`${p.adminUrl}/v1/config`)).body.json()) as ProxyView

/** Which release answered each of `n` requests. */
async function served(p: VeerProcess, n: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  for (let i = 0; i < n; i++) {
    const res = await request(p.url)
    await res.body.dump()
    const name = String(res.headers['x-upstream'] ?? res.statusCode)
    out[name] = (out[name] ?? 0) + 1
  }
  return out
}

/** Requests one after another until `stop()`, bounded; resolves with which release answered each. */
function traffic(p: VeerProcess, max = 20_000): { stop: () => Promise<Record<string, number>> } {
  let running = true
  const out: Record<string, number> = {}
  const done = (async () => {
    for (let i = 0; running && i < max; i++) {
      const res = await request(p.url)
      await res.body.dump()
      const name = String(res.headers['x-upstream'] ?? res.statusCode)
      out[name] = (out[name] ?? 0) + 1
    }
  })()
  return {
    stop: async () => {
      running = false
      await done
      return out
    },
  }
}

const route = async () => (await control!.api('GET', '/v1/routes/api')).json

interface Entry {
  action: string
  who: string
  proxy?: string
  from: Record<string, unknown>
  to: Record<string, unknown>
  why: string
  revision: number
}

const audit = async (): Promise<Entry[]> =>
  (await control!.api('GET', '/v1/audit?route=api&limit=1000')).json.entries

/** Until the audit has an entry `test` holds for; that entry. */
const entry = async (test: (e: Entry) => boolean): Promise<Entry> =>
  (await until(async () => (await audit()).find(test)))!

/** Until the proxy serves control's `revision` (acked it). */
const synced = (p: VeerProcess, revision: number) =>
  until(async () => (await proxyView(p)).control.revision >= revision)

const side = (r: Release) => ({ url: releases[r].url, release: r })

const status = async () =>
  (await runCli(['status', 'api', '--control', control!.url], { VEER_TOKEN: TOKENS.read })).stdout

describe('a weight belongs to a release pair', () => {
  it('100% on v2, then the config names stable v2 / canary v3: v3 gets no request, the change is audited as a hand-off', async () => {
    control = await startControl()
    const file = writeConfig(config('v1', 'v2'))
    const p = await linked(file)
    const set = await control.api('PUT', '/v1/routes/api/weights', { body: { canary: 100 } })
    expect(set.status).toBe(200)
    await synced(p, set.json.revision)
    expect(await served(p, 10)).toEqual({ v2: 10 })
    expect(await status()).toMatch(/^api: next: v2 serves 100%: make v2 the stable/m)
    const before = await route()
    const v3Before = releases.v3.seen.length

    // The next release, with no canaryWeight in the file, while requests keep flowing.
    const load = traffic(p)
    writeConfig(config('v2', 'v3'), dirname(file))
    const change = await entry((e) => e.action === 'release-change')
    await synced(p, change.revision)
    const during = await load.stop()
    expect(during.v3 ?? 0).toBe(0)
    expect(releases.v3.seen.length).toBe(v3Before)
    expect(Object.keys(during).every((k) => k === 'v2')).toBe(true) // v2 was the canary, then the stable
    expect(await served(p, 20)).toEqual({ v2: 20 })

    const id = (await proxyView(p)).control.id
    expect(change).toMatchObject({
      who: 'edge',
      proxy: id,
      from: { stable: side('v1'), canary: side('v2'), weight: 100 },
      to: { stable: side('v2'), canary: side('v3'), weight: 0, handoff: true },
      why: expect.stringMatching(/v3/),
    })
    const after = await route()
    expect(after).toMatchObject({
      weights: { stable: 100, canary: 0 },
      stable: side('v2'),
      canary: side('v3'),
      last: { action: 'release-change', who: 'edge', proxy: id },
      next: null,
      proxies: { live: 1, stale: [] },
    })
    expect(after.version).toBe(before.version + 1)
    const text = await status()
    expect(text).toMatch(/^api\s+v2 100%\s+v3 0%\s/m)
    expect(text).toMatch(new RegExp(`^api: last: release-change by edge \\(proxy ${id}\\) at \\S+Z: `, 'm'))
  })

  it('a rollout of the old canary ends (aborted, reason release changed) and the new canary takes its file weight', async () => {
    control = await startControl()
    const file = writeConfig(config('v1', 'v2'))
    const p = await linked(file)
    const started = await control.api('POST', '/v1/routes/api/rollout', {
      body: { steps: [{ weight: 50, pause: '1h' }, { weight: 100 }] },
    })
    expect(started.status).toBe(200)
    await synced(p, started.json.revision)
    writeConfig(config('v1', 'v3', 5), dirname(file))
    await entry((e) => e.action === 'release-change')
    const entries = await audit()
    expect(entries.slice(-2).map((e) => e.action)).toEqual(['rollout-abort', 'release-change'])
    expect(entries.at(-2)!.why).toMatch(/^release changed \(/)
    expect(entries.at(-1)!.to).toMatchObject({ canary: side('v3'), weight: 5 })
    expect(entries.at(-1)!.to).not.toHaveProperty('handoff')
    await synced(p, entries.at(-1)!.revision)
    expect(await route()).toMatchObject({ weights: { canary: 5 }, rollout: { phase: 'aborted' } })
    expect((await proxyView(p)).routes[0]!.weights.canary).toBe(5)
  })

  it('restarted with the new config while control is down, the proxy serves its file, not its cached weight', async () => {
    const stateDir = tempDir()
    control = await startControl({ stateDir })
    const port = new URL(control.url).port
    const file = writeConfig(config('v1', 'v2'))
    const cache = tempDir('veer-proxy-state-')
    let p = await linked(file, cache)
    const set = await control.api('PUT', '/v1/routes/api/weights', { body: { canary: 100 } })
    await synced(p, set.json.revision)
    await p.stop()
    await control.stop('SIGKILL')
    control = null

    writeConfig(config('v2', 'v3'), dirname(file))
    const v3Before = releases.v3.seen.length
    p = await linked(file, cache, `http://127.0.0.1:${port}`)
    await p.waitForLog((l) => l.msg === 'control unreachable; serving on the last weights, retrying')
    expect((await proxyView(p)).routes[0]!.weights).toEqual({ stable: 100, canary: 0 })
    expect(await served(p, 20)).toEqual({ v2: 20 })

    // Control comes back on its port: it takes the new pair in as a release change, at the file's 0.
    control = await startControl({ stateDir, listen: `127.0.0.1:${port}` })
    const change = await entry((e) => e.action === 'release-change')
    expect(change.to).toMatchObject({ stable: side('v2'), canary: side('v3'), weight: 0, handoff: true })
    await synced(p, change.revision)
    expect(await served(p, 20)).toEqual({ v2: 20 })
    expect(releases.v3.seen.length).toBe(v3Before)
  })

  it('two proxies with different files: the newest change wins, the other is stale and serves its own file until it catches up', async () => {
    control = await startControl()
    const fileA = writeConfig(config('v1', 'v2'))
    const fileB = writeConfig(config('v1', 'v2'))
    const a = await linked(fileA)
    const b = await linked(fileB)
    const set = await control.api('PUT', '/v1/routes/api/weights', { body: { canary: 30 } })
    await Promise.all([synced(a, set.json.revision), synced(b, set.json.revision)])

    // B moves to the next release: control takes it; A still runs the old file.
    writeConfig(config('v2', 'v3'), dirname(fileB))
    const change = await entry((e) => e.action === 'release-change')
    const idA = (await proxyView(a)).control.id
    const idB = (await proxyView(b)).control.id
    expect(change.proxy).toBe(idB)
    await Promise.all([synced(a, change.revision), synced(b, change.revision)])
    // A's file weight is 0: the old pair's 30 is not applied to it either, and it says why.
    expect(await proxyView(a)).toMatchObject({
      control: { otherReleases: ['api'] },
      routes: [{ weights: { canary: 0 } }],
    })
    expect(await served(a, 10)).toEqual({ v1: 10 })
    expect(await served(b, 10)).toEqual({ v2: 10 })
    await until(async () => (await route()).proxies.stale.includes(idA))
    expect(await route()).toMatchObject({ proxies: { live: 1, stale: [idA] }, canary: side('v3') })
    expect(await status()).toMatch(
      new RegExp(`^api: 1 live proxy serves another release pair .*: ${idA}$`, 'm'),
    )

    // A restarted on its old file: a stale config, not a change. The route does not flip back.
    const version = (await route()).version
    await a.stop('SIGKILL')
    proxies = proxies.filter((x) => x !== a)
    const a2 = await linked(fileA)
    const idA2 = (await proxyView(a2)).control.id
    await until(async () => (await route()).proxies.stale.includes(idA2))
    expect(await route()).toMatchObject({ version, canary: side('v3') })
    expect((await audit()).filter((e) => e.action === 'release-change')).toHaveLength(1)

    // Its config catches up: it follows control again.
    writeConfig(config('v2', 'v3'), dirname(fileA))
    await until(async () => (await proxyView(a2)).control.otherReleases.length === 0)
    const more = await control.api('PUT', '/v1/routes/api/weights', { body: { canary: 100 } })
    await Promise.all([synced(a2, more.json.revision), synced(b, more.json.revision)])
    expect(await served(a2, 10)).toEqual({ v3: 10 })
    const now = await route()
    expect(now.proxies).toMatchObject({ live: 2, inSync: 2 })
    // (The killed first A may still count as live and stale until the live window passes it by.)
    expect(now.proxies.stale).not.toContain(idA2)

    // An operator's change on one proxy (a reload) wins over the pair control holds, even one it served
    // before: here A goes on to v4 while B stays on v3; B is now the stale one.
    writeConfig(config('v2', 'v4'), dirname(fileA))
    const next = await entry((e) => e.action === 'release-change' && e.proxy === idA2)
    expect(next.to).toMatchObject({ canary: side('v4'), weight: 0 })
    await until(async () => (await route()).proxies.stale.includes(idB))
    await synced(b, next.revision)
    // B's file still says v3 at its own weight (unset: 0), not control's 100 of the v3 pair it left.
    expect(await served(b, 10)).toEqual({ v2: 10 })
  })

  it('status tells what holds after a manual weight, an abort and a control restart: who, what, why', async () => {
    const stateDir = tempDir()
    control = await startControl({ stateDir })
    const p = await linked(writeConfig(config('v1', 'v2')))
    const set = await control.api('PUT', '/v1/routes/api/weights', { body: { canary: 30, reason: 'try it' } })
    expect(set.json).toMatchObject({
      last: { action: 'set-weight', who: 'alice', why: 'try it' },
      next: null,
    })
    expect(await status()).toMatch(/^api: last: set-weight by alice at \S+Z: try it$/m)
    const started = await control.api('POST', '/v1/routes/api/rollout', {
      body: { steps: [{ weight: 50, pause: '1h' }, { weight: 100 }] },
    })
    await synced(p, started.json.revision)
    const aborted = await control.api('POST', '/v1/routes/api/abort', { body: { reason: 'p99 up' } })
    expect(aborted.json).toMatchObject({
      weights: { canary: 0 },
      rollout: { phase: 'aborted' },
      last: { action: 'rollout-abort', who: 'alice', why: 'p99 up' },
    })
    const before = await status()
    expect(before).toMatch(/^api: last: rollout-abort by alice at \S+Z: p99 up$/m)
    expect(before).toMatch(/^api: next: v2 was rolled back: /m)

    // A restart: the same state, the same account of it.
    expect(await control.stop()).toBe(0)
    control = await startControl({ stateDir })
    const after = await route()
    expect(after).toMatchObject({
      weights: { canary: 0 },
      stable: side('v1'),
      canary: side('v2'),
      rollout: { phase: 'aborted', reason: 'p99 up' },
      last: { action: 'rollout-abort', who: 'alice', why: 'p99 up' },
    })
    const text = await status()
    expect(text).toMatch(/^api\s+v1 100%\s+v2 0%\s+aborted\s/m)
    expect(text.split('\n').filter((l) => l.startsWith('api: '))).toEqual(
      before.split('\n').filter((l) => l.startsWith('api: ')),
    )
  })
})
