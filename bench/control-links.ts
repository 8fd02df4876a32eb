// How many proxies one control replica serves:
//   npm run bench:links [-- --proxies 100,300,1000] [--changes 10] [--idle-seconds 10] [--stores state,etcd,follower] [--quick]
// A real `veer control` (test/helpers/control.ts) on a state dir, on a 1-member etcd (test/helpers/etcd.ts,
// unix sockets), and two replicas on that etcd with the proxies on the follower (its feed forwards every
// registration, ack and report to the leader: control/feed.ts). N simulated proxies in this process do
// what proxy/control/link.ts does over the wire (config/wire.ts): register, long-poll the watch, ack each
// revision, POST a one-route report every 250 ms (one in flight at a time; a tick that finds the last one
// still out is skipped, as the link merges it into the next). Once all N poll: control's CPU and RSS over
// an idle window, then M weight changes (PUT on the leader), each timed from the PUT's answer until every
// proxy received its revision and until GET /v1/routes/shop (on the leader) shows all N in sync.
// Writes bench/results/control-links.md and .json. Everything it starts is stopped at the end, on error
// and on Ctrl-C; traffic stays on 127.0.0.1.
import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { Pool } from 'undici'
import type { RegisterResponse } from '../config/wire.ts'
import { bucketOf } from '../proxy/analysis/window.ts'
import {
  announced,
  type ControlProcess,
  startControl,
  TOKENS,
  writeTokenFile,
} from '../test/helpers/control.ts'
import { ETCD_BIN, type EtcdCluster, startEtcd } from '../test/helpers/etcd.ts'
import { startHarness } from './harness.ts'
import { describeMachine } from './machine.ts'
import { commandExists, cpuMicros, machineMicros, rssParts } from './proc.ts'
import { median, percentile } from './stats.ts'

const REPORT_MS = 250
/** As the real link: calls other than the watch time out after 5 s, the watch after 30 s. */
const CALL_TIMEOUT_MS = 5_000
const WATCH_TIMEOUT_MS = 30_000
/** Pause of a simulated proxy after a failed call before it registers again (the link backs off too). */
const RETRY_MS = 250
/** Bounds of every wait: all N registered and polling, one change reaching everyone. */
const READY_MS = 120_000
const CHANGE_MS = 60_000
const STORES = ['state', 'etcd', 'follower'] as const
type Store = (typeof STORES)[number]
const STORE_NAME: Record<Store, string> = {
  state: 'state dir',
  etcd: 'etcd, 1 member',
  follower: 'etcd, proxies on the follower of 2',
}

function fail(message: string): never {
  process.stderr.write(`bench:links: ${message}\n`)
  process.exit(2)
}

function intOption(name: string, text: string | undefined, fallback: number, max: number): number {
  if (text === undefined) return fallback
  const n = Number(text)
  if (!Number.isInteger(n) || n < 1 || n > max)
    fail(`--${name} must be an integer from 1 to ${max} (got "${text}")`)
  return n
}

let parsed: ReturnType<typeof parseOptions>
function parseOptions() {
  return parseArgs({
    options: {
      proxies: { type: 'string' },
      changes: { type: 'string' },
      'idle-seconds': { type: 'string' },
      stores: { type: 'string' },
      quick: { type: 'boolean' },
    },
  })
}
try {
  parsed = parseOptions()
} catch (err) {
  fail(
    `${(err as Error).message}; options: --proxies N,N --changes M --idle-seconds S --stores state,etcd,follower --quick`,
  )
}
const { values } = parsed
const QUICK = values.quick === true
const PROXIES =
  values.proxies === undefined
    ? QUICK
      ? [50]
      : [100, 300, 1000]
    : values.proxies.split(',').map((t) => intOption('proxies', t.trim(), 0, 5000))
const CHANGES = intOption('changes', values.changes, QUICK ? 3 : 10, 1000)
const IDLE_S = intOption('idle-seconds', values['idle-seconds'], QUICK ? 3 : 10, 600)
const STORES_RUN: Store[] =
  values.stores === undefined
    ? [...STORES]
    : values.stores.split(',').map((t) => {
        const s = t.trim() as Store
        if (!STORES.includes(s)) fail(`--stores takes state, etcd, follower (comma-separated); got "${t}"`)
        return s
      })

// Children started through test/helpers (not bench/proc.ts's table): killed here on any exit. Registered
// before the harness's own handler, which removes its temp dir (every temp dir of this run is inside it).
const children = new Set<{ pid?: number | undefined }>()
process.on('exit', () => {
  for (const c of children) if (c.pid !== undefined) killQuietly(c.pid)
})
function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL')
  } catch {
    // already gone
  }
}
const h = startHarness('veer-links', 20 + PROXIES.length * STORES_RUN.length * 3)
// os.tmpdir() follows TMPDIR: the helpers' state dirs, token files and etcd data land in the harness's dir.
process.env.TMPDIR = h.tmpDir

/** Control for a bench: the real long-poll (20 s) and clock tick (250 ms), no start-up grace. */
const BENCH_ENV = {
  VEER_CONTROL_WATCH_MS: '20000',
  VEER_CONTROL_TICK_MS: '250',
  VEER_CONTROL_GRACE_MS: '0',
  VEER_SOURCE: 'ts',
}

/** One route's report of 250 ms of healthy traffic, as proxy/control/link.ts `reportOf` builds it. */
function versionReport(requests: number): object {
  const latency: number[] = []
  for (let i = 0; i < requests; i++) {
    const b = bucketOf(1 + ((i * 7) % 23))
    while (latency.length <= b) latency.push(0)
    latency[b]!++
  }
  return { requests, errors: 0, failed: 0, harmed: 0, saved: 0, latency }
}
const ROUTES_JSON = JSON.stringify({ shop: { stable: versionReport(24), canary: versionReport(6) } })
const ROUTE = announced('shop', 0)

interface Counts {
  /** Report answers: 204, other statuses, and calls that failed (timeout, reset). */
  reports204: number
  reportsOther: number
  reportsFailed: number
  /** Ticks skipped because the proxy's last report was still out. */
  reportsSkipped: number
  acks204: number
  acksOther: number
  watchErrors: number
  registers: number
}

const zeroCounts = (): Counts => ({
  reports204: 0,
  reportsOther: 0,
  reportsFailed: 0,
  reportsSkipped: 0,
  acks204: 0,
  acksOther: 0,
  watchErrors: 0,
  registers: 0,
})

class SimProxy {
  readonly id: string
  readonly #fleet: Fleet
  /** Newest revision received (register or watch answer), and when. */
  seen = 0
  seenAt = 0
  registered = false
  #everRegistered = false
  #reporting = false
  #timer: NodeJS.Timeout | null = null
  #watch: AbortController | null = null
  loop: Promise<void> = Promise.resolve()

  constructor(fleet: Fleet, id: string) {
    this.#fleet = fleet
    this.id = id
  }

  start(): void {
    this.loop = this.#run()
    // A random phase: real proxies' slot clocks start at their own process start.
    this.#timer = setTimeout(() => this.#tick(), Math.random() * REPORT_MS)
  }

  stop(): void {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#watch?.abort()
  }

  async #run(): Promise<void> {
    const f = this.#fleet
    while (!f.stopped) {
      try {
        if (!this.registered) {
          const r = await f.call('POST', '/v1/proxies/register', {
            id: this.id,
            routes: [ROUTE],
            appliedRevision: this.seen,
          })
          if (r.status !== 200) throw new Error(`register answered ${r.status}`)
          this.registered = true
          f.counts.registers++
          if (!this.#everRegistered) {
            this.#everRegistered = true
            f.onRegistered()
          }
          await this.#take(JSON.parse(r.text) as RegisterResponse)
          continue
        }
        const ac = new AbortController()
        this.#watch = ac
        const r = await f.watch(`/v1/proxies/${this.id}/watch?revision=${this.seen}`, ac.signal)
        this.#watch = null
        if (r.status === 204) continue
        if (r.status !== 200) throw new Error(`watch answered ${r.status}`)
        await this.#take(JSON.parse(r.text) as RegisterResponse)
      } catch {
        this.#watch = null
        if (f.stopped) return
        f.counts.watchErrors++
        this.registered = false
        await sleep(RETRY_MS + Math.random() * RETRY_MS)
      }
    }
  }

  async #take(answer: RegisterResponse): Promise<void> {
    const f = this.#fleet
    if (answer.revision > this.seen) {
      this.seen = answer.revision
      this.seenAt = performance.now()
      f.onSeen(this)
    }
    const r = await f.call('POST', `/v1/proxies/${this.id}/ack`, { revision: answer.revision, error: null })
    if (r.status === 204) f.counts.acks204++
    else f.counts.acksOther++
  }

  #tick(): void {
    const f = this.#fleet
    if (f.stopped) return
    this.#timer = setTimeout(() => this.#tick(), REPORT_MS)
    if (!this.registered) return
    if (this.#reporting) {
      f.counts.reportsSkipped++
      return
    }
    this.#reporting = true
    const body = `{"revision":${this.seen},"intervalMs":${REPORT_MS},"routes":${ROUTES_JSON}}`
    const sent = performance.now()
    f.call('POST', `/v1/proxies/${this.id}/report`, body)
      .then((r) => {
        if (r.status === 204) f.counts.reports204++
        else f.counts.reportsOther++
        f.reportMs?.push(performance.now() - sent)
      })
      .catch(() => {
        if (!f.stopped) f.counts.reportsFailed++
      })
      .finally(() => (this.#reporting = false))
  }
}

/** N simulated proxies against one control URL: one pool for the long polls (N fit), one for the rest. */
class Fleet {
  readonly proxies: SimProxy[]
  readonly counts = zeroCounts()
  /** Round trips of the reports answered while this is set (the idle window). */
  reportMs: number[] | null = null
  stopped = false
  registered = 0
  readonly #watchPool: Pool
  readonly #callPool: Pool
  readonly #headers = { authorization: `Bearer ${TOKENS.proxy}`, 'content-type': 'application/json' }
  #waiter: { revision: number; have: number; resolve: () => void } | null = null
  readonly #counted = new Set<SimProxy>()
  #registeredWaiter: (() => void) | null = null

  constructor(url: string, n: number, tag: string) {
    this.#watchPool = new Pool(url, { connections: n + 8 })
    this.#callPool = new Pool(url, { connections: n })
    this.proxies = Array.from({ length: n }, (_, i) => new SimProxy(this, `links-${tag}-${i}`))
  }

  start(): void {
    for (const p of this.proxies) p.start()
  }

  async call(method: string, path: string, body: unknown): Promise<{ status: number; text: string }> {
    const res = await this.#callPool.request({
      path,
      method: method as 'POST',
      headers: this.#headers,
      body: typeof body === 'string' ? body : JSON.stringify(body),
      headersTimeout: CALL_TIMEOUT_MS,
      bodyTimeout: CALL_TIMEOUT_MS,
    })
    return { status: res.statusCode, text: await res.body.text() }
  }

  async watch(path: string, signal: AbortSignal): Promise<{ status: number; text: string }> {
    const res = await this.#watchPool.request({
      path,
      method: 'GET',
      headers: this.#headers,
      signal,
      headersTimeout: WATCH_TIMEOUT_MS,
      bodyTimeout: WATCH_TIMEOUT_MS,
    })
    return { status: res.statusCode, text: await res.body.text() }
  }

  /** A proxy's first registration. */
  onRegistered(): void {
    if (++this.registered === this.proxies.length) this.#registeredWaiter?.()
  }

  /** Resolves once every proxy registered (at least once). */
  allRegistered(): Promise<void> {
    if (this.registered === this.proxies.length) return Promise.resolve()
    return new Promise((resolve) => (this.#registeredWaiter = resolve))
  }

  onSeen(p: SimProxy): void {
    const w = this.#waiter
    // Counted once per proxy: the first revision at or past the target it receives.
    if (w === null || p.seen < w.revision || this.#counted.has(p)) return
    this.#counted.add(p)
    if (++w.have === this.proxies.length) w.resolve()
  }

  /** The time the last proxy received `revision` (or a newer one). */
  async allSeen(revision: number, ms: number): Promise<number> {
    this.#counted.clear()
    for (const p of this.proxies) if (p.seen >= revision) this.#counted.add(p)
    if (this.#counted.size < this.proxies.length) {
      const done = new Promise<void>(
        (resolve) => (this.#waiter = { revision, have: this.#counted.size, resolve }),
      )
      try {
        await within(done, ms, () => {
          const missing = this.proxies.filter((p) => p.seen < revision).length
          return `${missing} of ${this.proxies.length} proxies did not receive revision ${revision}`
        })
      } finally {
        this.#waiter = null
      }
    }
    return Math.max(...this.proxies.map((p) => p.seenAt))
  }

  async stop(): Promise<void> {
    this.stopped = true
    for (const p of this.proxies) p.stop()
    await Promise.all([this.#watchPool.destroy(), this.#callPool.destroy()]).catch(() => {})
    await within(Promise.all(this.proxies.map((p) => p.loop)), 10_000, () => 'simulated proxies did not stop')
  }
}

async function within<T>(p: Promise<T>, ms: number, why: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${why()} within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([p, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Poll `fn` every `every` ms until it returns a value (bounded by `ms`). */
async function poll<T>(
  fn: () => Promise<T | null>,
  ms: number,
  every: number,
  why: () => string,
): Promise<T> {
  const end = performance.now() + ms
  for (;;) {
    const v = await fn()
    if (v !== null) return v
    if (performance.now() > end) throw new Error(`${why()} within ${ms} ms`)
    await sleep(every)
  }
}

function track(c: ControlProcess): ControlProcess {
  children.add(c.child)
  return c
}

interface Row {
  store: Store
  proxies: number
  status: 'ok' | 'failed'
  error?: string
  /** ms from the first registration call until all N were registered (client side), and polling (control). */
  registeredMs: number
  pollingMs: number
  /** Per change, ms from the PUT's answer until every proxy received the revision / control showed all in sync. */
  deliveredMs: number[]
  syncMs: number[]
  /** Per change, the PUT's round trip (the proxies may have the revision before its answer arrives). */
  putMs: number[]
  /** During the idle window: control's CPU (µs per s of wall time; the follower's in the follower row). */
  cpuUsPerS: number
  leaderCpuUsPerS: number | null
  etcdCpuUsPerS: number | null
  /** This process's CPU (the N simulated proxies), and the machine's busy time minus all of ours. */
  harnessCpuUsPerS: number
  otherCpuUsPerS: number
  /** Control's RSS at the end of the idle window, MiB (max over 1 s samples), and the leader's. */
  rssMiB: number
  rssAnonMiB: number
  leaderRssMiB: number | null
  /** Report answers per second during the idle window, and counts over the whole run. */
  idleReportsPerS: number
  /** Round trip of a report during the idle window, ms. */
  reportMs: { p50: number; p99: number; max: number }
  counts: Counts
  /** Per control process: how many of its log lines said what (warnings and errors first). */
  logs?: { role: string; lines: Record<string, number> }[]
}

/** What a control logged, counted by level and message: a warning it kept repeating explains a slow row. */
function logSummary(c: ControlProcess, role: string): { role: string; lines: Record<string, number> } {
  const lines: Record<string, number> = {}
  for (const l of c.logs) {
    const why = Number(l.level) >= 40 && l.reason !== undefined ? ` (${String(l.reason)})` : ''
    const key = `${l.level} ${String(l.msg)}${why}`
    lines[key] = (lines[key] ?? 0) + 1
  }
  const sorted = Object.entries(lines).sort(([a], [b]) => b.localeCompare(a))
  return { role, lines: Object.fromEntries(sorted) }
}

/** Control (or the two replicas) for `store`: where the proxies link, and where operators write and read. */
async function startStore(
  store: Store,
  etcd: EtcdCluster | null,
  tag: string,
): Promise<{ link: ControlProcess; leader: ControlProcess; all: ControlProcess[] }> {
  if (store === 'state') {
    const c = track(await startControl({ env: BENCH_ENV }))
    return { link: c, leader: c, all: [c] }
  }
  const opts = { etcd: { endpoints: etcd!.endpoints, prefix: `/links-${tag}/` }, env: BENCH_ENV }
  if (store === 'etcd') {
    const c = track(await startControl(opts))
    return { link: c, leader: c, all: [c] }
  }
  const tokenFile = writeTokenFile()
  const all: ControlProcess[] = []
  try {
    for (let i = 0; i < 2; i++) all.push(track(await startControl({ ...opts, tokenFile })))
    const leader = await poll(
      async () => {
        const views = await Promise.all(all.map(async (c) => (await c.api('GET', '/v1/control')).json))
        const id = views[0]?.leader?.id
        if (id === undefined || !views.every((v) => v?.leader?.id === id)) return null
        return all[views.findIndex((v) => v.role === 'leader')] ?? null
      },
      30_000,
      100,
      () => 'the two replicas did not agree on a leader',
    )
    return { link: all.find((c) => c !== leader)!, leader, all }
  } catch (err) {
    await Promise.all(all.map((c) => c.stop('SIGKILL')))
    throw err
  }
}

async function measure(store: Store, n: number, etcd: EtcdCluster | null): Promise<Row> {
  const tag = `${store}-${n}`
  h.log(`${STORE_NAME[store]}, ${n} proxies: starting control`)
  const { link, leader, all } = await startStore(store, etcd, tag)
  const fleet = new Fleet(link.url, n, tag)
  const row: Row = {
    store,
    proxies: n,
    status: 'ok',
    registeredMs: Number.NaN,
    pollingMs: Number.NaN,
    deliveredMs: [],
    syncMs: [],
    putMs: [],
    cpuUsPerS: Number.NaN,
    leaderCpuUsPerS: null,
    etcdCpuUsPerS: null,
    harnessCpuUsPerS: Number.NaN,
    otherCpuUsPerS: Number.NaN,
    rssMiB: Number.NaN,
    rssAnonMiB: Number.NaN,
    leaderRssMiB: null,
    idleReportsPerS: Number.NaN,
    reportMs: { p50: Number.NaN, p99: Number.NaN, max: Number.NaN },
    counts: fleet.counts,
  }
  try {
    const t0 = performance.now()
    fleet.start()
    await within(fleet.allRegistered(), READY_MS, () => `${fleet.registered} of ${n} proxies registered`)
    row.registeredMs = performance.now() - t0
    // Every proxy has a watch pending on the replica it links to, and the leader knows them all.
    let watching = 0
    let known = 0
    await poll(
      async () => {
        const r = await link.api('GET', '/v1/proxies')
        watching = (r.json?.proxies ?? []).filter((p: { watching: boolean }) => p.watching).length
        if (watching < n) return null
        if (leader === link) return true
        known = ((await leader.api('GET', '/v1/proxies')).json?.proxies ?? []).length
        return known >= n ? true : null
      },
      READY_MS,
      200,
      () => `${watching} of ${n} proxies polling${leader === link ? '' : `, ${known} known to the leader`}`,
    )
    row.pollingMs = performance.now() - t0
    h.log(
      `  ${n} registered in ${row.registeredMs.toFixed(0)} ms, all polling after ${row.pollingMs.toFixed(0)} ms`,
    )

    // Idle: N long polls pending, N reports every 250 ms.
    const etcdPid = etcd?.members[0]?.process?.pid
    const pids = {
      link: link.child.pid!,
      leader: leader === link ? null : leader.child.pid!,
      etcd: etcdPid ?? null,
    }
    const cpu0 = {
      link: cpuMicros(pids.link),
      leader: pids.leader === null ? 0 : cpuMicros(pids.leader),
      etcd: pids.etcd === null ? 0 : cpuMicros(pids.etcd),
      self: process.cpuUsage(),
      machine: machineMicros().busy,
      reports: fleet.counts.reports204 + fleet.counts.reportsOther,
      at: performance.now(),
    }
    fleet.reportMs = []
    let rss = { rss: 0, anon: 0, file: 0 }
    let leaderRss = 0
    for (let s = 0; s < IDLE_S; s++) {
      await sleep(1000)
      const now = rssParts(pids.link)
      if (now.rss > rss.rss) rss = now
      if (pids.leader !== null) leaderRss = Math.max(leaderRss, rssParts(pids.leader).rss)
    }
    const wall = (performance.now() - cpu0.at) / 1000
    const reportMs = fleet.reportMs.sort((a, b) => a - b)
    fleet.reportMs = null
    row.reportMs = {
      p50: percentile(reportMs, 0.5),
      p99: percentile(reportMs, 0.99),
      max: reportMs.at(-1) ?? Number.NaN,
    }
    const self = process.cpuUsage(cpu0.self)
    const ours = {
      link: cpuMicros(pids.link) - cpu0.link,
      leader: pids.leader === null ? 0 : cpuMicros(pids.leader) - cpu0.leader,
      etcd: pids.etcd === null ? 0 : cpuMicros(pids.etcd) - cpu0.etcd,
      self: self.user + self.system,
    }
    row.cpuUsPerS = ours.link / wall
    row.leaderCpuUsPerS = pids.leader === null ? null : ours.leader / wall
    row.etcdCpuUsPerS = pids.etcd === null ? null : ours.etcd / wall
    row.harnessCpuUsPerS = ours.self / wall
    row.otherCpuUsPerS =
      (machineMicros().busy - cpu0.machine - ours.link - ours.leader - ours.etcd - ours.self) / wall
    row.rssMiB = rss.rss / 1024
    row.rssAnonMiB = rss.anon / 1024
    row.leaderRssMiB = pids.leader === null ? null : leaderRss / 1024
    row.idleReportsPerS = (fleet.counts.reports204 + fleet.counts.reportsOther - cpu0.reports) / wall
    h.log(
      `  idle ${IDLE_S} s: control ${(row.cpuUsPerS / 1e4).toFixed(1)}% of a core, RSS ${row.rssMiB.toFixed(0)} MiB, ${row.idleReportsPerS.toFixed(0)} reports/s`,
    )

    // Weight changes, one after the previous reached every proxy and control saw them all in sync.
    for (let i = 0; i < CHANGES && !h.interrupted(); i++) {
      const sent = performance.now()
      const put = await leader.api('PUT', '/v1/routes/shop/weights', { body: { canary: 10 + (i % 2) * 10 } })
      const answered = performance.now()
      row.putMs.push(answered - sent)
      if (put.status !== 200) throw new Error(`PUT weights: ${put.status} ${put.text}`)
      const revision = Number(put.json.revision)
      const seenAt = await fleet.allSeen(revision, CHANGE_MS)
      row.deliveredMs.push(seenAt - answered)
      const syncAt = await poll(
        async () => {
          const v = (await leader.api('GET', '/v1/routes/shop')).json
          const ok = v?.revision >= revision && v.proxies.live >= n && v.proxies.inSync >= n
          return ok ? performance.now() : null
        },
        CHANGE_MS,
        10,
        () => `control did not show all ${n} proxies in sync with revision ${revision}`,
      )
      row.syncMs.push(syncAt - answered)
    }
    h.log(
      `  ${row.deliveredMs.length} changes: delivered median ${median(row.deliveredMs).toFixed(1)} ms, in sync median ${median(row.syncMs).toFixed(1)} ms`,
    )
  } catch (err) {
    row.status = 'failed'
    row.error = (err as Error).message
    h.log(`  failed: ${row.error}`)
  } finally {
    await fleet.stop().catch((err) => h.log(`  ${(err as Error).message}`))
    await Promise.all(all.map((c) => c.stop()))
    row.logs = all.map((c) => logSummary(c, c === leader ? 'leader' : 'link'))
    for (const c of all) {
      children.delete(c.child)
      rmSync(c.stateDir, { recursive: true, force: true })
    }
  }
  return row
}

const rows: Row[] = []
const etcdAvailable = commandExists(ETCD_BIN)
for (const store of STORES_RUN) {
  if (store !== 'state' && !etcdAvailable) {
    h.log(`${STORE_NAME[store]}: skipped, ${ETCD_BIN} not found (Debian's etcd-server; VEER_ETCD_BIN)`)
    continue
  }
  let etcd: EtcdCluster | null = null
  try {
    if (store !== 'state') {
      etcd = await startEtcd(1)
      for (const m of etcd.members) children.add({ pid: m.process?.pid })
    }
    for (const n of PROXIES) {
      if (h.interrupted()) break
      rows.push(await measure(store, n, etcd))
    }
  } finally {
    await etcd?.close()
  }
}

const fmt = (ms: number) => (Number.isFinite(ms) ? (ms < 100 ? ms.toFixed(1) : ms.toFixed(0)) : '—')
const triple = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  return `${fmt(percentile(s, 0.5))} / ${fmt(percentile(s, 0.99))} / ${fmt(s.at(-1) ?? Number.NaN)}`
}
const pct = (us: number | null) => (us === null || !Number.isFinite(us) ? '—' : `${(us / 1e4).toFixed(1)}%`)
const mib = (m: number | null) => (m === null || !Number.isFinite(m) ? '—' : m.toFixed(0))
const m = describeMachine()
const table = [
  '| store | proxies | registered / polling | PUT answer p50 | delivered p50 / p99 / max | in sync p50 / p99 / max | control CPU | control RSS MiB | reports/s idle (204 / other / failed / skipped, whole run) | report round trip p50 / p99 | sim. proxies CPU | other load |',
  '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ...rows.map((r) => {
    const c = r.counts
    const cpu =
      r.leaderCpuUsPerS === null ? pct(r.cpuUsPerS) : `${pct(r.cpuUsPerS)} + leader ${pct(r.leaderCpuUsPerS)}`
    const rss = r.leaderRssMiB === null ? mib(r.rssMiB) : `${mib(r.rssMiB)} + leader ${mib(r.leaderRssMiB)}`
    const etcd = r.etcdCpuUsPerS === null ? '' : ` (etcd ${pct(r.etcdCpuUsPerS)})`
    const name = r.status === 'ok' ? STORE_NAME[r.store] : `${STORE_NAME[r.store]} — FAILED: ${r.error}`
    return `| ${name} | ${r.proxies} | ${fmt(r.registeredMs)} / ${fmt(r.pollingMs)} ms | ${fmt(median(r.putMs))} ms | ${triple(r.deliveredMs)} ms | ${triple(r.syncMs)} ms | ${cpu}${etcd} | ${rss} | ${fmt(r.idleReportsPerS)} (${c.reports204} / ${c.reportsOther} / ${c.reportsFailed} / ${c.reportsSkipped}) | ${fmt(r.reportMs.p50)} / ${fmt(r.reportMs.p99)} ms | ${pct(r.harnessCpuUsPerS)} | ${pct(r.otherCpuUsPerS)} |`
  }),
]
const md = [
  `# How many proxies one control replica serves (${new Date().toISOString().slice(0, 16)}Z)`,
  '',
  `${m.nproc} cores (${m.cpuModel}), ${m.memGiB} GiB, Node ${m.node}; control from the TypeScript sources (VEER_SOURCE=ts), long poll 20 s, clock tick 250 ms. N simulated proxies in the bench process (one route each, a report every ${REPORT_MS} ms, long poll + ack as proxy/control/link.ts); ${CHANGES} weight changes per row, each timed from the PUT's answer until the last proxy received the revision (delivered; negative when every proxy had it before the PUT's answer arrived, since control publishes a change as it commits it) and until GET /v1/routes/shop on the leader showed all N in sync (polled every 10 ms); CPU (% of one core) and RSS of control over a ${IDLE_S} s idle window (N polls pending, reports flowing). "Other load" is the machine's busy time minus control, etcd and this process: other work on a shared machine.`,
  '',
  ...table,
  '',
  `Command: \`npm run bench:links --${process.argv.slice(2).length > 0 ? ` ${process.argv.slice(2).join(' ')}` : ''}\``,
  '',
].join('\n')
writeFileSync(join(h.resultsDir, 'control-links.md'), md)
writeFileSync(
  join(h.resultsDir, 'control-links.json'),
  `${JSON.stringify({ machine: m, proxies: PROXIES, changes: CHANGES, idleSeconds: IDLE_S, rows }, null, 2)}\n`,
)
process.stdout.write(md)
process.exit(rows.every((r) => r.status === 'ok') ? 0 : 1)
