// veer benchmark harness:  node bench/run.ts [--quick] [--upstream node|nginx|both] [--rounds N] [--only a,b]
// Every subject is measured against the same upstream, started fresh for every round; subjects run
// forward in odd rounds and in reverse in even ones. Each body size is warmed up before it is measured.
// CPU µs per request of the proxy process is the headline figure; every ratio (veer ÷ undici-minimal,
// veer ÷ http-proxy-3, …) is taken within a round and the median of those paired ratios reported with
// their min–max, and a goal's verdict is refused when that spread crosses it (targets.ts). With
// `--upstream both` (the default) the whole set runs behind the Node upstream, then behind nginx.
// It prints figures and never asserts. A published run (the defaults) takes ~30 min per upstream for
// all 11 subjects.

import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { positiveInt, runRounds, startHarness } from './harness.ts'
import { fixedRate, maxThroughput, type Target, type ThroughputResult } from './load.ts'
import { describeMachine } from './machine.ts'
import { writeNginxUpstreamConfig } from './nginx.ts'
import { type OtlpSink, startOtlpSink } from './otlp-sink.ts'
import { PUBLISHED, publishable } from './paired.ts'
import { checkAnswers, observeCanary } from './probe.ts'
import {
  cpuMicros,
  freePort,
  LOAD_CORE,
  logTail,
  type Managed,
  machineMicros,
  pinHarness,
  rssKiB,
  selfAndReapedMicros,
  startProcess,
  stopAll,
  stopProcess,
  waitReady,
} from './proc.ts'
import { renderMarkdown } from './report.ts'
import {
  medians,
  type Report,
  type RoundResult,
  type Settings,
  type SubjectResult,
  type UpstreamKind,
  type UpstreamRun,
} from './results.ts'
import {
  type Context,
  type Need,
  STICKY_HEADER,
  type Subject,
  startNodeUpstreams,
  subjects,
  Unavailable,
} from './subjects.ts'
import { checkTargets } from './targets.ts'
import { findNginx, findWrk } from './tools.ts'

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    install: { type: 'boolean', default: false },
    'no-wrk': { type: 'boolean', default: false },
    only: { type: 'string' },
    upstream: { type: 'string', default: 'both' },
    rounds: { type: 'string' },
    slices: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
if (args.help) {
  console.log(`usage: node bench/run.ts [--quick] [--upstream node|nginx|both] [--rounds N] [--install] [--no-wrk] [--only direct,veer,...]
  --quick     one round, 1 s warm-ups and 2 s phases: a smoke run, its figures are rough
  --upstream  what answers behind the proxies: node (bench/upstream.ts), nginx (fixed answers), or both
              in turn (default both; the goals are on nginx)
  --rounds N  rounds per upstream (default 5, env BENCH_ROUNDS); subjects forward, then reversed, alternating
  --install   apt-get install wrk and nginx when missing (otherwise a Node load generator is used,
              and the nginx subject and upstream are reported unavailable)
  --no-wrk    use the Node load generator even when wrk is there
  --slices N  start and warm up a round's subjects together, then measure the ~100 B headline in N
              slices taken in turn (A B C, A B C, …), so every pair spans the same stretch of time
              (default 3; 1: each subject's round alone, one phase after the other)
  --only      comma-separated subjects: ${subjects.map((s) => s.name).join(', ')}
  env BENCH_SECONDS (per measuring phase, default ${PUBLISHED.phaseSeconds}), BENCH_WARMUP (per body size, default ${PUBLISHED.warmupSeconds});
  figures are marked publishable only at ≥ ${PUBLISHED.rounds} rounds, ≥ ${PUBLISHED.warmupSeconds} s warm-ups and ≥ ${PUBLISHED.phaseSeconds} s phases`)
  process.exit(0)
}
const upstreamKinds: UpstreamKind[] | null =
  args.upstream === 'both'
    ? ['node', 'nginx']
    : args.upstream === 'node' || args.upstream === 'nginx'
      ? [args.upstream]
      : null
if (upstreamKinds === null) {
  console.error(`--upstream: expected node, nginx or both, got ${JSON.stringify(args.upstream)}`)
  process.exit(2)
}

const quick = args.quick
// Whole seconds (wrk). A subject's round: a warm-up and a measured phase per body size, the latency
// phase (+0.5 s lead-in), and about 2 s to start, probe and stop: ~36.5 s at the defaults, so
// 11 subjects × 5 rounds ≈ 33 min per upstream.
const phaseSeconds = quick ? 2 : positiveInt(process.env.BENCH_SECONDS, PUBLISHED.phaseSeconds, 60)
const warmupSeconds = quick ? 1 : positiveInt(process.env.BENCH_WARMUP, PUBLISHED.warmupSeconds, 60)
if (args.rounds !== undefined && !/^[1-9]\d?$/.test(args.rounds)) {
  console.error(`--rounds: expected a whole number from 1 to 99, got ${JSON.stringify(args.rounds)}`)
  process.exit(2)
}
const rounds = quick ? 1 : positiveInt(args.rounds ?? process.env.BENCH_ROUNDS, PUBLISHED.rounds, 99)
if (args.slices !== undefined && !/^[1-9]$/.test(args.slices)) {
  console.error(`--slices: expected a whole number from 1 to 9, got ${JSON.stringify(args.slices)}`)
  process.exit(2)
}
const slices = quick ? 1 : Number(args.slices ?? 3)
// wrk takes whole seconds: each slice a share of the measured phase, at least a second.
const sliceSeconds = Math.max(1, Math.round(phaseSeconds / slices))
const settingsBase = {
  rounds,
  quick,
  upstreams: upstreamKinds,
  throughputSeconds: phaseSeconds,
  slices,
  latencySeconds: phaseSeconds,
  warmupSeconds,
  connections: 50,
  rate: 2000,
  publishable: publishable(quick, rounds, warmupSeconds, phaseSeconds),
}

const wanted = args.only === undefined ? null : new Set(args.only.split(',').map((s) => s.trim()))
const chosen = subjects.filter((s) => wanted === null || wanted.has(s.name))
for (const name of wanted ?? []) {
  if (!subjects.some((s) => s.name === name)) console.error(`--only: no subject named ${name}, ignored`)
}

const roundSeconds = 2 * warmupSeconds + 3 * phaseSeconds + 2.5
const plannedMinutes = (upstreamKinds.length * rounds * chosen.length * roundSeconds) / 60
const harness = startHarness('veer-bench', Math.ceil(plannedMinutes * 1.5 + 5))
const { root, resultsDir, tmpDir, startedAt, log } = harness
log(
  `plan: ${chosen.length} subject(s) × ${rounds} round(s) × ${upstreamKinds.length} upstream(s) ` +
    `(${upstreamKinds.join(', ')}), ~${roundSeconds.toFixed(0)} s a subject-round: about ${Math.ceil(plannedMinutes)} min` +
    (settingsBase.publishable ? '' : ' (shorter than a published run: figures are rough)'),
)

const needs = new Set<Need>(chosen.flatMap((s) => s.needs ?? []))
const machine = describeMachine() // before pinning: availableParallelism() follows this process's affinity
const wrk = args['no-wrk']
  ? { available: false, version: null, note: '--no-wrk given' }
  : await findWrk(args.install)
const nginx =
  needs.has('nginx') || upstreamKinds.includes('nginx')
    ? await findNginx(args.install)
    : { available: false, path: null, version: null, note: 'not chosen' }
const { pinned: pinnedSelf, description: pinningText } = pinHarness('proxy')
const settings: Settings = {
  ...settingsBase,
  loadTool: wrk.available ? 'wrk -t1' : 'Node closed-loop generator (undici Pool)',
  pinning: pinningText,
}
log(`load: ${settings.loadTool} (wrk: ${wrk.note}); pinning: ${settings.pinning}`)

const sink: OtlpSink | null = needs.has('otlp-sink') ? await startOtlpSink() : null

/** The upstream processes of one kind: stable, canary and (when a subject needs it) a shadow. */
interface Upstreams {
  about: string
  stablePort: number
  canaryPort: number
  shadowPort: number | null
  /** whose CPU and RSS the `direct` row shows */
  stable: Managed
  procs: Managed[]
}

async function startUpstreams(kind: UpstreamKind): Promise<Upstreams> {
  const withShadow = needs.has('shadow-upstream')
  if (kind === 'node') {
    const { stable, canary, shadow } = await startNodeUpstreams(root, tmpDir, withShadow)
    return {
      about: 'bench/upstream.ts (node:http), one process per upstream, on the load core',
      stablePort: stable.port,
      canaryPort: canary.port,
      shadowPort: shadow?.port ?? null,
      stable: stable.proc,
      procs: [stable.proc, canary.proc, ...(shadow === null ? [] : [shadow.proc])],
    }
  }
  const servers = [
    { port: await freePort(), name: 'stable', bodyName: 'stable' },
    { port: await freePort(), name: 'canary', bodyName: 'canary' },
    ...(withShadow ? [{ port: await freePort(), name: 'shadow', bodyName: 'stable' }] : []),
  ]
  const files = writeNginxUpstreamConfig(join(tmpDir, 'nginx-upstream'), servers)
  // nginx started by root runs its worker as `nobody`, which must be able to walk into its prefix.
  if (process.getuid?.() === 0) chmodSync(tmpDir, 0o711)
  const proc = startProcess(
    'upstream-nginx',
    nginx.path!,
    ['-p', files.prefix, '-c', files.conf, '-e', 'stderr'],
    {
      core: LOAD_CORE,
      logPath: join(tmpDir, 'upstream-nginx.log'),
    },
  )
  for (const s of servers) await waitReady(proc, s.port, 10_000)
  return {
    about:
      `${nginx.version ?? 'nginx'}, one worker on the load core serving every upstream's port: ` +
      'a fixed 100 B answer (`return 200`) and a 16 KiB file (sendfile)',
    stablePort: servers[0]!.port,
    canaryPort: servers[1]!.port,
    shadowPort: servers[2]?.port ?? null,
    stable: proc,
    procs: [proc],
  }
}

/** A subject started and warmed up on ~100 B, its headline phase measured so far (in one or more slices). */
interface Prepared {
  subject: Subject
  running: Awaited<ReturnType<Subject['start']>>
  ctx: Context
  /** whose CPU and RSS the row shows: the proxy, or the upstream for `direct` */
  measured: Managed
  target: (path: string) => Target
  canaryObs: RoundResult['canary']
  observed0: Record<string, number> | null
  small: ThroughputResult
  cpuSmall: number
  upstreamCpuSmall: number
  wall0: number
  machine0: { busy: number; steal: number }
  ours0: number
}

/** The subjects' processes now running: the benchmark's own CPU, told apart from other load on the machine. */
const live = new Set<Managed>()
const upstreamCpu = (up: Upstreams) => up.procs.reduce((sum, p) => sum + cpuMicros(p.pid), 0)
const ours = (up: Upstreams) =>
  selfAndReapedMicros() + upstreamCpu(up) + [...live].reduce((sum, p) => sum + cpuMicros(p.pid), 0)
const tp = () => ({ connections: settings.connections, useWrk: wrk.available, tmpDir })

async function observe(
  p: Pick<Prepared, 'subject' | 'running' | 'ctx'>,
): Promise<Record<string, number> | null> {
  if (p.subject.observe === undefined) return null
  try {
    return await p.subject.observe(p.running, p.ctx)
  } catch (err) {
    log(`${p.subject.name}: observe failed (${(err as Error).message}); its counters are left out`)
    return null
  }
}

/** Start a subject, check its answers, warm it up on ~100 B. */
async function prepare(up: Upstreams, ctx: Context, subject: Subject): Promise<Prepared> {
  const running = await subject.start(ctx)
  if (running.proc !== null) live.add(running.proc)
  try {
    const origin = `http://127.0.0.1:${running.port}`
    const problem = await checkAnswers(origin, subject.sticky ? STICKY_HEADER : null)
    if (problem !== null) throw new Unavailable(`preflight: ${problem}`)
    const canaryObs = subject.sticky ? await observeCanary(origin, STICKY_HEADER, 200) : undefined
    const observed0 = await observe({ subject, running, ctx })
    const target = (path: string): Target => ({
      origin,
      path,
      sticky: subject.sticky ? { header: STICKY_HEADER, users: 1000 } : undefined,
    })
    const wall0 = performance.now()
    const machine0 = machineMicros()
    const ours0 = ours(up)
    // Each body size is warmed up on its own before it is measured (JIT, pools, buffers settle).
    await maxThroughput(target('/'), { ...tp(), seconds: settings.warmupSeconds })
    return {
      subject,
      running,
      ctx,
      measured: running.proc ?? up.stable,
      target,
      canaryObs,
      observed0,
      small: { tool: wrk.available ? 'wrk' : 'node', requests: 0, seconds: 0, rps: 0, errors: 0 },
      cpuSmall: 0,
      upstreamCpuSmall: 0,
      wall0,
      machine0,
      ours0,
    }
  } catch (err) {
    await stop(running)
    throw err
  }
}

async function stop(running: Prepared['running']): Promise<void> {
  if (running.proc === null) return
  live.delete(running.proc)
  await stopProcess(running.proc)
}

/** Measure `seconds` more of the ~100 B headline phase, added to what earlier slices measured. */
async function slice(up: Upstreams, p: Prepared, seconds: number): Promise<void> {
  const cpu0 = cpuMicros(p.measured.pid)
  const up0 = upstreamCpu(up)
  const r = await maxThroughput(p.target('/'), { ...tp(), seconds })
  p.cpuSmall += cpuMicros(p.measured.pid) - cpu0
  p.upstreamCpuSmall += upstreamCpu(up) - up0
  const s = p.small
  s.requests += r.requests
  s.seconds += r.seconds
  s.errors += r.errors
  s.rps = s.requests / Math.max(s.seconds, 1e-9)
}

/** The rest of the subject's round (16 KiB, latency), then stop it. */
async function finish(up: Upstreams, p: Prepared, round: number): Promise<RoundResult> {
  try {
    const { measured, target } = p
    await maxThroughput(target('/16k'), { ...tp(), seconds: settings.warmupSeconds })
    const cpu2 = cpuMicros(measured.pid)
    const big = await maxThroughput(target('/16k'), { ...tp(), seconds: settings.throughputSeconds })
    const cpu3 = cpuMicros(measured.pid)
    const latency = await fixedRate(target('/'), { rate: settings.rate, seconds: settings.latencySeconds })
    const rssMiB = rssKiB(measured.pid) / 1024
    const observed1 = await observe(p)
    const machine1 = machineMicros()
    const wallUs = (performance.now() - p.wall0) * 1000
    const otherCpuPct = (100 * Math.max(0, machine1.busy - p.machine0.busy - (ours(up) - p.ours0))) / wallUs
    const stealPct = (100 * (machine1.steal - p.machine0.steal)) / wallUs
    const proc = p.running.proc
    if (proc !== null && proc.exitedWith !== null) {
      throw new Unavailable(`exited (${proc.exitedWith}) during the round: ${logTail(proc)}`)
    }
    const served = Math.max(1, p.small.requests)
    return {
      round,
      small: p.small,
      big,
      latency,
      cpuUsPerReq: p.cpuSmall / served,
      cpuUsPerReqBig: (cpu3 - cpu2) / Math.max(1, big.requests),
      upstreamCpuUsPerReq: p.upstreamCpuSmall / served,
      rssMiB,
      otherCpuPct,
      stealPct,
      ...(p.canaryObs === undefined ? {} : { canary: p.canaryObs }),
      ...(p.observed0 === null || observed1 === null ? {} : { observed: difference(observed1, p.observed0) }),
    }
  } finally {
    await stop(p.running)
  }
}

/**
 * With --slices N (N ≥ 2) a round starts and warms up every subject first, then measures the ~100 B
 * headline in N slices taken in turn (A B C, A B C, …), so every subject's figure spans the same stretch
 * of the round and a slow minute of the VM falls on all of them; 16 KiB and latency follow one subject
 * at a time. Without it each subject runs its whole round alone (measure below).
 */
const prepared = new Map<string, Prepared | Error>()
async function prepareRound(up: Upstreams, ctx: Context, order: readonly Subject[]): Promise<void> {
  prepared.clear()
  for (const s of order) prepared.set(s.name, await prepare(up, ctx, s).catch((err: Error) => err))
  const ready = order.flatMap((s) => {
    const p = prepared.get(s.name)
    return p instanceof Error || p === undefined ? [] : [p]
  })
  for (let k = 0; k < slices; k++) {
    for (const p of ready) {
      if (prepared.get(p.subject.name) !== p) continue
      try {
        await slice(up, p, sliceSeconds)
      } catch (err) {
        prepared.set(p.subject.name, err as Error)
        await stop(p.running)
      }
    }
  }
}

async function measure(up: Upstreams, ctx: Context, subject: Subject, round: number): Promise<RoundResult> {
  if (slices < 2) {
    const p = await prepare(up, ctx, subject)
    await slice(up, p, settings.throughputSeconds).catch(async (err) => {
      await stop(p.running)
      throw err
    })
    return finish(up, p, round)
  }
  const p = prepared.get(subject.name)
  prepared.delete(subject.name)
  if (p === undefined) throw new Error(`${subject.name} was not prepared for round ${round}`)
  if (p instanceof Error) throw p
  return finish(up, p, round)
}

function difference(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [k, v] of Object.entries(after)) out[k] = v - (before[k] ?? 0)
  return out
}

const roundLine = (r: RoundResult) =>
  `${r.cpuUsPerReq.toFixed(1)} µs/req · ~100 B ${Math.round(r.small.rps)} req/s · ` +
  `16 KiB ${Math.round(r.big.rps)} req/s ${r.cpuUsPerReqBig.toFixed(1)} µs/req · ` +
  `p50 ${r.latency.p50Ms.toFixed(2)} ms p99 ${r.latency.p99Ms.toFixed(2)} ms · ${r.rssMiB.toFixed(0)} MiB · ` +
  (r.observed === undefined
    ? ''
    : `${Object.entries(r.observed)
        .map(([k, v]) => `${k} ${Math.round(v)}`)
        .join(', ')} · `) +
  `other CPU ${r.otherCpuPct.toFixed(0)}%`

const runs: UpstreamRun[] = []
for (const kind of upstreamKinds) {
  if (harness.interrupted()) break
  if (kind === 'nginx' && nginx.path === null) {
    log(`upstream nginx: unavailable (${nginx.note})`)
    runs.push({ upstream: kind, about: '', unavailable: nginx.note, subjects: [], targets: [] })
    continue
  }
  log(`--- upstream: ${kind} ---`)
  const up = await startUpstreams(kind)
  const ctx: Context = {
    root,
    tmpDir,
    stablePort: up.stablePort,
    canaryPort: up.canaryPort,
    shadowPort: up.shadowPort,
    otlp: sink,
    nginx: nginx.path,
  }
  const results: SubjectResult[] = chosen.map((s) => {
    const reason = s.unavailable(ctx)
    return reason === null
      ? { name: s.name, about: s.about, status: 'ok', rounds: [], medians: null }
      : { name: s.name, about: s.about, status: 'unavailable', reason, rounds: [], medians: null }
  })
  await runRounds(
    harness,
    settings.rounds,
    chosen,
    results,
    (s, round) => measure(up, ctx, s, round),
    roundLine,
    slices < 2 ? undefined : (order) => prepareRound(up, ctx, order),
  )
  for (const p of up.procs) await stopProcess(p)
  // A subject that failed in a later round still reports the rounds it completed.
  for (const r of results) r.medians = medians(r.rounds)
  runs.push({
    upstream: kind,
    about: up.about,
    subjects: results,
    targets: checkTargets(results, kind, settings.rate),
  })
}
await stopAll()
await sink?.close()

const report: Report = {
  date: new Date().toISOString(),
  machine,
  wrk: { used: wrk.available, version: wrk.version, note: wrk.note },
  nginx: { used: nginx.available, version: nginx.version, note: nginx.note },
  taskset: pinnedSelf,
  settings,
  runs,
  wallSeconds: (performance.now() - startedAt) / 1000,
}
const markdown = renderMarkdown(report)
mkdirSync(resultsDir, { recursive: true })
writeFileSync(join(resultsDir, 'latest.md'), markdown)
writeFileSync(join(resultsDir, 'latest.json'), `${JSON.stringify(report, null, 2)}\n`)
process.stdout.write(`\n${markdown}\n`)
log(`wrote bench/results/latest.md and bench/results/latest.json (${report.wallSeconds.toFixed(0)} s)`)
process.exit(0)
