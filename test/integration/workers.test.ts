/**
 * `--workers N`: worker processes share the traffic listener; the primary's admin listener sums their
 * metrics and stats, a config change reaches every worker, a dead worker is replaced, SIGTERM drains
 * them all.
 */
import { writeFileSync } from 'node:fs'
import { type AddressInfo, createServer } from 'node:net'
import { Pool, request } from 'undici'
import { describe, expect, it } from 'vitest'
import { stringify } from 'yaml'
import { testBed, waitUntil } from '../helpers/bed.ts'
import { runVeer, startVeer, type VeerProcess, writeConfig } from '../helpers/veer.ts'

const bed = testBed(async () => {
  await Promise.all(proxies.map((p) => p.stop()))
  proxies = []
})
let proxies: VeerProcess[] = []

async function startCluster(config: Record<string, unknown>): Promise<{ veer: VeerProcess; file: string }> {
  const file = writeConfig(config)
  const veer = await startVeer(['--config', file, '--workers', '2'])
  proxies.push(veer)
  return { veer, file }
}

/** Send `n` GETs over 20 connections; returns the x-veer-version of each answer. */
async function load(url: string, n: number): Promise<string[]> {
  const pool = new Pool(url, { connections: 20 })
  const out: string[] = []
  try {
    for (let i = 0; i < n; i += 40) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(40, n - i) }, async () => {
          const res = await pool.request({ path: '/', method: 'GET' })
          await res.body.dump()
          expect(res.statusCode).toBe(200)
          return String(res.headers['x-veer-version'])
        }),
      )
      out.push(...batch)
    }
  } finally {
    await pool.close()
  }
  return out
}

const metric = (text: string, line: string) =>
  Number(
    text
      .split('\n')
      .find((l) => l.startsWith(`${line} `))
      ?.split(' ')
      .pop() ?? 0,
  )

describe('--workers', () => {
  it('shares the listener between workers and sums their metrics and stats on one admin port', async () => {
    const stable = await bed.upstream('stable')
    const canary = await bed.upstream('canary')
    const { veer } = await startCluster({
      shutdown: { grace: 0 },
      routes: [
        { name: 'default', stable: { url: stable.url }, canary: { url: canary.url }, canaryWeight: 20 },
      ],
    })
    const workers = veer.logs.filter((l) => l.msg === 'veer worker started').map((l) => l.pid)
    expect(new Set(workers).size).toBe(2)
    const versions = await load(veer.url, 1000)
    const canaryCount = versions.filter((v) => v === 'canary').length
    // Each worker runs its own weighted sequence: the split holds per worker, so within a point overall.
    expect(Math.abs(canaryCount / 10 - 20)).toBeLessThanOrEqual(1)

    const text = await (await request(`${veer.adminUrl}/metrics`)).body.text()
    expect(metric(text, 'veer_requests_total{route="default",version="stable",code="200"}')).toBe(
      1000 - canaryCount,
    )
    expect(metric(text, 'veer_requests_total{route="default",version="canary",code="200"}')).toBe(canaryCount)
    expect(metric(text, 'veer_request_duration_seconds_count{route="default",version="canary"}')).toBe(
      canaryCount,
    )
    // Gauges every worker holds alike are reported once, not summed.
    expect(metric(text, 'veer_route_weight{route="default",version="canary"}')).toBe(20)

    const stats = (await (await request(`${veer.adminUrl}/v1/stats`)).body.json()) as {
      routes: { stable: { window: { requests: number } }; canary: { window: { requests: number } } }[]
    }
    expect(stats.routes[0]!.stable.window.requests + stats.routes[0]!.canary.window.requests).toBe(1000)
    const config = (await (await request(`${veer.adminUrl}/v1/config`)).body.json()) as { workers: number }
    expect(config.workers).toBe(2)

    // Both workers served: each wrote access lines.
    await waitUntil(
      () => new Set(veer.logs.filter((l) => l.msg === 'access').map((l) => l.pid)).size === 2,
      'access lines of both workers',
    )
  })

  it('writes every access line of both workers whole through their shared stdout pipe', async () => {
    const stable = await bed.upstream('stable')
    const { veer } = await startCluster({ routes: [{ name: 'default', stable: { url: stable.url } }] })
    // Lines of ~3 KiB, so each 4 KiB (PIPE_BUF) write holds one: no line may be lost, or torn by a
    // chunk boundary or the other worker's writes. (Whether a write over PIPE_BUF would interleave
    // depends on how full the pipe is, which a test cannot force; the sink never makes one here.)
    const long = `/${'p'.repeat(3000)}`
    const n = 400
    const pool = new Pool(veer.url, { connections: 20 })
    try {
      await Promise.all(
        Array.from({ length: n }, async (_, i) => {
          const res = await pool.request({ path: `${long}/${i}`, method: 'GET' })
          await res.body.dump()
          expect(res.statusCode).toBe(200)
        }),
      )
    } finally {
      await pool.close()
    }
    const access = () => veer.logs.filter((l) => l.msg === 'access')
    await waitUntil(() => access().length === n, 'an access line for every request')
    expect(veer.unparsed).toEqual([])
    const paths = new Set(access().map((l) => Number(String(l.path).slice(long.length + 1))))
    expect(paths.size).toBe(n)
    expect(new Set(access().map((l) => l.pid)).size).toBe(2)
  })

  it('passes a config change to every worker, and replaces a worker that dies', async () => {
    const stable = await bed.upstream('stable')
    const canary = await bed.upstream('canary')
    const config = {
      shutdown: { grace: 0 },
      routes: [
        { name: 'default', stable: { url: stable.url }, canary: { url: canary.url }, canaryWeight: 0 },
      ],
    }
    const { veer, file } = await startCluster(config)
    expect(new Set(await load(veer.url, 200))).toEqual(new Set(['stable']))

    writeFileSync(file, stringify({ ...config, routes: [{ ...config.routes[0], canaryWeight: 100 }] }))
    await waitUntil(
      () => veer.logs.filter((l) => l.msg === 'config applied').length === 2,
      'both workers to apply the change',
    )
    expect(new Set(await load(veer.url, 200))).toEqual(new Set(['canary']))

    const victim = Number(veer.logs.find((l) => l.msg === 'veer worker started')!.pid)
    process.kill(victim, 'SIGKILL')
    await waitUntil(
      () => veer.logs.filter((l) => l.msg === 'veer worker started').length === 3,
      'a replacement worker',
    )
    // The replacement reads the file as it is now.
    expect(new Set(await load(veer.url, 200))).toEqual(new Set(['canary']))
    const ready = await request(`${veer.adminUrl}/readyz`)
    await ready.body.dump()
    expect(ready.statusCode).toBe(200)
  })

  it('drains every worker on SIGTERM and exits 0', async () => {
    const stable = await bed.upstream('stable')
    const { veer } = await startCluster({
      shutdown: { grace: 0 },
      routes: [{ name: 'default', stable: { url: stable.url } }],
    })
    await load(veer.url, 100)
    const workerPids = veer.logs.filter((l) => l.msg === 'veer worker started').map((l) => Number(l.pid))
    expect(await veer.stop()).toBe(0)
    for (const pid of workerPids) expect(() => process.kill(pid, 0)).toThrow()
    expect(veer.logs.filter((l) => l.msg === 'veer proxy stopped').length).toBe(3)
  })

  it('fails to start, exit 2, when its workers cannot listen', async () => {
    const stable = await bed.upstream('stable')
    const holder = createServer()
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r))
    const port = (holder.address() as AddressInfo).port
    try {
      const result = await runVeer([
        'proxy',
        '--stable',
        stable.url,
        '--workers',
        '2',
        '--listen',
        `127.0.0.1:${port}`,
        '--admin',
        '127.0.0.1:0',
      ])
      expect(result.code).toBe(2)
      expect(result.stderr).toContain('--listen: cannot listen (EADDRINUSE)')
      expect(result.stderr).toContain('a worker could not start')
    } finally {
      holder.close()
    }
  })

  it('refuses a bad --workers with one line and starts nothing', async () => {
    const stable = await bed.upstream('stable')
    const result = await runVeer([
      'proxy',
      '--stable',
      stable.url,
      '--workers',
      '0',
      '--listen',
      '127.0.0.1:0',
      '--admin',
      '127.0.0.1:0',
    ])
    expect(result.code).toBe(2)
    expect(result.stderr.trim().split('\n')).toEqual([
      'veer proxy: --workers must be a whole number from 1 to 64, or auto (got "0")',
    ])
  })
})
