// Memory soak (issue 18: "anonymous memory ≤ 60 MiB after 5 min at 2,000 req/s over 1,000 connections,
// RSS ≤ a bare `node:http` server's + 40 MiB, slope ≤ 0.2 MiB/min", with the defaults that `npx veer proxy`
// and the container actually run):  node bench/soak.ts [--seconds N] [options]     (--help lists them)
// Subjects, one after the other (each pinned to the proxy core, fresh process, same load, same run):
//   node-http       bench/baselines/node-http.mjs, a bare node:http server answering 200 with 100 B
//   node-http-tuned the same server run with veer's memory defaults (bin/memory-defaults.js: V8 flags,
//                   MALLOC_ARENA_MAX=1), so veer's own part of its memory reads apart from node's
//   veer            `veer proxy --listen … --admin … --stable URL`: the CLI's defaults, nothing else
//                   (the compiled build, as `npx veer` runs it from a packed package)
//   veer-container  the image's ENTRYPOINT + CMD (deploy/Dockerfile: `node bin/veer.js proxy --config F`)
//                   with its env (NODE_ENV=production) and the NODE_OPTIONS deploy/k8s/base/proxy.yaml
//                   sets, on deploy/k8s/overlays/sidecar/veer.yaml (ports and upstream URLs made local)
//   veer-ts         (with --only) bin/veer.js from the TypeScript sources, as from a git clone
// Every 5 s it samples each subject's RSS and RssAnon (/proc/PID/status) and, for veer, its V8 heap
// (nodejs_* gauges from veer's own /metrics). It prints RSS at start, after warm-up and at each minute,
// the slope over the last 3 minutes, p50/p99, the achieved rate and errors, then the goals with verdicts
// (bench/soak-goals.ts), and writes bench/results/soak.md and .json (or --out NAME). It stops by itself,
// stops whatever it started, and sends traffic to 127.0.0.1 only.
//
// The load: wrk -t1 -c1000 with a Lua `delay()` of an exponential think time (mean 1000 × connections /
// rate ms, 500 ms at the defaults), so every connection stays open and busy at ~2 req/s, Poisson-like.
// load.ts fixedRate cannot do this: its undici Pool reuses the first idle connection, so at 2,000 req/s
// it keeps only the ~40 connections it warmed up open whatever `connections` says. It is still the
// fallback without wrk (--load node), and the report then says how many connections were really open.
// wrk times each request from its send, after the think time: a stall of the proxy delays the next
// sends on the stalled connections (coordinated omission), so the rate column shows what was achieved.

import {
  cpSync,
  existsSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { missingMemoryDefaults } from '../bin/memory-defaults.js'
import { positiveInt, startHarness } from './harness.ts'
import { fixedRate, parseWrk } from './load.ts'
import { describeMachine, machineLine } from './machine.ts'
import { roundOrder, type Spread } from './paired.ts'
import { checkAnswers } from './probe.ts'
import {
  commandExists,
  cpuMicros,
  freePort,
  LOAD_CORE,
  type Managed,
  PROXY_CORE,
  pinHarness,
  rssParts,
  runCapture,
  startProcess,
  stopAll,
  stopProcess,
} from './proc.ts'
import {
  anonGoal,
  fitPerMinute,
  type GoalCheck,
  overBaselineGoal,
  ownAnon,
  slopeGoal,
  slopeWindow,
} from './soak-goals.ts'
import { getText, loopback, started, startUpstream } from './subjects.ts'

const SUBJECTS = ['node-http', 'node-http-tuned', 'veer', 'veer-container', 'veer-ts'] as const
/** The bare node:http servers: no veer goals, no admin port. */
const isBaseline = (name: string) => name === 'node-http' || name === 'node-http-tuned'
type SubjectName = (typeof SUBJECTS)[number]
const DEFAULT_SUBJECTS: readonly SubjectName[] = ['node-http', 'node-http-tuned', 'veer', 'veer-container']

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string' },
    rate: { type: 'string' },
    connections: { type: 'string' },
    warmup: { type: 'string' },
    sample: { type: 'string' },
    rounds: { type: 'string' },
    only: { type: 'string' },
    load: { type: 'string' },
    'veer-root': { type: 'string' },
    'no-access-log': { type: 'boolean', default: false },
    shadow: { type: 'string', default: 'none' },
    'node-options': { type: 'string' },
    out: { type: 'string', default: 'soak' },
    label: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
if (args.help) {
  console.log(`usage: node bench/soak.ts [options]
  --seconds N        load duration per subject (default 300)
  --rate R           total req/s (default 2000)
  --connections C    keep-alive client connections (default 1000)
  --warmup N         the "after warm-up" sample is taken N s into the load (default 30)
  --sample N         seconds between samples (default 5)
  --rounds N         measure every subject N times, in alternating order (default 1)
  --only LIST        comma-separated subjects (default node-http,node-http-tuned,veer,veer-container;
                     also veer-ts)
  --load wrk|node    wrk with think time (default when wrk is on PATH) or load.ts fixedRate
  --veer-root DIR    a compiled veer (DIR/bin/veer.js, DIR/dist) for veer and veer-container, instead
                     of the one the soak builds from this repo into its temp dir (tsc, ~1 min)
  --no-access-log    the veer subject with log.access: false (a YAML config instead of the CLI flags)
  --shadow none|healthy|dead   the veer subject mirrors every request to a 2nd upstream, or to a dead port
  --node-options S   extra NODE_OPTIONS for the veer subjects (e.g. --max-semi-space-size=2)
  --out NAME         results file name: bench/results/NAME.md and .json (default soak)
  --label TEXT       a free-text label for the report`)
  process.exit(0)
}

const seconds = positiveInt(args.seconds, 300, 3600)
const only = (args.only ?? DEFAULT_SUBJECTS.join(',')).split(',').map((s) => s.trim())
for (const name of only) {
  if (!(SUBJECTS as readonly string[]).includes(name)) {
    console.error(`--only: unknown subject ${name}; use some of ${SUBJECTS.join(', ')}`)
    process.exit(2)
  }
}
const settings = {
  seconds,
  rate: positiveInt(args.rate, 2000, 50_000),
  connections: positiveInt(args.connections, 1000, 10_000),
  warmupSeconds: Math.min(positiveInt(args.warmup, 30, 600), seconds),
  sampleSeconds: positiveInt(args.sample, 5, 60),
  rounds: positiveInt(args.rounds, 1, 10),
  subjects: only as SubjectName[],
  load: args.load ?? (commandExists('wrk') ? 'wrk' : 'node'),
  accessLog: !args['no-access-log'],
  shadow: args.shadow ?? 'none',
  nodeOptions: args['node-options'] ?? '',
  label: args.label ?? '',
  compiledRoot: '',
  pinning: '',
}
const bad = (msg: string) => {
  console.error(msg)
  process.exit(2)
}
if (settings.load !== 'wrk' && settings.load !== 'node') bad('--load: use wrk or node')
if (!['none', 'healthy', 'dead'].includes(settings.shadow)) bad('--shadow: use none, healthy or dead')
if (!/^[\w.-]+$/.test(args.out ?? '')) bad('--out: a plain file name (letters, digits, . _ -)')
if (args['veer-root'] !== undefined && !existsSync(join(resolve(args['veer-root']), 'dist/cli/main.js')))
  bad(
    `--veer-root: no dist/cli/main.js in ${resolve(args['veer-root'])}; give a compiled copy (npm run build)`,
  )

const perSubject = seconds + 40
const watchdogMinutes = Math.ceil((perSubject * settings.subjects.length * settings.rounds + 120) / 60) + 5
const { root, resultsDir, tmpDir, startedAt, log } = startHarness('veer-soak', watchdogMinutes)

const machine = describeMachine() // before pinning (availableParallelism follows this process's affinity)
const { pinned: pinnedSelf, description: pinningText } = pinHarness('each subject')
settings.pinning = pinningText

const loadavg = (): string => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
const MiB = 1024 * 1024
const node = process.execPath

/** A compiled copy of this repo (as `npm run build` and the image's build stage make it) in the temp dir. */
async function buildCompiled(): Promise<string> {
  const app = join(tmpDir, 'app')
  mkdirSync(app, { recursive: true })
  log(`building the compiled veer into ${app} (tsc -p tsconfig.build.json) …`)
  const tsc = join(root, 'node_modules/.bin/tsc')
  const r = await runCapture(
    'tsc',
    tsc,
    ['-p', join(root, 'tsconfig.build.json'), '--outDir', join(app, 'dist')],
    null,
    600_000,
  )
  if (r.code !== 0) throw new Error(`tsc exited ${r.code}: ${(r.stdout + r.stderr).trim().slice(0, 400)}`)
  cpSync(join(root, 'control/ui'), join(app, 'dist/control/ui'), { recursive: true })
  cpSync(join(root, 'bin'), join(app, 'bin'), { recursive: true })
  cpSync(join(root, 'package.json'), join(app, 'package.json'))
  symlinkSync(realpathSync(join(root, 'node_modules')), join(app, 'node_modules'))
  return app
}

interface Sample {
  /** seconds since the load started (negative: before it) */
  t: number
  rssMiB: number
  /** RSS of anonymous pages (heaps, buffers) and of file-backed ones (the node binary, libraries) */
  anonMiB: number
  fileMiB: number
  heapUsedMiB: number
  heapTotalMiB: number
  newSpaceMiB: number
  oldSpaceMiB: number
  largeObjectMiB: number
  codeMiB: number
  externalMiB: number
  /** veer_requests_total, all series (user requests answered); NaN for node-http */
  requests: number
  /** ESTABLISHED TCP connections on the subject's listening port (client connections) */
  connections: number
  loadavg: string
}

/** Established TCP connections whose local port is `port` (the server side of each client connection). */
function establishedOn(port: number): number {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`
  let n = 0
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = ''
    try {
      text = readFileSync(file, 'utf8')
    } catch {
      continue
    }
    for (const line of text.split('\n')) {
      const f = line.trim().split(/\s+/)
      if (f[1]?.endsWith(hex) && f[3] === '01') n++
    }
  }
  return n
}

function gauge(text: string, name: string): number {
  const m = new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text)
  return m === null ? Number.NaN : Number(m[1])
}

function requestsTotal(text: string): number {
  let n = 0
  for (const m of text.matchAll(/^veer_requests_total\{([^}]*)\} (\S+)$/gm)) {
    if (!m[1]!.includes('version="shadow"')) n += Number(m[2])
  }
  return n
}

interface Started {
  proc: Managed
  port: number
  /** veer's admin port (its /metrics); null for node-http */
  admin: number | null
  /** how it was started, for the report */
  command: string
  env: Record<string, string>
}

async function sample(s: Started, t: number): Promise<Sample> {
  const kib = rssParts(s.proc.pid)
  let text = ''
  if (s.admin !== null) {
    try {
      text = await getText(`http://127.0.0.1:${s.admin}/metrics`)
    } catch (err) {
      log(`t=${t}s: /metrics failed (${(err as Error).message}); heap figures left out`)
    }
  }
  const space = (kind: string) => gauge(text, `nodejs_heap_space_size_total_bytes{space="${kind}"}`) / MiB
  return {
    t,
    rssMiB: kib.rss / 1024,
    anonMiB: kib.anon / 1024,
    fileMiB: kib.file / 1024,
    heapUsedMiB: gauge(text, 'nodejs_heap_size_used_bytes') / MiB,
    heapTotalMiB: gauge(text, 'nodejs_heap_size_total_bytes') / MiB,
    newSpaceMiB: space('new'),
    oldSpaceMiB: space('old'),
    largeObjectMiB: space('large_object'),
    codeMiB: space('code'),
    externalMiB: gauge(text, 'nodejs_external_memory_bytes') / MiB,
    requests: s.admin === null ? Number.NaN : requestsTotal(text),
    connections: establishedOn(s.port),
    loadavg: loadavg(),
  }
}

interface LoadResult {
  tool: string
  requests: number
  rps: number
  errors: number
  p50Ms: number
  p99Ms: number
  note: string
}

/** wrk's `--latency` distribution: percent → ms. */
function wrkPercentiles(out: string): Map<number, number> {
  const unit: Record<string, number> = { us: 1e-3, ms: 1, s: 1000, m: 60_000 }
  const pct = new Map<number, number>()
  for (const m of out.matchAll(/^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$/gm)) {
    pct.set(Number(m[1]), Number(m[2]) * unit[m[3]!]!)
  }
  return pct
}

async function wrkLoad(origin: string): Promise<LoadResult> {
  // Exponential think time per connection: connections × (1 / mean gap) ≈ rate.
  const meanMs = (1000 * settings.connections) / settings.rate
  const script = join(tmpDir, 'think.lua')
  writeFileSync(
    script,
    [
      `local mean = ${meanMs.toFixed(3)}`,
      'math.randomseed(os.time())',
      'function delay()',
      '  return math.floor(-math.log(1 - math.random()) * mean)',
      'end',
      '',
    ].join('\n'),
  )
  const argv = ['-t1', `-c${settings.connections}`, `-d${seconds}s`, '--timeout', '5s', '--latency']
  argv.push('-s', script, `${origin}/`)
  const r = await runCapture('wrk', 'wrk', argv, LOAD_CORE, (seconds + 30) * 1000)
  if (r.code !== 0) throw new Error(`wrk exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 300)}`)
  const summary = parseWrk(r.stdout)
  const pct = wrkPercentiles(r.stdout)
  return {
    tool: `wrk -t1 -c${settings.connections}, exponential think time (mean ${meanMs.toFixed(0)} ms) per connection`,
    requests: summary.requests,
    rps: summary.rps,
    errors: summary.errors,
    p50Ms: pct.get(50) ?? Number.NaN,
    p99Ms: pct.get(99) ?? Number.NaN,
    note: 'latency from each send (closed loop with think time)',
  }
}

async function nodeLoad(origin: string): Promise<LoadResult> {
  const r = await fixedRate(
    { origin, path: '/' },
    { rate: settings.rate, seconds, connections: settings.connections, leadInSeconds: 0 },
  )
  return {
    tool: `load.ts fixedRate (undici Pool, up to ${settings.connections} connections)`,
    requests: r.completed,
    rps: r.completed / seconds,
    errors: r.errors + r.timedOut,
    p50Ms: r.p50Ms,
    p99Ms: r.p99Ms,
    note: 'open loop, latency from the scheduled send time; the pool opens only the connections it needs',
  }
}

interface Upstreams {
  stable: number
  shadow: number | null
}

/** The veer subject: the CLI's quick-start flags (or a YAML config for --no-access-log / --shadow). */
function veerArgs(up: Upstreams, port: number, admin: number, dir: string): string[] {
  if (settings.accessLog && up.shadow === null) {
    return [
      'proxy',
      '--listen',
      `127.0.0.1:${port}`,
      '--admin',
      `127.0.0.1:${admin}`,
      '--stable',
      loopback(up.stable),
    ]
  }
  const file = join(dir, 'veer.yaml')
  writeFileSync(
    file,
    [
      `listen: 127.0.0.1:${port}`,
      `admin: 127.0.0.1:${admin}`,
      `log: { access: ${settings.accessLog} }`,
      'routes:',
      '  - name: default',
      `    stable: { url: "${loopback(up.stable)}" }`,
      ...(up.shadow === null ? [] : [`    shadow: { url: "${loopback(up.shadow)}" }`]),
      '',
    ].join('\n'),
  )
  return ['proxy', '--config', file]
}

/** The image's ENTRYPOINT and CMD (exec form) from deploy/Dockerfile. */
function dockerCommand(): { entrypoint: string[]; cmd: string[]; env: Record<string, string> } {
  const text = readFileSync(join(root, 'deploy/Dockerfile'), 'utf8')
  const arr = (key: string): string[] => {
    const m = new RegExp(`^${key}\\s+(\\[.*\\])\\s*$`, 'm').exec(text)
    if (m === null) throw new Error(`deploy/Dockerfile: no exec-form ${key} [...] line`)
    return JSON.parse(m[1]!) as string[]
  }
  const env: Record<string, string> = {}
  for (const m of text.matchAll(/^ENV\s+(\w+)=(\S+)\s*$/gm)) env[m[1]!] = m[2]!
  return { entrypoint: arr('ENTRYPOINT'), cmd: arr('CMD'), env }
}

/** NODE_OPTIONS the proxy Deployment sets (deploy/k8s/base/proxy.yaml), '' when it sets none. */
function k8sNodeOptions(): string {
  const text = readFileSync(join(root, 'deploy/k8s/base/proxy.yaml'), 'utf8')
  const m = /name:\s*NODE_OPTIONS,\s*value:\s*"([^"]*)"/.exec(text)
  return m === null ? '' : m[1]!
}

/** deploy/k8s/overlays/sidecar/veer.yaml with its ports on 127.0.0.1 and its upstreams on the local one. */
function sidecarConfig(up: Upstreams, port: number, admin: number): string {
  const text = readFileSync(join(root, 'deploy/k8s/overlays/sidecar/veer.yaml'), 'utf8')
  return text
    .replace(/^listen: .*$/m, `listen: 127.0.0.1:${port}`)
    .replace(/^admin: .*$/m, `admin: 127.0.0.1:${admin}`)
    .replace(/url: http:\/\/[^,}\s]+/g, `url: ${loopback(up.stable)}`)
}

const withOptions = (base: string): string => `${base} ${settings.nodeOptions}`.trim()

async function startSubject(
  name: SubjectName,
  up: Upstreams,
  compiled: string,
  round: number,
): Promise<Started> {
  const port = await freePort()
  const admin = await freePort()
  const dir = join(tmpDir, `${name}-${round}`)
  mkdirSync(dir, { recursive: true })
  const logPath = join(dir, 'out.log')
  let argv: string[]
  let cwd = root
  let env: Record<string, string> = {}
  if (name === 'node-http') {
    argv = [join(root, 'bench/baselines/node-http.mjs'), String(port)]
  } else if (name === 'node-http-tuned') {
    // The same server with the memory defaults `veer proxy` gives itself: what is veer's own.
    const { flags, arena } = missingMemoryDefaults('', {}, process.platform)
    argv = [...flags, join(root, 'bench/baselines/node-http.mjs'), String(port)]
    if (arena) env = { MALLOC_ARENA_MAX: '1' }
  } else if (name === 'veer-container') {
    const d = dockerCommand()
    const file = join(dir, 'veer.yaml')
    writeFileSync(file, sidecarConfig(up, port, admin))
    const [first, ...entry] = d.entrypoint
    if (first !== 'node') throw new Error(`deploy/Dockerfile: ENTRYPOINT starts with ${first}, expected node`)
    argv = [...entry, ...d.cmd.map((a) => (a === '/etc/veer/veer.yaml' ? file : a))]
    cwd = compiled // WORKDIR /app
    env = { ...d.env, NODE_OPTIONS: withOptions(k8sNodeOptions()) }
  } else {
    cwd = name === 'veer-ts' ? root : compiled
    argv = [join(cwd, 'bin/veer.js'), ...veerArgs(up, port, admin, dir)]
    env = name === 'veer-ts' ? { VEER_SOURCE: 'ts' } : {}
    if (settings.nodeOptions !== '') env.NODE_OPTIONS = settings.nodeOptions
  }
  // The harness's own NODE_OPTIONS (if any) is not passed on: each subject gets exactly its own.
  const { NODE_OPTIONS: _ignored, ...inherited } = process.env
  const proc = startProcess(name, node, argv, {
    core: PROXY_CORE,
    logPath,
    cwd,
    env: { ...inherited, ...env },
  })
  const isVeer = !isBaseline(name)
  await started(proc, port, 20_000, isVeer ? `http://127.0.0.1:${admin}/healthz` : undefined)
  const origin = `http://127.0.0.1:${port}`
  if (isVeer) {
    const problem = await checkAnswers(origin, null)
    if (problem !== null) throw new Error(`${name} preflight: ${problem}`)
  } else {
    const body = await getText(`${origin}/`)
    if (body.length !== 100) throw new Error(`node-http preflight: answered ${body.length} B, expected 100`)
  }
  const shown = Object.entries(env)
    .map(([k, v]) => `${k}=${JSON.stringify(v)} `)
    .join('')
  return {
    proc,
    port,
    admin: isVeer ? admin : null,
    command: `${shown}node ${argv.join(' ')} (cwd ${cwd})`,
    env,
  }
}

interface RoundRun {
  round: number
  load: LoadResult
  /** samples[0] is idle before the load; the rest during it, then the end-of-load sample */
  samples: Sample[]
  /** 10 s after the load */
  after: Sample
  wallLoad: number
  cpuUsPerReq: number
  cpuPct: number
  connections: { min: number; max: number }
}

async function soakOne(s: Started, name: string, round: number): Promise<RoundRun> {
  await sleep(2000) // let start-up garbage settle before the first figure
  const samples: Sample[] = [await sample(s, 0)]
  log(
    `[${name} r${round}] t=0 s (idle after start): RSS ${samples[0]!.rssMiB.toFixed(1)} MiB (anon ${samples[0]!.anonMiB.toFixed(1)}) · load ${samples[0]!.loadavg}`,
  )
  const cpu0 = cpuMicros(s.proc.pid)
  const loadStart = performance.now()
  const elapsed = () => Math.round((performance.now() - loadStart) / 1000)
  let sampling = false
  const ticker = setInterval(() => {
    if (sampling) return
    sampling = true
    void sample(s, elapsed())
      .then((x) => {
        samples.push(x)
        const prev = samples.at(-2)!
        const rps = (x.requests - prev.requests) / Math.max(1, x.t - prev.t)
        log(
          `[${name} r${round}] t=${String(x.t).padStart(4)} s  RSS ${x.rssMiB.toFixed(1)} MiB (anon ${x.anonMiB.toFixed(1)})` +
            (s.admin === null
              ? ''
              : ` · heap ${x.heapUsedMiB.toFixed(1)}/${x.heapTotalMiB.toFixed(1)} MiB (new ${x.newSpaceMiB.toFixed(1)}, ` +
                `old ${x.oldSpaceMiB.toFixed(1)}) · external ${x.externalMiB.toFixed(1)} MiB · ${Math.round(rps)} req/s`) +
            ` · ${x.connections} conns · load ${x.loadavg}`,
        )
      })
      .finally(() => (sampling = false))
  }, settings.sampleSeconds * 1000)
  const origin = `http://127.0.0.1:${s.port}`
  let load: LoadResult
  try {
    load = settings.load === 'wrk' ? await wrkLoad(origin) : await nodeLoad(origin)
  } finally {
    clearInterval(ticker)
  }
  while (sampling) await sleep(50)
  const wallLoad = (performance.now() - loadStart) / 1000
  const cpuUs = cpuMicros(s.proc.pid) - cpu0
  const last = await sample(s, Math.round(wallLoad))
  samples.push(last)
  await sleep(10_000)
  const after = await sample(s, Math.round((performance.now() - loadStart) / 1000))
  if (s.proc.exitedWith !== null) throw new Error(`${name} exited (${s.proc.exitedWith})`)
  const conns = samples.filter((x) => x.t > 0 && x !== last).map((x) => x.connections)
  return {
    round,
    load,
    samples,
    after,
    wallLoad,
    cpuUsPerReq: cpuUs / Math.max(1, load.requests),
    cpuPct: cpuUs / (wallLoad * 1e4),
    connections: { min: Math.min(...conns), max: Math.max(...conns) },
  }
}

log(
  `soak: ${settings.subjects.join(', ')} × ${settings.rounds} round(s); ${settings.rate} req/s over ${settings.connections} connections ` +
    `for ${seconds} s each (${settings.load}); access log ${settings.accessLog ? 'on' : 'off'}; shadow ${settings.shadow}; ` +
    `pinning: ${settings.pinning}; load ${loadavg()}`,
)

const needsCompiled = settings.subjects.some((n) => n === 'veer' || n === 'veer-container')
settings.compiledRoot =
  args['veer-root'] !== undefined ? resolve(args['veer-root']) : needsCompiled ? await buildCompiled() : ''
const stable = await startUpstream(root, tmpDir, 'stable')
const up: Upstreams = {
  stable: stable.port,
  shadow:
    settings.shadow === 'healthy'
      ? (await startUpstream(root, tmpDir, 'shadow', 'stable')).port
      : settings.shadow === 'dead'
        ? await freePort()
        : null,
}

interface SubjectRuns {
  name: SubjectName
  command: string
  rounds: RoundRun[]
}
const runs = new Map<SubjectName, SubjectRuns>()
for (let round = 1; round <= settings.rounds; round++) {
  for (const name of roundOrder(settings.subjects, round)) {
    const s = await startSubject(name, up, settings.compiledRoot, round)
    log(`[${name} r${round}] ${s.command}`)
    const r = await soakOne(s, name, round)
    await stopProcess(s.proc)
    const entry = runs.get(name) ?? { name, command: s.command, rounds: [] }
    entry.rounds.push(r)
    runs.set(name, entry)
  }
}
await stopAll()

// ---- figures ----
const f = (n: number | undefined, d = 1) => (n !== undefined && Number.isFinite(n) ? n.toFixed(d) : '—')
const [slopeFrom, slopeTo] = slopeWindow(seconds, settings.warmupSeconds)
const during = (r: RoundRun) => r.samples.filter((s) => s.t > 0)
const nearest = (r: RoundRun, t: number): Sample | null => {
  if (t > seconds + settings.sampleSeconds) return null
  let best: Sample | null = null
  for (const s of during(r)) if (best === null || Math.abs(s.t - t) < Math.abs(best.t - t)) best = s
  return best !== null && Math.abs(best.t - t) <= settings.sampleSeconds ? best : null
}
const soakRounds = (x: SubjectRuns) => x.rounds.map((r) => ({ round: r.round, samples: during(r) }))
const baseline = runs.get('node-http')
const tuned = runs.get('node-http-tuned')

interface SubjectSummary {
  name: string
  command: string
  goals: GoalCheck[]
  rounds: Array<
    Omit<RoundRun, 'samples' | 'after'> & {
      marks: Array<{ label: string } & Partial<Sample>>
      peakRssMiB: number
      anonAtEndMiB: number
      rssAtEndMiB: number
      oldSpaceSlopeMiBPerMin: number
      anonSlopeMiBPerMin: number
      samples: Sample[]
    }
  >
}

const summaries: SubjectSummary[] = [...runs.values()].map((x) => {
  const goals: GoalCheck[] = []
  if (!isBaseline(x.name)) {
    goals.push(anonGoal(soakRounds(x), seconds))
    if (baseline !== undefined) goals.push(overBaselineGoal(soakRounds(x), soakRounds(baseline), seconds))
    if (tuned !== undefined) goals.push(ownAnon(soakRounds(x), soakRounds(tuned), seconds))
  }
  goals.push(slopeGoal(soakRounds(x), seconds, settings.warmupSeconds))
  return {
    name: x.name,
    command: x.command,
    goals,
    rounds: x.rounds.map((r) => {
      const last = r.samples.at(-1)!
      const tail = during(r).filter((s) => s.t >= slopeFrom && s.t <= slopeTo)
      const marks = [
        { label: 'start (idle, before load)', sample: r.samples[0]! },
        { label: `after warm-up (${settings.warmupSeconds} s)`, sample: nearest(r, settings.warmupSeconds) },
        ...[1, 2, 3, 4, 5, 10, 15, 20, 30, 45, 60]
          .filter((m) => m * 60 <= seconds)
          .map((m) => ({ label: `${m} min`, sample: nearest(r, m * 60) })),
        { label: `end of load (${Math.round(r.wallLoad)} s)`, sample: last },
        { label: 'idle 10 s after the load', sample: r.after },
      ]
      const { samples: _s, after: _a, ...rest } = r
      return {
        ...rest,
        marks: marks.map((m) => ({ label: m.label, ...(m.sample ?? {}) })),
        peakRssMiB: Math.max(...r.samples.map((s) => s.rssMiB)),
        anonAtEndMiB: last.anonMiB,
        rssAtEndMiB: last.rssMiB,
        oldSpaceSlopeMiBPerMin: fitPerMinute(tail, (s) => s.oldSpaceMiB).slope,
        anonSlopeMiBPerMin: fitPerMinute(tail, (s) => s.anonMiB).slope,
        samples: [...r.samples, r.after],
      }
    }),
  }
})

const report = {
  date: new Date().toISOString(),
  machine,
  taskset: pinnedSelf,
  settings,
  slopeWindow: [slopeFrom, slopeTo],
  subjects: summaries,
  wallSeconds: (performance.now() - startedAt) / 1000,
}

const spreadCell = (s: Spread, d: number) =>
  s.n === 0 ? '—' : s.n === 1 ? f(s.median, d) : `${f(s.median, d)} (${f(s.min, d)} – ${f(s.max, d)})`
const cols = (s: Sample, veer: boolean) =>
  [
    s.t,
    f(s.rssMiB),
    f(s.anonMiB),
    f(s.fileMiB),
    ...(veer
      ? [f(s.heapUsedMiB), f(s.heapTotalMiB), f(s.newSpaceMiB), f(s.oldSpaceMiB), f(s.externalMiB)]
      : ['', '', '', '', '']),
    s.connections,
    s.loadavg,
  ].join(' | ')

const lines = [
  `# veer memory soak${settings.label === '' ? '' : `: ${settings.label}`}`,
  '',
  machineLine(report.date, machine),
  '',
  `Load: ${summaries[0]?.rounds[0]?.load.tool ?? settings.load}, ${settings.rate.toLocaleString('en-US')} req/s of GET / (100 B answers) ` +
    `for ${seconds} s per subject, ${settings.rounds} round(s), subjects in alternating order (${settings.subjects.join(', ')}). ` +
    `Pinning: ${settings.pinning}. RSS is VmRSS from /proc, split into anonymous pages (RssAnon: heaps, buffers: what the process allocated) ` +
    `and file-backed ones (RssFile: the node binary and libraries, shared between node processes); heap figures are veer's own nodejs_* gauges ` +
    `(GET /metrics), sampled every ${settings.sampleSeconds} s.`,
  '',
  '## Goals (issue 18)',
  '',
  `Figures: median (min – max). A verdict is given only when the whole range is on one side of the goal${seconds < 300 ? `; this run's load was ${seconds} s, not 5 min` : ''}.`,
  '',
  '| subject | goal | figure | result | how |',
  '| --- | --- | ---: | --- | --- |',
  ...summaries.flatMap((x) =>
    x.goals.map(
      (g) => `| ${x.name} | ${g.goal} | ${spreadCell(g.figure, 2)} ${g.unit} | **${g.result}** | ${g.how} |`,
    ),
  ),
  '',
  '## Summary',
  '',
  '| subject | round | anon idle | anon at end | RSS idle | RSS at end | peak RSS | RSS slope MiB/min | old space slope | CPU µs/req | p50 ms | p99 ms | req/s | errors | conns |',
  '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ...summaries.flatMap((x) =>
    x.rounds.map((r) => {
      const fit = slopeGoal(
        [{ round: r.round, samples: r.samples.filter((s) => s.t > 0 && s !== r.samples.at(-1)) }],
        seconds,
        settings.warmupSeconds,
      )
      return `| ${x.name} | ${r.round} | ${f(r.samples[0]!.anonMiB)} | ${f(r.anonAtEndMiB)} | ${f(r.samples[0]!.rssMiB)} | ${f(r.rssAtEndMiB)} | ${f(r.peakRssMiB)} | ${f(fit.figure.median, 2)} | ${f(r.oldSpaceSlopeMiBPerMin, 2)} | ${f(r.cpuUsPerReq)} | ${f(r.load.p50Ms, 2)} | ${f(r.load.p99Ms, 2)} | ${f(r.load.rps, 0)} | ${r.load.errors} | ${r.connections.min}–${r.connections.max} |`
    }),
  ),
  '',
  'Commands:',
  '',
  ...summaries.map((x) => `- ${x.name}: \`${x.command}\``),
  ...(settings.subjects.includes('veer-container')
    ? [
        "- veer-container leaves out the Deployment's `--control`, `--token-file` and `--state-dir` (no control plane here); " +
          'its config is deploy/k8s/overlays/sidecar/veer.yaml with the ports on 127.0.0.1 and both upstream URLs on the local upstream (canaryWeight 0).',
      ]
    : []),
  '',
  ...summaries.flatMap((x) =>
    x.rounds.flatMap((r) => [
      `## ${x.name}, round ${r.round}`,
      '',
      '| when | t s | RSS MiB | anon MiB | file MiB | heap used MiB | heap total MiB | new space MiB | old space MiB | external MiB | client conns | load avg |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
      ...r.marks.map((m) =>
        m.t === undefined
          ? `| ${m.label} | — | — | — | — | — | — | — | — | — | — | — |`
          : `| ${m.label} | ${cols(m as Sample, !isBaseline(x.name))} |`,
      ),
      '',
      `- Latency: p50 ${f(r.load.p50Ms, 2)} ms, p99 ${f(r.load.p99Ms, 2)} ms (${r.load.note}); ${f(r.load.rps, 0)} req/s achieved ` +
        `(${r.load.requests.toLocaleString('en-US')} requests), errors ${r.load.errors}; CPU ${f(r.cpuUsPerReq)} µs/req, ${f(r.cpuPct, 0)}% of its core.`,
      '',
    ]),
  ),
  `Wall time ${report.wallSeconds.toFixed(0)} s.`,
  '',
]
const markdown = lines.join('\n')
mkdirSync(resultsDir, { recursive: true })
writeFileSync(join(resultsDir, `${args.out}.md`), markdown)
writeFileSync(join(resultsDir, `${args.out}.json`), `${JSON.stringify(report, null, 2)}\n`)
process.stdout.write(`\n${markdown}\n`)
log(`wrote bench/results/${args.out}.md and bench/results/${args.out}.json`)
process.exit(0)
