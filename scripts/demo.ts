/**
 * `npm run demo`: a staged rollout end to end on loopback. A sample service's stable v1 and canary v2
 * (in this process, scripts/sample-app.ts), `veer control` and `veer proxy --control` (child processes,
 * config/default.yaml, a temp state dir and token file), and a steady load of ~400 req/s through the
 * proxy. Act 1: v2 answers 500 to 5% of requests; a rollout 5% → 25% → 50% → 100% starts and the
 * analysis rolls it back; the demo shows the live step, weights and per-version figures, the reason, and
 * what it cost (time to rollback, requests harmed, requests the fallback saved). Act 2: v2 fixed, the
 * same rollout is promoted to 100%. It prints the status page's address (control's /ui/) and the operator
 * token to sign in with, to watch it all live. Then it stays up for curl and the `veer` CLI until Ctrl-C;
 * `npm run demo -- --once` stops by itself. `--ephemeral-ports` (the test's) puts every listener on a port
 * the kernel picks, read back from the processes' start lines. Every child process and server is stopped
 * on exit, on error and on Ctrl-C.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { Pool, request } from 'undici'
import { parse as parseYaml, stringify as toYaml } from 'yaml'
import { killAllSync, logTail, type Managed, startProcess, stopProcess, waitReady } from '../bench/proc.ts'
import { loadConfigFile } from '../config/load.ts'
import type { RouteView } from '../control/views.ts'
import type { VersionSummary } from '../proxy/analysis/judge.ts'
import { type SampleApp, startSampleApp } from './sample-app.ts'

const ROOT = new URL('../', import.meta.url).pathname
const CONFIG = `${ROOT}config/default.yaml`
/** Act 3's next release, the new canary after the hand-off. */
const V3_PORT = 3003
const BIN = `${ROOT}bin/veer.js`
const once = process.argv.includes('--once')
/** Ports from the kernel instead of config/default.yaml's and the ones below: nothing fixed is bound. */
const ephemeral = process.argv.includes('--ephemeral-ports')
const tty = process.stdout.isTTY === true

const CONTROL = { host: '127.0.0.1', port: 9900 }
/** Requests per second through the proxy; one in POST_EVERY is a POST (not retried on stable). */
const RATE = 400
const POST_EVERY = 10
const USERS = 1000
const STABLE_ERRORS = 0.001
const BUGGY_ERRORS = 0.05
const PLAN_STEPS = [
  { weight: 5, pause: '5s' },
  { weight: 25, pause: '4s' },
  { weight: 50, pause: '4s' },
  { weight: 100, pause: '2s' },
]
/** An act that has not ended by then is aborted and the demo fails. */
const ACT_TIMEOUT_MS = 45_000
const started = performance.now()

// ---------------------------------------------------------------------------------------------------
// Set-up and teardown

const loaded = await loadConfigFile(CONFIG)
if (!loaded.ok) {
  process.stderr.write(
    `demo: config/default.yaml is invalid: ${loaded.issues.map((i) => `${i.path} ${i.message}`).join('; ')}\n`,
  )
  process.exit(1)
}
const config = loaded.config
const route = config.routes[0]!
if (!route.canary) {
  process.stderr.write('demo: config/default.yaml: the first route needs a canary\n')
  process.exit(1)
}
const portOf = (url: string) => Number(new URL(url).port)
const urlOf = (app: SampleApp) => `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`

const dir = mkdtempSync(join(tmpdir(), 'veer-demo-'))
/** The proxy runs on a copy of config/default.yaml, which act 3 edits as an operator would. */
const proxyConfig = join(dir, 'veer.yaml')
const apps: SampleApp[] = []
const procs: Managed[] = []
let load: Load | null = null
let stayingUp = false

const view = {
  drawn: 0,
  lastLine: 0,
  /** Replace the block drawn last (TTY), or print one line when a second has passed (not a TTY). */
  draw(block: string[], line: string, force = false): void {
    if (tty) {
      let out = this.drawn > 0 ? `\x1b[${this.drawn}F\x1b[J` : ''
      for (const l of block) out += `${l}\n`
      process.stdout.write(out)
      this.drawn = block.length
    } else if (force || performance.now() - this.lastLine >= 1000) {
      this.lastLine = performance.now()
      console.log(line)
    }
  },
  /** Leave the block as it is on screen; what is printed next goes below it. */
  end(): void {
    this.drawn = 0
  },
}

/** On failure the temp dir (the processes' logs) is kept. */
let keepDir = false
let cleaning: Promise<void> | null = null
/** Stop the load, then the proxy and control (SIGTERM; SIGKILL after 3 s), then the sample apps. */
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    await load?.stop()
    await Promise.all(procs.map((p) => stopProcess(p, 3000)))
    await Promise.all(apps.map((a) => a.close()))
    if (!keepDir) rmSync(dir, { recursive: true, force: true })
  })()
  return cleaning
}

let exitCode: number | null = null
async function exit(code: number): Promise<never> {
  exitCode ??= code
  await cleanup()
  process.exit(exitCode)
}

async function fail(message: string): Promise<never> {
  // Stopping already (Ctrl-C): what fails now is only the processes going away.
  if (cleaning) return new Promise<never>(() => {})
  view.end()
  keepDir = procs.length > 0
  process.stderr.write(`demo: ${message}\n`)
  if (keepDir) process.stderr.write(`demo: logs of veer control and veer proxy kept in ${dir}\n`)
  return exit(1)
}

// Last resort: whatever is still running when this process exits is killed.
process.on('exit', killAllSync)
/** Past Ctrl-C the main flow just waits for the exit (it would only report the processes going away). */
const checkpoint = (): Promise<void> => (cleaning ? new Promise<void>(() => {}) : Promise.resolve())
process.on('SIGINT', () => {
  view.end()
  console.log(stayingUp ? '\nstopping …' : '\ninterrupted; stopping …')
  void exit(stayingUp ? 0 : 130)
})
process.on('SIGTERM', () => void exit(143))
process.on('uncaughtException', (err) => void fail(err.stack ?? err.message))

/** Throws when something else listens on the port, so the demo names it instead of failing obscurely. */
function checkFree(host: string, port: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', () =>
      reject(new Error(`${host}:${port} (${what}) is in use; stop whatever holds it (another demo?)`)),
    )
    srv.listen(port, host, () => srv.close(() => resolve()))
  })
}

// ---------------------------------------------------------------------------------------------------
// Control API

const operatorToken = randomBytes(24).toString('hex')
const proxyToken = randomBytes(24).toString('hex')
const tokenFile = join(dir, 'tokens')
const operatorTokenFile = join(dir, 'operator-token')
const proxyTokenFile = join(dir, 'proxy-token')
writeFileSync(tokenFile, `${operatorToken} operator demo\n${proxyToken} proxy demo-proxy\n`, { mode: 0o600 })
writeFileSync(operatorTokenFile, `${operatorToken}\n`, { mode: 0o600 })
writeFileSync(proxyTokenFile, `${proxyToken}\n`, { mode: 0o600 })

// biome-ignore lint/suspicious/noExplicitAny: API answers are read field by field
async function call(base: string, method: string, path: string, body?: unknown): Promise<any> {
  const headers: Record<string, string> = {}
  if (base === controlUrl) headers.authorization = `Bearer ${operatorToken}`
  if (body !== undefined) headers['content-type'] = 'application/json'
  const res = await request(`${base}${path}`, {
    method: method as 'GET',
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    headersTimeout: 5000,
    bodyTimeout: 5000,
  })
  const text = await res.body.text()
  if (res.statusCode >= 300) throw new Error(`${method} ${base}${path}: ${res.statusCode} ${text.trim()}`)
  return text === '' ? null : JSON.parse(text)
}
const control = (method: string, path: string, body?: unknown) => call(controlUrl, method, path, body)
const routePath = `/v1/routes/${route.name}`
const getRoute = (): Promise<RouteView> => control('GET', routePath)

interface ProxyStats {
  routes: {
    name: string
    canary: { window: { seconds: number; requests: number; errors: number; p99Ms: number | null } } | null
    verdict: { result: string; reason: string } | null
  }[]
}

// ---------------------------------------------------------------------------------------------------
// Load: an open loop of RATE req/s through the proxy, counting what users were served

interface Seen {
  requests: number
  stable: number
  canary: number
  /** 5xx answers users got, by the version that served them (x-veer-version). */
  stableErrors: number
  canaryErrors: number
  /** No answer at all (connection error, timeout). */
  failed: number
  /** When the last canary answer reached a user (Date.now()). */
  lastCanaryAt: number
}

class Load {
  readonly pool = new Pool(proxyUrl, { connections: 32, headersTimeout: 5000, bodyTimeout: 5000 })
  readonly seen: Seen = {
    requests: 0,
    stable: 0,
    canary: 0,
    stableErrors: 0,
    canaryErrors: 0,
    failed: 0,
    lastCanaryAt: 0,
  }
  #due = 0
  #inflight = 0
  #timer: NodeJS.Timeout | null = null
  #stopped: Promise<void> | null = null
  /** (time, requests) samples for the live rate. */
  readonly #marks: [number, number][] = []

  start(): void {
    const t0 = performance.now()
    this.#timer = setInterval(() => {
      const due = Math.floor(((performance.now() - t0) / 1000) * RATE)
      // Behind by more than a quarter second (a stalled loop): drop the backlog rather than burst.
      if (due - this.#due > RATE / 4) this.#due = due - RATE / 4
      while (this.#due < due) this.#one(this.#due++)
    }, 10)
  }

  #one(n: number): void {
    if (this.#inflight >= 256) return
    this.#inflight++
    const post = n % POST_EVERY === 0
    const user = `user-${Math.floor(Math.random() * USERS)}`
    this.pool
      .request(
        post
          ? {
              path: '/orders',
              method: 'POST',
              headers: { 'x-user-id': user, 'content-type': 'application/json' },
              body: JSON.stringify({ item: n % 500, quantity: 1 }),
            }
          : { path: `/items/${n % 500}`, method: 'GET', headers: { 'x-user-id': user } },
      )
      .then(async (res) => {
        await res.body.dump()
        const s = this.seen
        s.requests++
        const bad = res.statusCode >= 500
        if (res.headers['x-veer-version'] === 'canary') {
          s.canary++
          s.lastCanaryAt = Date.now()
          if (bad) s.canaryErrors++
        } else {
          s.stable++
          if (bad) s.stableErrors++
        }
      })
      .catch(() => {
        this.seen.requests++
        this.seen.failed++
      })
      .finally(() => this.#inflight--)
  }

  /** Requests answered per second over about the last second. */
  rate(): number {
    const now = performance.now()
    this.#marks.push([now, this.seen.requests])
    while (this.#marks.length > 2 && now - this.#marks[1]![0] >= 1000) this.#marks.shift()
    const [t, n] = this.#marks[0]!
    return now - t < 200 ? 0 : ((this.seen.requests - n) * 1000) / (now - t)
  }

  snapshot(): Seen {
    return { ...this.seen }
  }

  stop(): Promise<void> {
    this.#stopped ??= (async () => {
      if (this.#timer) clearInterval(this.#timer)
      for (let i = 0; i < 60 && this.#inflight > 0; i++) await sleep(50)
      await this.pool.destroy()
    })()
    return this.#stopped
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const since = (a: Seen, b: Seen): Seen => ({
  requests: b.requests - a.requests,
  stable: b.stable - a.stable,
  canary: b.canary - a.canary,
  stableErrors: b.stableErrors - a.stableErrors,
  canaryErrors: b.canaryErrors - a.canaryErrors,
  failed: b.failed - a.failed,
  lastCanaryAt: b.lastCanaryAt,
})

// ---------------------------------------------------------------------------------------------------
// The live view: a small table redrawn in place on a terminal, one line a second otherwise

const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`
const pct = (rate: number) => `${(rate * 100).toFixed(2)}%`
const msOf = (v: number | null | undefined) => (v === null || v === undefined ? '—' : `${v.toFixed(1)} ms`)

function render(act: string, r: RouteView, t0: number, load: Load, base: Seen, final = false): void {
  const ro = r.rollout!
  const a = ro.analysis
  const j = a?.judgement
  const left = ro.state === 'pausing' && ro.pauseLeftMs !== null ? `, ${secs(ro.pauseLeftMs)} left` : ''
  const elapsed = secs(performance.now() - t0)
  const verdict = a?.verdict ?? '—'
  const head = `${act} · ${elapsed} · step ${ro.step}/${ro.steps} · canary ${r.weights.canary}% · ${ro.state}${left} · verdict: ${verdict}`
  const users = since(base, load.seen)
  const row = (name: string, release: string, weight: number, v: VersionSummary | undefined) => {
    const s = v ?? { requests: 0, errors: 0, errorRate: 0, p99Ms: null }
    return `  ${name.padEnd(7)} ${release.padEnd(8)} ${`${weight}%`.padStart(6)} ${String(s.requests).padStart(9)} ${String(s.errors).padStart(7)} ${pct(s.errorRate).padStart(10)} ${msOf(s.p99Ms).padStart(9)}`
  }
  const block = [
    `  ${head}`,
    `  version release  weight  requests  errors  error rate       p99`,
    row('stable', r.stable?.release ?? '?', r.weights.stable, j?.stable),
    row('canary', r.canary?.release ?? '?', r.weights.canary, j?.canary),
    `  users: ${Math.round(load.rate())} req/s · 5xx seen: ${users.canaryErrors} from canary, ${users.stableErrors} from stable · harmed ${a?.harmed ?? 0} · saved by fallback ${a?.saved ?? 0}`,
  ]
  const fig = (v: VersionSummary | undefined) =>
    v ? `${v.requests} req ${pct(v.errorRate)} err p99 ${msOf(v.p99Ms)}` : '—'
  const line = `  [${elapsed.padStart(7)}] step ${ro.step}/${ro.steps} canary ${r.weights.canary}% ${ro.state}${left} | stable ${fig(j?.stable)} | canary ${fig(j?.canary)} | verdict ${verdict}`
  view.draw(block, line, final)
}

// ---------------------------------------------------------------------------------------------------
// One act: start the rollout, follow it to its end

interface ActEnd {
  route: RouteView
  /** Audit `who` of the change that ended it (analysis, fuse, rollout, demo …). */
  who: string
  timedOut: boolean
  users: Seen
}

async function runAct(act: string, reason: string): Promise<ActEnd> {
  const base = load!.snapshot()
  const t0 = performance.now()
  await control('POST', `${routePath}/rollout`, { steps: PLAN_STEPS, reason })
  view.lastLine = 0
  let resumes = 0
  let timedOut = false
  for (;;) {
    const r = await getRoute()
    const ro = r.rollout!
    const ended = ro.phase === 'completed' || ro.phase === 'aborted'
    render(act, r, t0, load!, base, ended)
    if (ended) break
    if (ro.phase === 'paused' && resumes < 3) {
      // Too little traffic for a verdict at the end of a pause (a slow machine): ask again.
      resumes++
      view.end()
      console.log(`  ${ro.reason ?? 'paused'}; resuming`)
      await control('POST', `${routePath}/resume`, { reason: 'demo: ask the analysis again' })
    }
    if (performance.now() - t0 > ACT_TIMEOUT_MS) {
      timedOut = true
      view.end()
      console.log(`  ${act} did not end within ${secs(ACT_TIMEOUT_MS)} (${ro.state}); aborting the rollout`)
      await control('POST', `${routePath}/abort`, { reason: 'demo: act timed out' })
    }
    await sleep(250)
    await checkpoint()
  }
  view.end()
  // A moment for the proxy to apply the end and the last answers to arrive.
  await sleep(600)
  await checkpoint()
  const audit = await control('GET', `/v1/audit?route=${encodeURIComponent(route.name)}&limit=1`)
  const last = audit.entries.at(-1) as { who: string } | undefined
  return { route: await getRoute(), who: last?.who ?? '?', timedOut, users: since(base, load!.seen) }
}

const durationOf = (r: RouteView) =>
  Date.parse(r.rollout!.endedAt ?? r.rollout!.updatedAt) - Date.parse(r.rollout!.startedAt)

/**
 * Act 3, the hand-off: v2 serves 100%, so the config makes v2 the stable and names the next release,
 * v3, as the canary (no canaryWeight). Control records a release change and v3 starts at 0%: its
 * predecessor's 100% never reaches it.
 */
async function handOff(): Promise<void> {
  console.log('act 3: the hand-off: the config now names v2 as stable and the next release v3 as canary')
  const v3 = await startSampleApp('v3', ephemeral ? 0 : V3_PORT)
  apps.push(v3)
  console.log(`  v3 (canary) ${urlOf(v3)}`)
  const next = parseYaml(readFileSync(proxyConfig, 'utf8'))
  const r0 = next.routes[0]
  r0.stable = { url: urlOf(v2), release: route.canary!.release }
  r0.canary = { url: urlOf(v3), release: 'v3' }
  delete r0.canaryWeight
  writeFileSync(proxyConfig, toYaml(next))
  const audit = `/v1/audit?route=${encodeURIComponent(route.name)}&limit=5`
  let change: { proxy?: string; why: string; to: { handoff?: boolean } } | undefined
  for (let i = 0; change === undefined; i++) {
    if (i > 100) throw new Error(`control recorded no release change: ${logTail(proxyProc)}`)
    await sleep(100)
    change = (await control('GET', audit)).entries.find(
      (e: { action: string }) => e.action === 'release-change',
    )
  }
  const from = load!.snapshot()
  await sleep(2000)
  const seen = since(from, load!.seen)
  const r = await getRoute()
  console.log(`
  ${change.to.handoff ? 'HAND-OFF' : 'RELEASE CHANGE'} recorded by control (audit release-change, from proxy ${change.proxy ?? '?'}):
    ${change.why}
    now       stable ${r.stable?.release} ${r.weights.stable}%, canary ${r.canary?.release} ${r.weights.canary}%, route version ${r.version}
    v3 got    ${v3.requests} requests since it started; v2 served ${seen.stable} of the ${seen.requests} in the last 2 s
    next      veer rollout ${route.name} --plan FILE rolls v3 out, as in act 2
`)
  if (v3.requests !== 0 || r.weights.canary !== 0) ok = false
}

// ---------------------------------------------------------------------------------------------------
// Main

try {
  if (!ephemeral)
    for (const [hostPort, what] of [
      [config.listen, 'the proxy'],
      [config.admin, "the proxy's admin"],
      [CONTROL, 'veer control'],
    ] as const)
      await checkFree(hostPort.host, hostPort.port, what)
  const at = (url: string) => (ephemeral ? 0 : portOf(url))
  apps.push(await startSampleApp(route.stable.release, at(route.stable.url), { errorRate: STABLE_ERRORS }))
  apps.push(await startSampleApp(route.canary.release, at(route.canary.url), { errorRate: BUGGY_ERRORS }))
} catch (err) {
  await fail(`cannot start: ${(err as Error).message}`)
}
const [v1, v2] = apps as [SampleApp, SampleApp]
if (!ephemeral) writeFileSync(proxyConfig, readFileSync(CONFIG))
else {
  const doc = parseYaml(readFileSync(CONFIG, 'utf8'))
  doc.listen = '127.0.0.1:0'
  doc.admin = '127.0.0.1:0'
  doc.routes[0].stable.url = urlOf(v1)
  doc.routes[0].canary.url = urlOf(v2)
  writeFileSync(proxyConfig, toYaml(doc))
}

/** The `msg` line a child logs once it listens (JSON lines in its log file); throws if it exits first. */
async function startLine(m: Managed, msg: string, timeoutMs: number): Promise<Record<string, unknown>> {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    if (m.exitedWith !== null)
      throw new Error(`${m.name} exited (${m.exitedWith}): ${logTail(m) || 'no output'}`)
    // The last piece may be a line still being written: only whole lines are read.
    const lines = readFileSync(m.logPath, 'utf8').split('\n').slice(0, -1)
    for (const text of lines) {
      if (!text.includes(msg)) continue
      const line = JSON.parse(text)
      if (line.msg === msg) return line
    }
    if (performance.now() > deadline)
      throw new Error(`${m.name} did not start within ${timeoutMs} ms: ${logTail(m)}`)
    await sleep(50)
  }
}

const childEnv = { ...process.env }
delete childEnv.VEER_TOKEN
/** veer control, then the proxy following it, each on the address it says it listens on. */
async function startVeer() {
  const controlProc = startProcess(
    'veer control',
    process.execPath,
    [
      BIN,
      'control',
      '--listen',
      `${CONTROL.host}:${ephemeral ? 0 : CONTROL.port}`,
      '--state-dir',
      join(dir, 'control-state'),
      '--token-file',
      tokenFile,
    ],
    // No start-up grace: the state dir is new, there are no proxies from before a restart to wait for.
    { core: null, logPath: join(dir, 'control.log'), env: { ...childEnv, VEER_CONTROL_GRACE_MS: '0' } },
  )
  procs.push(controlProc)
  const controlUrl = String((await startLine(controlProc, 'veer control started', 15_000)).url)
  await waitReady(controlProc, portOf(controlUrl), 15_000, `${controlUrl}/healthz`)
  const proxyProc = startProcess(
    'veer proxy',
    process.execPath,
    [
      BIN,
      'proxy',
      '--config',
      proxyConfig,
      '--control',
      controlUrl,
      '--token-file',
      proxyTokenFile,
      '--state-dir',
      join(dir, 'proxy-state'),
    ],
    { core: null, logPath: join(dir, 'proxy.log'), env: childEnv },
  )
  procs.push(proxyProc)
  const line = await startLine(proxyProc, 'veer proxy started', 15_000)
  const adminUrl = `http://${line.admin}`
  await waitReady(proxyProc, portOf(adminUrl), 15_000, `${adminUrl}/readyz`)
  return { controlProc, proxyProc, controlUrl, proxyUrl: `http://${line.listen}`, adminUrl }
}

const { proxyProc, controlUrl, proxyUrl, adminUrl } = await startVeer().catch((err: Error) =>
  fail(err.message),
)
try {
  // The route exists in control once the proxy has registered it.
  for (let i = 0; ; i++) {
    const ok = await getRoute().then(
      () => true,
      () => false,
    )
    if (ok) break
    if (i > 100)
      throw new Error(`the proxy did not register route "${route.name}" with control: ${logTail(proxyProc)}`)
    await sleep(100)
  }
  // Start from stable only (the file's canaryWeight is where the route begins in control).
  await control('PUT', `${routePath}/weights`, { canary: 0, reason: 'demo: start from stable only' })
} catch (err) {
  await fail((err as Error).message)
}

console.log(`veer rollout demo
  v1 (stable) ${urlOf(v1)}  answers 500 to ${pct(STABLE_ERRORS)} of requests
  v2 (canary) ${urlOf(v2)}  buggy: answers 500 to ${pct(BUGGY_ERRORS)} of requests
  veer proxy  ${proxyUrl} (admin ${adminUrl}), following veer control on ${controlUrl}
  status page ${controlUrl}/ui/  sign in with the operator token ${operatorToken}
  load        ${RATE} req/s through the proxy from ${USERS} sticky users (${route.sticky?.header ?? 'no sticky header'}), 1 in ${POST_EVERY} a POST
  plan        ${PLAN_STEPS.map((s) => `${s.weight}% for ${s.pause}`).join(' → ')}, then done; default analysis
  figures     per version over the rollout, as control judges them (GET ${routePath} on control)
`)

load = new Load()
load.start()
await sleep(1500)

// Act 1 -----------------------------------------------------------------------------------------
await checkpoint()
console.log('act 1: roll out the buggy v2')
let ok = true
const act1 = await runAct('act 1', 'demo act 1: v2 (buggy)').catch((err: Error) => fail(err.message))
{
  const r = act1.route
  const ro = r.rollout!
  const a = ro.analysis
  if (ro.phase === 'aborted' && !act1.timedOut) {
    console.log(
      `\n  ROLLED BACK by ${act1.who} ${secs(durationOf(r))} after the rollout started, at step ${ro.step}/${ro.steps} (canary ${ro.stepWeight}% → ${r.weights.canary}%)`,
    )
    console.log(`  reason: ${ro.reason}`)
  } else {
    ok = false
    console.log(`\n  NOT ROLLED BACK: the rollout ended ${ro.phase}${act1.timedOut ? ' (timed out)' : ''}`)
  }
  const lag = act1.users.lastCanaryAt - Date.parse(ro.endedAt ?? ro.updatedAt)
  let proxyLine = ''
  try {
    const stats = (await call(adminUrl, 'GET', '/v1/stats')) as ProxyStats
    const pr = stats.routes.find((x) => x.name === route.name)
    const w = pr?.canary?.window
    if (w)
      proxyLine = `  the proxy's own view (/v1/stats, last ${w.seconds} s): canary ${pct(w.requests === 0 ? 0 : w.errors / w.requests)} errors (${w.errors}/${w.requests}), p99 ${msOf(w.p99Ms)}, window verdict ${pr?.verdict?.result ?? '—'}`
  } catch {}
  console.log(`
  summary
    ${ro.phase === 'aborted' ? 'time to rollback' : 'ended after     '}     ${secs(durationOf(r))} from the rollout's start to control's decision
${ro.phase === 'aborted' ? `    last canary answer   ${lag > 0 ? `${lag} ms after the decision (the proxy applied canary 0%)` : 'none after the decision (the proxy applied canary 0%)'}\n` : ''}    canary requests      ${a?.canaryRequests ?? 0} during the rollout
    harmed               ${a?.harmed ?? 0} canary failures users saw (POSTs: not retried on stable)
    saved by fallback    ${a?.saved ?? 0} failed canary GETs answered by stable instead
    without fallback     ${(a?.harmed ?? 0) + (a?.saved ?? 0)} users would have seen a canary failure
    users saw            ${act1.users.canaryErrors} 5xx from canary, ${act1.users.stableErrors} from stable (its own ${pct(STABLE_ERRORS)}), ${act1.users.failed} no answer, of ${act1.users.requests} requests
${proxyLine}
`)
}

// Act 2 -----------------------------------------------------------------------------------------
await checkpoint()
v2.set({ errorRate: 0 })
if ((await getRoute()).weights.canary !== 0)
  await control('PUT', `${routePath}/weights`, { canary: 0, reason: 'demo: back to stable only' })
console.log('act 2: v2 fixed (the sample app answers no 500s); the same rollout again')
const act2 = await runAct('act 2', 'demo act 2: v2 (fixed)').catch((err: Error) => fail(err.message))
{
  const r = act2.route
  const ro = r.rollout!
  const a = ro.analysis
  if (ro.phase === 'completed' && !act2.timedOut) {
    console.log(
      `\n  PROMOTED: ${r.canary?.release} serves ${r.weights.canary}%; the rollout completed ${secs(durationOf(r))} after it started, all ${ro.steps} steps`,
    )
  } else {
    ok = false
    console.log(
      `\n  NOT PROMOTED: the rollout ended ${ro.phase}${act2.timedOut ? ' (timed out)' : ''}: ${ro.reason ?? ''}`,
    )
  }
  console.log(`
  summary
    duration             ${secs(durationOf(r))}
    analysis             ${a?.verdict ?? '—'}: ${a?.reason ?? '—'}
    canary requests      ${a?.canaryRequests ?? 0} during the rollout; harmed ${a?.harmed ?? 0}, saved by fallback ${a?.saved ?? 0}
    users saw            ${act2.users.canaryErrors} 5xx from canary, ${act2.users.stableErrors} from stable, ${act2.users.failed} no answer, of ${act2.users.requests} requests
`)
}
if (ok) await handOff().catch((err: Error) => fail(err.message))
await load.stop()

if (!ok) await fail('the demo did not go as expected (see above)')

if (once) {
  console.log(
    `done in ${secs(performance.now() - started)}; stopping everything. Without --once the demo stays up for: curl -si ${proxyUrl}/hello`,
  )
  await exit(0)
}
stayingUp = true
console.log(`everything keeps running (load stopped); v2 is the stable, v3 the canary at 0%. Try:
  curl -si ${proxyUrl}/hello                                  # v2 now
  curl -si ${proxyUrl}/hello -H 'x-veer-version: canary'      # tester override: v3
  npx veer status --token-file ${operatorTokenFile}
  curl -s ${adminUrl}/v1/stats ; curl -s ${adminUrl}/metrics | grep ^veer_
  open ${controlUrl}/ui/ (the status page) and sign in with the token ${operatorToken}
press Ctrl-C to stop.`)
