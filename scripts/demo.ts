/**
 * `npm run demo`: two sample versions of a service, veer in front at 20% canary (config/default.yaml),
 * some traffic, then the split and per-version figures read back from the proxy's admin API.
 * Stays up for curl until Ctrl-C; `npm run demo -- --once` stops by itself after the report.
 */
import { spawn } from 'node:child_process'
import type { Server } from 'node:http'
import { Pool, request } from 'undici'
import { loadConfigFile } from '../config/load.ts'
import { startSampleApp } from './sample-app.ts'

const ROOT = new URL('../', import.meta.url).pathname
const CONFIG = `${ROOT}config/default.yaml`
const once = process.argv.includes('--once')
const REQUESTS = 2000

function fail(message: string): never {
  process.stderr.write(`demo: ${message}\n`)
  process.exit(1)
}

const loaded = await loadConfigFile(CONFIG)
if (!loaded.ok)
  fail(`config/default.yaml is invalid: ${loaded.issues.map((i) => `${i.path} ${i.message}`).join('; ')}`)
const config = loaded.config
const route = config.routes[0]!
const portOf = (url: string) => Number(new URL(url).port)
const proxyUrl = `http://${config.listen.host}:${config.listen.port}`
const adminUrl = `http://${config.admin.host}:${config.admin.port}`

const servers: Server[] = []
try {
  servers.push(await startSampleApp(route.stable.release, portOf(route.stable.url), 0))
  servers.push(await startSampleApp(route.canary!.release, portOf(route.canary!.url), 8))
} catch (err) {
  fail(
    `cannot start the sample app: ${(err as Error).message}; free ports ${portOf(route.stable.url)} and ${portOf(route.canary!.url)}`,
  )
}

const proxy = spawn(process.execPath, [`${ROOT}bin/veer.js`, 'proxy', '--config', CONFIG], {
  stdio: ['ignore', 'ignore', 'pipe'],
})
let proxyErr = ''
proxy.stderr.on('data', (d) => (proxyErr += d))
let stopping = false
const proxyExited = new Promise((resolve) => proxy.on('exit', resolve))
/** Stop the proxy (it drains for its grace period) and the sample app, then exit. */
const cleanup = async (code = 0) => {
  stopping = true
  proxy.kill('SIGTERM')
  await proxyExited
  for (const s of servers) s.close()
  process.exit(code)
}
process.on('SIGINT', () => void cleanup())
proxy.on('exit', (code) => {
  if (!stopping && code !== 0 && code !== null) {
    for (const s of servers) s.close()
    fail(`veer proxy exited with ${code}: ${proxyErr.trim()}`)
  }
})

// Wait for readiness (bounded: 10 s).
for (let i = 0; ; i++) {
  const ready = await request(`${adminUrl}/readyz`).then(
    async (r) => {
      await r.body.dump()
      return r.statusCode === 200
    },
    () => false,
  )
  if (ready) break
  if (i > 100) {
    process.stderr.write(`demo: veer did not become ready on ${adminUrl}: ${proxyErr.trim()}\n`)
    await cleanup(1)
  }
  await new Promise((r) => setTimeout(r, 100))
}

console.log(`veer proxy on ${proxyUrl}  (admin ${adminUrl})`)
console.log(
  `route "${route.name}": stable ${route.stable.release} ${route.stable.url}, canary ${route.canary!.release} ${route.canary!.url} at ${route.canaryWeight}%`,
)
console.log(`sending ${REQUESTS} requests from 200 users (sticky on ${route.sticky?.header}) …\n`)

const pool = new Pool(proxyUrl, { connections: 16 })
const servedBy = { stable: 0, canary: 0 } as Record<string, number>
const userVersion = new Map<string, string>()
let flips = 0
for (let i = 0; i < REQUESTS; i += 50) {
  await Promise.all(
    Array.from({ length: 50 }, async (_, k) => {
      const user = `user-${(i + k) % 200}`
      const res = await pool.request({
        path: `/items/${i + k}`,
        method: 'GET',
        headers: { 'x-user-id': user },
      })
      await res.body.dump()
      const version = String(res.headers['x-veer-version'])
      servedBy[version] = (servedBy[version] ?? 0) + 1
      const before = userVersion.get(user)
      if (before !== undefined && before !== version) flips++
      userVersion.set(user, version)
    }),
  )
}
await pool.close()

const usersOnCanary = [...userVersion.values()].filter((v) => v === 'canary').length
console.log('split')
console.log(
  `  requests: stable ${servedBy.stable}, canary ${servedBy.canary}  (${((100 * (servedBy.canary ?? 0)) / REQUESTS).toFixed(1)}% canary)`,
)
console.log(
  `  users:    ${usersOnCanary} of ${userVersion.size} on canary; ${flips} version changes for the same user\n`,
)

interface VersionStats {
  release: string
  window: { requests: number; errors: number; p50Ms: number | null; p99Ms: number | null }
}
const stats = (await (await request(`${adminUrl}/v1/stats`)).body.json()) as {
  routes: { name: string; stable: VersionStats; canary: VersionStats | null }[]
}
const metrics = await (await request(`${adminUrl}/metrics`)).body.text()
const counted = (version: string) =>
  metrics
    .split('\n')
    .filter((l) => l.startsWith(`veer_requests_total{route="${route.name}",version="${version}"`))
    .map((l) => `${l.match(/code="([^"]+)"/)?.[1]}: ${l.split(' ').pop()}`)
    .join(', ')
console.log('per version (from /v1/stats and /metrics)')
console.log('  version  release  requests  errors  p50 ms  p99 ms  veer_requests_total by code')
for (const r of stats.routes) {
  for (const [name, v] of [
    ['stable', r.stable],
    ['canary', r.canary],
  ] as const) {
    if (!v) continue
    const w = v.window
    console.log(
      `  ${name.padEnd(8)} ${v.release.padEnd(8)} ${String(w.requests).padStart(8)} ${String(w.errors).padStart(7)} ${String(w.p50Ms).padStart(7)} ${String(w.p99Ms).padStart(7)}  ${counted(name)}`,
    )
  }
}
console.log(`
try it:
  curl -si ${proxyUrl}/hello                                  # weighted: 20% canary
  curl -si ${proxyUrl}/hello -H 'x-user-id: alice'            # sticky: alice always gets one version
  curl -si ${proxyUrl}/hello -H 'x-veer-version: canary'      # tester override
  curl -s  ${adminUrl}/v1/config ; curl -s ${adminUrl}/metrics | grep ^veer_
  edit config/default.yaml (canaryWeight) and the proxy reloads it live`)

if (once) await cleanup()
console.log('\nveer keeps running; press Ctrl-C to stop.')
