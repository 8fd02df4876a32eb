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
import { fixedRate, maxThroughput, type Target } from './load.ts'
import { describeMachine } from './machine.ts'
import { writeNginxUpstreamConfig } from './nginx.ts'
import { type OtlpSink, startOtlpSink } from './otlp-sink.ts'
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
  startUpstream,
  subjects,
  Unavailable,
} from './subjects.ts'
import { checkTargets } from './targets.ts'
import { findNginx, findWrk } from './tools.ts'

/** What a published run uses at least (issue 18): shorter runs say their figures are rough. */
const PUBLISHED = { rounds: 5, warmupSeconds: 8, phaseSeconds: 6 }

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    install: { type: 'boolean', default: false },
    'no-wrk': { type: 'boolean', default: false },
    only: { type: 'string' },
    upstream: { type: 'string', default: 'both' },
    rounds: { type: 'string' },
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
const settingsBase = {
  rounds,
  quick,
  upstreams: upstreamKinds,
  throughputSeconds: phaseSeconds,
  latencySeconds: phaseSeconds,
  warmupSeconds,
  connections: 50,
  rate: 2000,
  publishable:
    !quick &&
    rounds >= PUBLISHED.rounds &&
    phaseSeconds >= PUBLISHED.phaseSeconds &&
    warmupSeconds >= PUBLISHED.warmupSeconds,
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
    const stable = await startUpstream(root, tmpDir, 'stable')
    const canary = await startUpstream(root, tmpDir, 'canary')
    // The shadow upstream answers what stable answers (bodies included), so comparisons match.
    const shadow = withShadow ? await startUpstream(root, tmpDir, 'shadow', 'stable') : null
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

async function measure(up: Upstreams, ctx: Context, subject: Subject, round: number): Promise<RoundResult> {
  const upstreamCpu = () => up.procs.reduce((sum, p) => sum + cpuMicros(p.pid), 0)
  const running = await subject.start(ctx)
  try {
    const origin = `http://127.0.0.1:${running.port}`
    const problem = await checkAnswers(origin, subject.sticky ? STICKY_HEADER : null)
    if (problem !== null) throw new Unavailable(`preflight: ${problem}`)
    const canaryObs = subject.sticky ? await observeCanary(origin, STICKY_HEADER, 200) : undefined
    const observe = async (): Promise<Record<string, number> | null> => {
      if (subject.observe === undefined) return null
      try {
        return await subject.observe(running, ctx)
      } catch (err) {
        log(`${subject.name}: observe failed (${(err as Error).message}); its counters are left out`)
        return null
      }
    }
    const observed0 = await observe()

    const target = (path: string): Target => ({
      origin,
      path,
      sticky: subject.sticky ? { header: STICKY_HEADER, users: 1000 } : undefined,
    })
    const tp = { connections: settings.connections, useWrk: wrk.available, tmpDir }
    // Everything the benchmark itself runs, to tell it apart from other load on the machine.
    const ours = () =>
      selfAndReapedMicros() + upstreamCpu() + (running.proc === null ? 0 : cpuMicros(running.proc.pid))
    const wall0 = performance.now()
    const machine0 = machineMicros()
    const ours0 = ours()

    // `direct` has no proxy: its CPU/RSS columns show the upstream's own figures.
    const measured = running.proc ?? up.stable
    // Each body size is warmed up on its own before it is measured (JIT, pools, buffers settle).
    await maxThroughput(target('/'), { ...tp, seconds: settings.warmupSeconds })
    const cpu0 = cpuMicros(measured.pid)
    const up0 = upstreamCpu()
    const small = await maxThroughput(target('/'), { ...tp, seconds: settings.throughputSeconds })
    const cpu1 = cpuMicros(measured.pid)
    const up1 = upstreamCpu()
    await maxThroughput(target('/16k'), { ...tp, seconds: settings.warmupSeconds })
    const cpu2 = cpuMicros(measured.pid)
    const big = await maxThroughput(target('/16k'), { ...tp, seconds: settings.throughputSeconds })
    const cpu3 = cpuMicros(measured.pid)
    const latency = await fixedRate(target('/'), { rate: settings.rate, seconds: settings.latencySeconds })
    const rssMiB = rssKiB(measured.pid) / 1024
    const observed1 = await observe()
    const machine1 = machineMicros()
    const wallUs = (performance.now() - wall0) * 1000
    const otherCpuPct = (100 * Math.max(0, machine1.busy - machine0.busy - (ours() - ours0))) / wallUs
    const stealPct = (100 * (machine1.steal - machine0.steal)) / wallUs

    if (running.proc !== null && running.proc.exitedWith !== null) {
      throw new Unavailable(`exited (${running.proc.exitedWith}) during the round: ${logTail(running.proc)}`)
    }
    const served = Math.max(1, small.requests)
    return {
      round,
      small,
      big,
      latency,
      cpuUsPerReq: (cpu1 - cpu0) / served,
      cpuUsPerReqBig: (cpu3 - cpu2) / Math.max(1, big.requests),
      upstreamCpuUsPerReq: (up1 - up0) / served,
      rssMiB,
      otherCpuPct,
      stealPct,
      ...(canaryObs === undefined ? {} : { canary: canaryObs }),
      ...(observed0 === null || observed1 === null ? {} : { observed: difference(observed1, observed0) }),
    }
  } finally {
    if (running.proc !== null) await stopProcess(running.proc)
  }
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
