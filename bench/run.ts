// veer benchmark harness:  node bench/run.ts [--quick] [--install] [--no-wrk] [--only a,b]
// Every subject is measured against the same upstream in one run, round after round (interleaved), and
// the medians are compared with `direct` and `http-proxy-3`. It prints figures and never asserts.
// Env: BENCH_ROUNDS (default 3), BENCH_SECONDS (seconds per measuring phase; default 3 s max throughput
// per body size and 3 s fixed-rate latency, which keeps 10 subjects × 3 rounds at about 6 minutes).

import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { positiveInt, runRounds, startHarness } from './harness.ts'
import { fixedRate, maxThroughput, type Target } from './load.ts'
import { describeMachine } from './machine.ts'
import { type OtlpSink, startOtlpSink } from './otlp-sink.ts'
import { checkAnswers, observeCanary } from './probe.ts'
import {
  cpuMicros,
  logTail,
  machineMicros,
  pinHarness,
  rssKiB,
  selfAndReapedMicros,
  stopAll,
  stopProcess,
} from './proc.ts'
import { renderMarkdown } from './report.ts'
import { medians, type Report, type RoundResult, type Settings, type SubjectResult } from './results.ts'
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

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    install: { type: 'boolean', default: false },
    'no-wrk': { type: 'boolean', default: false },
    only: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
if (args.help) {
  console.log(`usage: node bench/run.ts [--quick] [--install] [--no-wrk] [--only direct,veer,...]
  --quick     one short round (2 s phases) for smoke testing
  --install   apt-get install wrk and nginx when missing (otherwise a Node load generator is used,
              and the nginx subject is reported unavailable)
  --no-wrk    use the Node load generator even when wrk is there
  --only      comma-separated subjects: ${subjects.map((s) => s.name).join(', ')}
  env BENCH_ROUNDS (default 3), BENCH_SECONDS (per measuring phase; default 3 s per body size, 3 s latency)`)
  process.exit(0)
}

const harness = startHarness('veer-bench', 20)
const { root, resultsDir, tmpDir, startedAt, log } = harness

const quick = args.quick
// Whole seconds (wrk). A subject's round is warm-up + 2 throughput phases + latency (+0.5 s lead-in) and
// about a second to start, probe and stop: ~11.5 s at the defaults, so 10 subjects × 3 rounds ≈ 6 min.
const phaseSeconds = quick ? 2 : positiveInt(process.env.BENCH_SECONDS, 0, 60)
const settingsBase = {
  rounds: quick ? 1 : positiveInt(process.env.BENCH_ROUNDS, 3, 20),
  quick,
  throughputSeconds: phaseSeconds || 3,
  latencySeconds: phaseSeconds || 3,
  warmupSeconds: 1,
  connections: 50,
  rate: 2000,
}

const wanted = args.only === undefined ? null : new Set(args.only.split(',').map((s) => s.trim()))
const chosen = subjects.filter((s) => wanted === null || wanted.has(s.name))
for (const name of wanted ?? []) {
  if (!subjects.some((s) => s.name === name)) log(`--only: no subject named ${name}, ignored`)
}

const needs = new Set<Need>(chosen.flatMap((s) => s.needs ?? []))
const machine = describeMachine() // before pinning: availableParallelism() follows this process's affinity
const wrk = args['no-wrk']
  ? { available: false, version: null, note: '--no-wrk given' }
  : await findWrk(args.install)
const nginx = needs.has('nginx')
  ? await findNginx(args.install)
  : { available: false, path: null, version: null, note: 'not chosen' }
const { pinned: pinnedSelf, description: pinningText } = pinHarness('proxy')
const settings: Settings = {
  ...settingsBase,
  loadTool: wrk.available ? 'wrk -t1' : 'Node closed-loop generator (undici Pool)',
  pinning: pinningText,
}
log(`load: ${settings.loadTool} (wrk: ${wrk.note}); pinning: ${settings.pinning}`)

const stable = await startUpstream(root, tmpDir, 'stable')
const canary = await startUpstream(root, tmpDir, 'canary')
// The shadow upstream answers what stable answers (bodies included), so comparisons match.
const shadow = needs.has('shadow-upstream') ? await startUpstream(root, tmpDir, 'shadow', 'stable') : null
const sink: OtlpSink | null = needs.has('otlp-sink') ? await startOtlpSink() : null
const upstreams = [stable, canary, ...(shadow === null ? [] : [shadow])]
const ctx: Context = {
  root,
  tmpDir,
  stablePort: stable.port,
  canaryPort: canary.port,
  shadowPort: shadow?.port ?? null,
  otlp: sink,
  nginx: nginx.path,
}
const upstreamCpu = () => upstreams.reduce((sum, u) => sum + cpuMicros(u.proc.pid), 0)

const results: SubjectResult[] = chosen.map((s) => {
  const reason = s.unavailable(ctx)
  return reason === null
    ? { name: s.name, about: s.about, status: 'ok', rounds: [], medians: null }
    : { name: s.name, about: s.about, status: 'unavailable', reason, rounds: [], medians: null }
})

async function measure(subject: Subject, round: number): Promise<RoundResult> {
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
    await maxThroughput(target('/'), { ...tp, seconds: settings.warmupSeconds })

    // `direct` has no proxy: its CPU/RSS columns show the upstream's own figures.
    const measured = running.proc ?? stable.proc
    const cpu0 = cpuMicros(measured.pid)
    const up0 = upstreamCpu()
    const small = await maxThroughput(target('/'), { ...tp, seconds: settings.throughputSeconds })
    const cpu1 = cpuMicros(measured.pid)
    const up1 = upstreamCpu()
    const big = await maxThroughput(target('/16k'), { ...tp, seconds: settings.throughputSeconds })
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

await runRounds(
  harness,
  settings.rounds,
  chosen,
  results,
  measure,
  (r) =>
    `~100 B ${Math.round(r.small.rps)} req/s · 16 KiB ${Math.round(r.big.rps)} req/s · ` +
    `p50 ${r.latency.p50Ms.toFixed(2)} ms p99 ${r.latency.p99Ms.toFixed(2)} ms · ` +
    `${r.cpuUsPerReq.toFixed(1)} µs/req · ${r.rssMiB.toFixed(0)} MiB · ` +
    (r.observed === undefined
      ? ''
      : `${Object.entries(r.observed)
          .map(([k, v]) => `${k} ${Math.round(v)}`)
          .join(', ')} · `) +
    `other CPU ${r.otherCpuPct.toFixed(0)}%`,
)
await stopAll()
await sink?.close()

// A subject that failed in a later round still reports the rounds it completed.
for (const r of results) r.medians = medians(r.rounds)

const report: Report = {
  date: new Date().toISOString(),
  machine,
  wrk: { used: wrk.available, version: wrk.version, note: wrk.note },
  nginx: { used: nginx.available, version: nginx.version, note: nginx.note },
  taskset: pinnedSelf,
  settings,
  subjects: results,
  targets: checkTargets(results, settings.rate),
  wallSeconds: (performance.now() - startedAt) / 1000,
}
const markdown = renderMarkdown(report)
mkdirSync(resultsDir, { recursive: true })
writeFileSync(join(resultsDir, 'latest.md'), markdown)
writeFileSync(join(resultsDir, 'latest.json'), `${JSON.stringify(report, null, 2)}\n`)
process.stdout.write(`\n${markdown}\n`)
log(`wrote bench/results/latest.md and bench/results/latest.json (${report.wallSeconds.toFixed(0)} s)`)
process.exit(0)
