/**
 * Hot reload under load: a rewritten config file (or SIGHUP) swaps the route table with no request
 * failing, /v1/config and the split follow the new weight, an invalid rewrite is rejected and the old
 * config keeps serving; sticky users on canary stay on canary as the weight grows.
 */
import { mkdtempSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { Pool, request } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import { startUpstream, type Upstream } from '../helpers/upstream.ts'
import { startVeer, type VeerProcess, writeConfig } from '../helpers/veer.ts'

let upstreams: Upstream[] = []
let veer: VeerProcess | undefined
let load: Load | undefined

afterEach(async () => {
  await load?.stop()
  load = undefined
  await veer?.stop()
  veer = undefined
  await Promise.all(upstreams.map((u) => u.close()))
  upstreams = []
})

async function twoVersions(): Promise<{ stable: Upstream; canary: Upstream }> {
  const stable = await startUpstream('stable')
  const canary = await startUpstream('canary')
  upstreams = [stable, canary]
  return { stable, canary }
}

function routeConfig(
  stable: Upstream,
  canary: Upstream,
  canaryWeight: unknown,
  extra: Record<string, unknown> = {},
) {
  return {
    log: { access: false },
    routes: [
      { name: 'api', stable: { url: stable.url }, canary: { url: canary.url }, canaryWeight, ...extra },
    ],
  }
}

async function effective(
  v: VeerProcess,
): Promise<{ version: number; weights: { stable: number; canary: number } }> {
  const res = await request(`${v.adminUrl}/v1/config`)
  const body = (await res.body.json()) as {
    version: number
    routes: { weights: { stable: number; canary: number } }[]
  }
  return { version: body.version, weights: body.routes[0]!.weights }
}

/** Keep-alive load: `workers` loops through one pool; every answer is tagged with the epoch it was sent in. */
class Load {
  readonly #pool: Pool
  readonly #workers: Promise<void>[]
  #stopped = false
  epoch = 0
  readonly served: { epoch: number; version: string }[] = []
  readonly failures: string[] = []

  constructor(url: string, workers: number) {
    this.#pool = new Pool(url, { connections: workers })
    this.#workers = Array.from({ length: workers }, () => this.#loop())
  }

  async #loop(): Promise<void> {
    for (let n = 0; n < 1_000_000 && !this.#stopped; n++) {
      const epoch = this.epoch
      try {
        const res = await this.#pool.request({ path: '/work', method: 'GET' })
        await res.body.dump()
        if (res.statusCode !== 200) this.failures.push(`status ${res.statusCode}`)
        else this.served.push({ epoch, version: String(res.headers['x-veer-version']) })
      } catch (err) {
        this.failures.push(String(err))
      }
    }
  }

  /** Resolves once `n` answers were sent in the current epoch (or later). */
  async waitFor(n: number): Promise<void> {
    const from = this.epoch
    for (let i = 0; i < 2000; i++) {
      if (this.served.filter((s) => s.epoch >= from).length >= n) return
      await new Promise((r) => setTimeout(r, 10))
    }
    throw new Error(`load: fewer than ${n} answers in epoch ${from}`)
  }

  canaryPercent(epoch: number): number {
    const inEpoch = this.served.filter((s) => s.epoch === epoch)
    return (inEpoch.filter((s) => s.version === 'canary').length / inEpoch.length) * 100
  }

  async stop(): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    await Promise.all(this.#workers)
    await this.#pool.close()
  }
}

const applied = (version: number) => (l: Record<string, unknown>) =>
  l.msg === 'config applied' && l.configVersion === version

describe('hot reload under load', () => {
  it('follows a rewritten file, rejects an invalid one and keeps serving, with zero failed requests', async () => {
    const { stable, canary } = await twoVersions()
    const file = writeConfig(routeConfig(stable, canary, 10))
    veer = await startVeer(['--config', file])
    const v = veer
    load = new Load(v.url, 10)
    await load.waitFor(2000)
    expect(Math.abs(load.canaryPercent(0) - 10)).toBeLessThanOrEqual(2)

    // A new weight in the file: applied as config version 2.
    writeConfig(routeConfig(stable, canary, 50), dirname(file))
    const line = await v.waitForLog(applied(2))
    expect(line.trigger).toBe('file change')
    load.epoch = 1
    expect(await effective(v)).toEqual({ version: 2, weights: { stable: 50, canary: 50 } })
    await load.waitFor(3000)
    expect(Math.abs(load.canaryPercent(1) - 50)).toBeLessThanOrEqual(2)

    // An invalid rewrite: rejected with the field's path, and version 2 keeps serving at 50%.
    writeConfig(routeConfig(stable, canary, 150), dirname(file))
    const rejected = await v.waitForLog((l) => l.msg === 'config rejected, keeping the current one')
    expect(rejected).toMatchObject({ field: 'routes[0].canaryWeight', trigger: 'file change', level: 50 })
    expect(String(rejected.reason)).toMatch(/0 to 100/)
    load.epoch = 2
    expect(await effective(v)).toEqual({ version: 2, weights: { stable: 50, canary: 50 } })
    await load.waitFor(3000)
    expect(Math.abs(load.canaryPercent(2) - 50)).toBeLessThanOrEqual(2)
    expect(v.logs.filter((l) => l.msg === 'config applied')).toHaveLength(1)

    await load.stop()
    expect(load.failures).toEqual([])
    expect(stable.seen.length + canary.seen.length).toBe(load.served.length)
  })

  it('applies a rewrite on SIGHUP (the file behind a symlink, which the watch does not see), new pools included, with zero failed requests', async () => {
    const { stable, canary } = await twoVersions()
    const target = writeConfig(routeConfig(stable, canary, 10))
    const link = join(mkdtempSync(join(tmpdir(), 'veer-link-')), 'veer.yaml')
    symlinkSync(target, link)
    veer = await startVeer(['--config', link])
    const v = veer
    load = new Load(v.url, 10)
    await load.waitFor(1000)

    // Pool settings change too: the swap brings new upstream pools and closes the old ones under load.
    writeConfig(
      routeConfig(stable, canary, 30, { connections: 64, timeouts: { idle: '3s' } }),
      dirname(target),
    )
    v.child.kill('SIGHUP')
    const line = await v.waitForLog(applied(2))
    expect(line.trigger).toBe('SIGHUP')
    load.epoch = 1
    expect(await effective(v)).toEqual({ version: 2, weights: { stable: 70, canary: 30 } })
    await load.waitFor(3000)
    expect(Math.abs(load.canaryPercent(1) - 30)).toBeLessThanOrEqual(2)

    // SIGHUP with an invalid file: rejected, version 2 keeps serving.
    writeConfig(
      routeConfig(stable, canary, 'lots', { connections: 64, timeouts: { idle: '3s' } }),
      dirname(target),
    )
    v.child.kill('SIGHUP')
    const rejected = await v.waitForLog((l) => l.msg === 'config rejected, keeping the current one')
    expect(rejected).toMatchObject({ field: 'routes[0].canaryWeight', trigger: 'SIGHUP' })
    load.epoch = 2
    await load.waitFor(1000)
    expect(await effective(v)).toEqual({ version: 2, weights: { stable: 70, canary: 30 } })
    expect(Math.abs(load.canaryPercent(2) - 30)).toBeLessThanOrEqual(3)

    await load.stop()
    expect(load.failures).toEqual([])
  })
})

describe('sticky assignment across a reload', () => {
  it('keeps every canary user on canary from 5% to 25%, one version per user', async () => {
    const { stable, canary } = await twoVersions()
    const sticky = { sticky: { header: 'x-user-id' } }
    const file = writeConfig(routeConfig(stable, canary, 5, sticky))
    veer = await startVeer(['--config', file])
    const v = veer
    const pool = new Pool(v.url, { connections: 20 })
    const users = Array.from({ length: 1000 }, (_, i) => `user-${i}`)
    /** Each user's version, asking twice and checking both answers agree. */
    const assign = async (): Promise<Map<string, string>> => {
      const out = new Map<string, string>()
      for (let i = 0; i < users.length; i += 50) {
        await Promise.all(
          users.slice(i, i + 50).map(async (user) => {
            const seen: string[] = []
            for (let k = 0; k < 2; k++) {
              const res = await pool.request({ path: '/', method: 'GET', headers: { 'x-user-id': user } })
              await res.body.dump()
              expect(res.statusCode).toBe(200)
              seen.push(String(res.headers['x-veer-version']))
            }
            expect(seen[1], `user ${user} changed version between two requests`).toBe(seen[0])
            out.set(user, seen[0]!)
          }),
        )
      }
      return out
    }
    const share = (m: Map<string, string>) =>
      ([...m.values()].filter((x) => x === 'canary').length / m.size) * 100

    const at5 = await assign()
    expect(Math.abs(share(at5) - 5)).toBeLessThanOrEqual(3)
    const onCanary = users.filter((u) => at5.get(u) === 'canary')
    expect(onCanary.length).toBeGreaterThan(0)

    writeConfig(routeConfig(stable, canary, 25, sticky), dirname(file))
    await v.waitForLog(applied(2))
    expect((await effective(v)).weights.canary).toBe(25)

    const at25 = await assign()
    expect(onCanary.filter((u) => at25.get(u) !== 'canary')).toEqual([])
    expect(Math.abs(share(at25) - 25)).toBeLessThanOrEqual(3)
    await pool.close()
  })
})
