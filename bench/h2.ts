// veer HTTP/2 benchmark:  node bench/h2.ts [--quick] [--rounds N] [--seconds N] [--warmup N] [--only a,b]   (--help)
// h2load (cleartext, prior knowledge) → proxy → a node:http2 h2c upstream (bench/h2-upstream.ts), two
// workloads: GET ~100 B, and gRPC-shaped unary calls (POST of a 5-byte-framed message, te: trailers,
// answered with a framed message and grpc-status 0 in trailers). Every subject is started fresh in front of
// the same upstream for every round, subjects interleaved (forward in odd rounds, reversed in even ones);
// each workload is warmed up (8 s) right before its measured phase (6 s). CPU µs per request of the proxy
// process is the headline beside req/s; every ratio against `node-h2-proxy` (a minimal node:http2 proxy,
// the Node floor) is taken within a round and the median of those paired ratios reported with their
// min–max, and the goal's verdict is refused when that spread crosses it (targets.ts, as bench/run.ts).
// Prints figures and writes bench/results/h2.md and .json; never asserts. A published run (the defaults,
// 5 rounds) takes ~2.5 min per subject: ~8 min for node-h2-proxy,undici-h2-proxy,veer-h2c, ~13 min for
// all 5; under a minute with --quick.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { connect, type IncomingHttpHeaders, type IncomingHttpStatusHeader } from 'node:http2'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { GRPC_BODY, GRPC_HEADERS, GRPC_PATH, startH2Upstream, writeGrpcBody } from './h2-pieces.ts'
import { type H2loadResult, h2load } from './h2load.ts'
import { writeHaproxyConfig } from './haproxy.ts'
import { positiveInt, runRounds, startHarness } from './harness.ts'
import { describeMachine, type Machine, machineLine } from './machine.ts'
import { PUBLISHED, publishable } from './paired.ts'
import {
  cpuMicros,
  freePort,
  logTail,
  machineMicros,
  PROXY_CORE,
  pinHarness,
  rssKiB,
  selfAndReapedMicros,
  startProcess,
  stopAll,
  stopProcess,
} from './proc.ts'
import { fixed, int, ms, noiseNote, pairedCell, roughNote, row, spreadCell, targetsTable } from './report.ts'
import { median } from './stats.ts'
import {
  type Context,
  getText,
  type Running,
  started,
  startNodeProxy,
  startVeer,
  Unavailable,
} from './subjects.ts'
import { pairedCheck, type TargetCheck, times } from './targets.ts'
import { findH2load, findHaproxy } from './tools.ts'

const FLOOR = 'node-h2-proxy'
const VEER = 'veer-h2c'
const UNDICI_FLOOR = 'undici-h2-proxy'
/** allSubjects' names, in their order (for --help and the watchdog, before the subjects can be built) */
const SUBJECT_NAMES = [FLOOR, UNDICI_FLOOR, VEER, 'veer-h2c-nolog', 'haproxy-h2']
/** veer-h2c's req/s ≥ 0.85× the Node floor's, on both workloads */
const GOAL = { op: '≥', value: 0.85 } as const

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    seconds: { type: 'string' },
    warmup: { type: 'string' },
    clients: { type: 'string' },
    streams: { type: 'string' },
    only: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
if (args.help) {
  console.log(`usage: node bench/h2.ts [--quick] [--rounds N] [--seconds N] [--warmup N] [--clients C] [--streams M] [--only a,b]
  --quick        one round, 1 s warm-ups, 2 s phases: a smoke run, figures rough (flags given still apply)
  --rounds N     rounds (default ${PUBLISHED.rounds}); subjects forward, then reversed, alternating
  --seconds N    seconds per measured workload (default ${PUBLISHED.phaseSeconds}; h2load takes whole seconds)
  --warmup N     seconds of warm-up of each workload right before it is measured (default ${PUBLISHED.warmupSeconds})
  --clients C    h2load connections (default 16)
  --streams M    h2load streams in flight per connection (default 10)
  --only         comma-separated subjects: ${SUBJECT_NAMES.join(', ')}
  figures are marked publishable only at ≥ ${PUBLISHED.rounds} rounds, ≥ ${PUBLISHED.warmupSeconds} s warm-ups and ≥ ${PUBLISHED.phaseSeconds} s phases, without --quick`)
  process.exit(0)
}

const quick = args.quick
const rounds = positiveInt(args.rounds, quick ? 1 : PUBLISHED.rounds, 20)
const seconds = positiveInt(args.seconds, quick ? 2 : PUBLISHED.phaseSeconds, 60)
const warmupSeconds = positiveInt(args.warmup, quick ? 1 : PUBLISHED.warmupSeconds, 60)
const settings = {
  rounds,
  quick,
  publishable: publishable(quick, rounds, warmupSeconds, seconds),
  seconds,
  warmupSeconds,
  clients: positiveInt(args.clients, 16, 1000),
  streams: positiveInt(args.streams, 10, 1000),
  pinning: '',
}

const wanted = args.only === undefined ? null : new Set(args.only.split(',').map((s) => s.trim()))
const subjectCount =
  wanted === null ? SUBJECT_NAMES.length : SUBJECT_NAMES.filter((n) => wanted.has(n)).length
// A subject's round: a warm-up and a measured phase per workload, and about 3 s to start, probe and stop.
const roundSeconds = 2 * (warmupSeconds + seconds) + 3
const plannedMinutes = (rounds * subjectCount * roundSeconds) / 60
const harness = startHarness('veer-bench-h2', Math.ceil(plannedMinutes * 1.5 + 5))
const { root, resultsDir, tmpDir, startedAt, log } = harness
log(
  `plan: ${subjectCount} subject(s) × ${rounds} round(s), ~${roundSeconds} s a subject-round: about ` +
    `${Math.ceil(plannedMinutes)} min` +
    (settings.publishable ? '' : ' (shorter than a published run: figures are rough)'),
)

const machine = describeMachine() // before pinning: availableParallelism() follows this process's affinity
const h2loadTool = await findH2load()
if (!h2loadTool.available) {
  log(`h2load: ${h2loadTool.note}; nothing to measure with`)
  process.exit(1)
}
const haproxy = await findHaproxy()
settings.pinning = pinHarness('the proxy').description
log(
  `load: h2load ${h2loadTool.version ?? ''} -c${settings.clients} -m${settings.streams}; pinning: ${settings.pinning}`,
)

// ---------- the upstream ----------

const upstream = await startH2Upstream(root, tmpDir)
const ctx: Context = {
  root,
  tmpDir,
  stablePort: upstream.port,
  canaryPort: upstream.port,
  shadowPort: null,
  otlp: null,
  nginx: null,
}
const h2cUpstream = `h2c://127.0.0.1:${upstream.port}`

const grpcBodyFile = writeGrpcBody(tmpDir)

// ---------- subjects ----------

interface H2Subject {
  name: string
  about: string
  /** why it cannot run at all; null when it can */
  unavailable(): string | null
  start(): Promise<Running>
}

const allSubjects: readonly H2Subject[] = [
  {
    name: FLOOR,
    about:
      'node:http2 h2c server forwarding every stream over ONE node:http2 client session, bodies piped, trailers passed on (the Node floor)',
    unavailable: () => null,
    start: () => startNodeProxy(FLOOR, ctx, 'bench/baselines/node-h2-proxy.ts'),
  },
  {
    name: UNDICI_FLOOR,
    about:
      'the same node:http2 server sending every stream through an undici Pool (h2c, veer\u2019s pool defaults), bodies as async iterables, trailers passed on (the undici floor: what veer\u2019s upstream client costs by itself)',
    unavailable: () => null,
    start: () => startNodeProxy(UNDICI_FLOOR, ctx, 'bench/baselines/undici-h2-proxy.ts'),
  },
  {
    name: VEER,
    about: 'veer proxy --stable h2c://… (quick-start flags: metrics, analysis window, access log on)',
    unavailable: () => null,
    start: () => startVeer(VEER, ctx, { flags: () => ['--stable', h2cUpstream] }),
  },
  {
    name: 'veer-h2c-nolog',
    about: 'veer, the same with access log off (YAML config `log: { access: false }`)',
    unavailable: () => null,
    start: () =>
      startVeer('veer-h2c-nolog', ctx, {
        config: (_ctx, port, admin) =>
          [
            `listen: 127.0.0.1:${port}`,
            `admin: 127.0.0.1:${admin}`,
            'log: { access: false }',
            'routes:',
            '  - name: default',
            `    stable: { url: "${h2cUpstream}" }`,
            '',
          ].join('\n'),
      }),
  },
  {
    name: 'haproxy-h2',
    about: `haproxy ${haproxy.version ?? ''}, 1 thread, \`bind … proto h2\` to \`server … proto h2\`, http-reuse always (the C reference)`,
    unavailable: () => (haproxy.available ? null : `haproxy ${haproxy.note}`),
    async start() {
      const port = await freePort()
      const conf = writeHaproxyConfig(join(tmpDir, 'haproxy'), port, upstream.port)
      const proc = startProcess('haproxy-h2', haproxy.path!, ['-db', '-f', conf], {
        core: PROXY_CORE,
        logPath: join(tmpDir, 'haproxy.log'),
      })
      await started(proc, port, 10_000)
      return { port, proc }
    },
  },
]

const chosen = allSubjects.filter((s) => wanted === null || wanted.has(s.name))
for (const name of wanted ?? []) {
  if (!allSubjects.some((s) => s.name === name)) log(`--only: no subject named ${name}, ignored`)
}

// ---------- one round of one subject ----------

interface Phase extends H2loadResult {
  /** proxy utime+stime over the phase divided by the requests answered in it */
  cpuUsPerReq: number
  /** the same over the phase's wall time, in % of one core: near 100 the proxy is the bottleneck */
  proxyCpuPct: number
  /** the upstream's CPU per request over the phase */
  upstreamCpuUsPerReq: number
}

interface H2Round {
  round: number
  get: Phase
  grpc: Phase
  /** proxy RSS after the round */
  rssMiB: number
  /** CPU used by processes other than the benchmark's own during the round, in % of one core */
  otherCpuPct: number
  stealPct: number
  /** streams h2load left unfinished at its stops (warm-ups included): reset by it, not by the proxy */
  abandoned: number
  /** veer only: its own record of the answers that were not 2xx over the round (warm-ups included) */
  veer?: VeerCounts
}

interface VeerCounts {
  /** veer_requests_total series whose code is not 2xx: labels (route and version left out) → count */
  notOk: Record<string, number>
  /** the access log's `error` field values → count (empty with the access log off) */
  logErrors: Record<string, number>
}

interface H2Medians {
  getRps: number
  getMeanMs: number
  getCpuUsPerReq: number
  grpcRps: number
  grpcMeanMs: number
  grpcCpuUsPerReq: number
  rssMiB: number
  errors: number
}

interface H2SubjectResult {
  name: string
  about: string
  status: 'ok' | 'unavailable'
  reason?: string
  rounds: H2Round[]
  medians: H2Medians | null
}

/** One request on its own h2c session: status, the fields that matter, trailers and body length. */
function probe(
  origin: string,
  headers: Record<string, string>,
  body: Buffer | null,
): Promise<{
  head: IncomingHttpHeaders & IncomingHttpStatusHeader
  trailers: IncomingHttpHeaders | null
  bytes: number
}> {
  return new Promise((resolve, reject) => {
    const session = connect(origin)
    const timer = setTimeout(() => session.destroy(new Error('timeout after 3 s')), 3000)
    session.once('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    const req = session.request(headers, { endStream: body === null })
    let head: IncomingHttpHeaders & IncomingHttpStatusHeader = {}
    let trailers: IncomingHttpHeaders | null = null
    let bytes = 0
    req.once('response', (h) => (head = h))
    req.once('trailers', (t) => (trailers = t))
    req.on('data', (d: Buffer) => (bytes += d.length))
    req.once('error', (err) => {
      clearTimeout(timer)
      session.destroy()
      reject(err)
    })
    req.once('end', () => {
      clearTimeout(timer)
      session.close()
      resolve({ head, trailers, bytes })
    })
    if (body !== null) req.end(body)
  })
}

/** Both workloads answer as the upstream does through the subject; the problem, or null. */
async function preflight(origin: string): Promise<string | null> {
  try {
    const get = await probe(origin, { ':method': 'GET', ':path': '/' }, null)
    if (get.head[':status'] !== 200 || get.head['x-upstream'] !== 'stable' || get.bytes !== 100) {
      return `GET / answered ${get.head[':status']} (x-upstream ${get.head['x-upstream']}, ${get.bytes} B)`
    }
    const grpc = await probe(
      origin,
      { ':method': 'POST', ':path': GRPC_PATH, 'content-type': 'application/grpc', te: 'trailers' },
      GRPC_BODY,
    )
    const status = grpc.trailers?.['grpc-status'] ?? grpc.head['grpc-status']
    if (grpc.head[':status'] !== 200 || status !== '0' || grpc.trailers === null || grpc.bytes === 0) {
      return (
        `gRPC call answered ${grpc.head[':status']}, grpc-status ${status ?? 'missing'}, ` +
        `${grpc.trailers === null ? 'no trailers' : 'trailers'}, ${grpc.bytes} B` +
        (grpc.head['grpc-message'] === undefined ? '' : ` (grpc-message ${grpc.head['grpc-message']})`)
      )
    }
    return null
  } catch (err) {
    return (err as Error).message
  }
}

async function measure(subject: H2Subject, round: number): Promise<H2Round> {
  const running = await subject.start()
  const proc = running.proc!
  let result: H2Round
  try {
    const origin = `http://127.0.0.1:${running.port}`
    const problem = await preflight(origin)
    if (problem !== null) throw new Unavailable(`preflight: ${problem}`)
    const load = { clients: settings.clients, streams: settings.streams }
    const get = { ...load, url: `${origin}/` }
    const grpc = { ...load, url: `${origin}${GRPC_PATH}`, headers: GRPC_HEADERS, dataFile: grpcBodyFile }
    // Everything the benchmark itself runs, to tell it apart from other load on the machine.
    const ours = () => selfAndReapedMicros() + cpuMicros(upstream.proc.pid) + cpuMicros(proc.pid)
    const wall0 = performance.now()
    const machine0 = machineMicros()
    const ours0 = ours()
    const warm: H2loadResult[] = []

    const phase = async (opts: Parameters<typeof h2load>[0]): Promise<Phase> => {
      const cpu0 = cpuMicros(proc.pid)
      const up0 = cpuMicros(upstream.proc.pid)
      const t0 = performance.now()
      const r = await h2load(opts)
      const cpu = cpuMicros(proc.pid) - cpu0
      const served = Math.max(1, r.requests)
      return {
        ...r,
        cpuUsPerReq: cpu / served,
        proxyCpuPct: (100 * cpu) / ((performance.now() - t0) * 1000),
        upstreamCpuUsPerReq: (cpuMicros(upstream.proc.pid) - up0) / served,
      }
    }
    // Each workload is warmed up right before it is measured (JIT, sessions, buffers settle on it).
    warm.push(await h2load({ ...get, seconds: settings.warmupSeconds }))
    const getPhase = await phase({ ...get, seconds: settings.seconds })
    warm.push(await h2load({ ...grpc, seconds: settings.warmupSeconds }))
    const grpcPhase = await phase({ ...grpc, seconds: settings.seconds })
    const rssMiB = rssKiB(proc.pid) / 1024
    const machine1 = machineMicros()
    const wallUs = (performance.now() - wall0) * 1000
    if (proc.exitedWith !== null) {
      throw new Unavailable(`exited (${proc.exitedWith}) during the round: ${logTail(proc)}`)
    }
    const notOk = running.admin === undefined ? null : await veerNotOk(running.admin)
    result = {
      round,
      get: getPhase,
      grpc: grpcPhase,
      rssMiB,
      otherCpuPct: (100 * Math.max(0, machine1.busy - machine0.busy - (ours() - ours0))) / wallUs,
      stealPct: (100 * (machine1.steal - machine0.steal)) / wallUs,
      abandoned: warm.reduce((a, r) => a + r.abandoned, 0) + getPhase.abandoned + grpcPhase.abandoned,
    }
    if (notOk !== null) result.veer = { notOk, logErrors: {} }
  } finally {
    await stopProcess(proc)
  }
  // Read once veer has stopped, so its log is complete.
  if (result.veer !== undefined) result.veer.logErrors = logErrors(proc.logPath)
  return result
}

/** veer_requests_total from veer's /metrics, the series whose code is not 2xx (preflight included). */
async function veerNotOk(admin: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  try {
    const text = await getText(`http://127.0.0.1:${admin}/metrics`)
    for (const m of text.matchAll(/^veer_requests_total\{([^}]*)\} (\S+)$/gm)) {
      const labels = m[1]!.split(',').filter((l) => !/^(route|version)=/.test(l))
      if (labels.some((l) => /^code="2\d\d"$/.test(l))) continue
      out[labels.join(',')] = Number(m[2])
    }
  } catch (err) {
    out[`metrics unreadable: ${(err as Error).message}`] = Number.NaN
  }
  return out
}

/** The access log's `"error":"…"` values and how often each came (a log is a few MB at most). */
function logErrors(path: string): Record<string, number> {
  const out: Record<string, number> = {}
  try {
    for (const m of readFileSync(path, 'utf8').matchAll(/"error":"([^"]*)"/g))
      out[m[1]!] = (out[m[1]!] ?? 0) + 1
  } catch {
    // no log
  }
  return out
}

function mediansOf(rounds: readonly H2Round[]): H2Medians | null {
  if (rounds.length === 0) return null
  const m = (f: (r: H2Round) => number) => median(rounds.map(f))
  return {
    getRps: m((r) => r.get.rps),
    getMeanMs: m((r) => r.get.meanMs),
    getCpuUsPerReq: m((r) => r.get.cpuUsPerReq),
    grpcRps: m((r) => r.grpc.rps),
    grpcMeanMs: m((r) => r.grpc.meanMs),
    grpcCpuUsPerReq: m((r) => r.grpc.cpuUsPerReq),
    rssMiB: m((r) => r.rssMiB),
    errors: rounds.reduce((a, r) => a + r.get.errors + r.grpc.errors, 0),
  }
}

// ---------- the run ----------

const results: H2SubjectResult[] = chosen.map((s) => {
  const reason = s.unavailable()
  return reason === null
    ? { name: s.name, about: s.about, status: 'ok', rounds: [], medians: null }
    : { name: s.name, about: s.about, status: 'unavailable', reason, rounds: [], medians: null }
})
await runRounds(
  harness,
  settings.rounds,
  chosen,
  results,
  measure,
  (r) =>
    `GET ${Math.round(r.get.rps)} req/s ${r.get.cpuUsPerReq.toFixed(1)} µs/req mean ${r.get.meanMs.toFixed(2)} ms · ` +
    `gRPC ${Math.round(r.grpc.rps)} req/s ${r.grpc.cpuUsPerReq.toFixed(1)} µs/req mean ${r.grpc.meanMs.toFixed(2)} ms · ` +
    `errors ${r.get.errors + r.grpc.errors} · ${r.rssMiB.toFixed(0)} MiB · other CPU ${r.otherCpuPct.toFixed(0)}%`,
)
await stopAll()

// A subject that failed in a later round still reports the rounds it completed.
for (const r of results) r.medians = mediansOf(r.rounds)

// ---------- the report ----------

type Workload = readonly [label: string, rps: (r: H2Round) => number, cpu: (r: H2Round) => number]
const WORKLOADS: readonly Workload[] = [
  ['GET ~100 B', (r) => r.get.rps, (r) => r.get.cpuUsPerReq],
  ['gRPC unary', (r) => r.grpc.rps, (r) => r.grpc.cpuUsPerReq],
]

/**
 * Every line is `a ÷ b` paired within each round, the median of those ratios with their min–max; the
 * goal (veer's req/s ≥ 0.85× the Node floor's) reads met or missed only when every round agrees.
 */
function checkTargets(subjects: readonly H2SubjectResult[]): TargetCheck[] {
  const rounds = (name: string) => subjects.find((s) => s.name === name)?.rounds ?? null
  const ran = (name: string) => subjects.some((s) => s.name === name)
  const out: TargetCheck[] = []
  const line = (
    a: string,
    b: string,
    target: string,
    figure: (r: H2Round) => number,
    opts: { goal?: typeof GOAL; note?: string } = {},
  ) => {
    const check = pairedCheck(rounds(a), rounds(b), target, figure, { ...opts, needs: `needs ${a} and ${b}` })
    if (check !== null) out.push(check)
  }
  for (const name of [VEER, 'veer-h2c-nolog']) {
    if (!ran(name)) continue
    for (const [label, rps, cpu] of WORKLOADS) {
      line(name, FLOOR, `${name} ÷ ${FLOOR}, CPU µs/req ${label}`, cpu, {
        note: 'lower is better',
      })
      line(name, FLOOR, `${name} ÷ ${FLOOR}, req/s ${label}`, rps, { goal: GOAL })
    }
  }
  const others = [
    [UNDICI_FLOOR, 'what veer adds to its upstream client'],
    ['haproxy-h2', 'the C reference'],
  ] as const
  for (const [other, note] of others) {
    for (const [label, rps, cpu] of WORKLOADS) {
      line(VEER, other, `${VEER} ÷ ${other}, CPU µs/req ${label}`, cpu, { note })
      line(VEER, other, `${VEER} ÷ ${other}, req/s ${label}`, rps)
    }
  }
  return out
}

function mainTable(subjects: readonly H2SubjectResult[]): string[] {
  const floor = subjects.find((s) => s.name === FLOOR && s.rounds.length > 0)
  const head = [
    'subject',
    'GET CPU µs/req',
    'CPU ÷ floor',
    'GET req/s',
    '÷ floor',
    'GET mean ms',
    'gRPC CPU µs/req',
    'CPU ÷ floor',
    'gRPC req/s',
    '÷ floor',
    'gRPC mean ms',
    'RSS MiB',
    'errors',
  ]
  const lines = [row(head), row(head.map((_, i) => (i === 0 ? '---' : '---:')))]
  for (const s of subjects) {
    const m = s.medians
    if (m === null) {
      const reason = (s.reason ?? '').replaceAll('|', '/').replaceAll('\n', ' ').slice(0, 200)
      lines.push(row([s.name, `unavailable: ${reason}`, ...head.slice(2).map(() => '')]))
      continue
    }
    const cells = WORKLOADS.flatMap(([, rps, cpu], i) => [
      spreadCell(s.rounds.map(cpu), fixed),
      pairedCell(s, floor, cpu),
      int(i === 0 ? m.getRps : m.grpcRps),
      pairedCell(s, floor, rps),
      ms(i === 0 ? m.getMeanMs : m.grpcMeanMs),
    ])
    lines.push(row([s.name, ...cells, fixed(m.rssMiB), String(m.errors)]))
  }
  return lines
}

function spreadTable(subjects: readonly H2SubjectResult[]): string[] {
  const n = settings.rounds
  const head = ['subject', 'metric', ...Array.from({ length: n }, (_, i) => `round ${i + 1}`)]
  const lines = [row(head), row(head.map((_, i) => (i < 2 ? '---' : '---:')))]
  const metrics: Array<[string, (r: H2Round) => string]> = [
    ['GET req/s', (r) => int(r.get.rps)],
    ['GET CPU µs/req', (r) => fixed(r.get.cpuUsPerReq)],
    ['gRPC req/s', (r) => int(r.grpc.rps)],
    ['gRPC CPU µs/req', (r) => fixed(r.grpc.cpuUsPerReq)],
    ['GET proxy CPU %', (r) => fixed(r.get.proxyCpuPct, 0)],
    ['gRPC proxy CPU %', (r) => fixed(r.grpc.proxyCpuPct, 0)],
    ['GET upstream CPU µs/req', (r) => fixed(r.get.upstreamCpuUsPerReq)],
    ['GET max ms', (r) => ms(r.get.maxMs)],
    ['other CPU %', (r) => fixed(r.otherCpuPct, 0)],
  ]
  for (const s of subjects) {
    if (s.rounds.length === 0) continue
    for (const [label, f] of metrics) {
      const cells = Array.from({ length: n }, (_, i) => {
        const r = s.rounds.find((x) => x.round === i + 1)
        return r === undefined ? '—' : f(r)
      })
      lines.push(row([s.name, label, ...cells]))
    }
  }
  return lines
}

function veerCounterNotes(subjects: readonly H2SubjectResult[]): string[] {
  const out: string[] = []
  const list = (o: Record<string, number>) =>
    Object.entries(o)
      .map(([k, v]) => `${k} ${int(v)}`)
      .join(', ') || 'none'
  for (const s of subjects) {
    for (const r of s.rounds) {
      if (r.veer === undefined) continue
      const total = Object.values(r.veer.notOk).reduce((a, b) => a + b, 0)
      out.push(
        `- ${s.name} round ${r.round}: not 2xx ${int(total)} (${list(r.veer.notOk)}); access log errors: ` +
          `${list(r.veer.logErrors)}; h2load abandoned ${int(r.abandoned)}` +
          (total > r.abandoned ? ' — **more than h2load abandoned: veer failed requests**' : ''),
      )
    }
  }
  return out
}

function renderMarkdown(r: {
  date: string
  machine: Machine
  subjects: H2SubjectResult[]
  targets: TargetCheck[]
  wallSeconds: number
}): string {
  const lines = [
    '# veer HTTP/2 benchmark',
    '',
    machineLine(r.date, r.machine),
    '',
    `${settings.rounds} round(s)${roughNote(settings)}, ` +
      'subjects forward in odd rounds, reversed in even ones, each started fresh every round. ' +
      `Load: h2load ${h2loadTool.version ?? ''} -t1 -c${settings.clients} -m${settings.streams} ` +
      `(${settings.clients * settings.streams} streams in flight), cleartext with prior knowledge; ` +
      `each workload gets ${settings.warmupSeconds} s of warm-up right before its ${settings.seconds} s measured phase. ` +
      `Upstream: node:http2 h2c (bench/h2-upstream.ts). Pinning: ${settings.pinning}.`,
    '',
    'Workloads: GET / answered with 100 B; gRPC unary: POST ' +
      `${GRPC_PATH} with content-type application/grpc, te: trailers and one ${GRPC_BODY.length}-byte framed ` +
      'message, answered 200 with a framed message and grpc-status 0 in trailers (h2load does not read ' +
      'grpc-status; the preflight of every round checks it once through the subject).',
    '',
    ...mainTable(r.subjects),
    '',
    'CPU µs/req (the headline: steadier than req/s on a shared VM): the proxy process\u2019s utime+stime ' +
      '(/proc) over the measured phase divided by the requests answered in it, median over the rounds with ' +
      `min–max. Every ratio (÷ floor: to ${FLOOR}; req/s: higher is better, CPU: lower is better) is paired: ` +
      'taken within each round, then the median of those ratios, with their min–max in parentheses — not a ' +
      'ratio of medians. req/s, mean ms (h2load\u2019s mean time for request): medians over the rounds. ' +
      'errors: failed streams and non-2xx answers over all rounds.',
    '',
    'Subjects:',
    '',
    ...r.subjects.map((s) => `- \`${s.name}\`: ${s.about}`),
    '',
  ]
  if (r.targets.length > 0) {
    lines.push(
      '## Targets',
      '',
      `The goal: \`${VEER}\`\u2019s req/s ${GOAL.op} ${times(GOAL.value)} the Node floor\u2019s (\`${FLOOR}\`) on ` +
        'each workload. Each figure is the median of the ratios paired within a round, with their min–max; a ' +
        'verdict is given only when every paired round is on the same side of the goal, otherwise it reads ' +
        '\u201cundecided (spread crosses the goal)\u201d (also with fewer than 3 rounds). Printed, never asserted.',
      '',
      ...targetsTable(r.targets),
      '',
    )
  }
  const veerNotes = veerCounterNotes(r.subjects)
  if (veerNotes.length > 0) {
    lines.push(
      'veer\u2019s own record of answers that were not 2xx (veer_requests_total and the access log\u2019s `error` ' +
        'field, over the warm-ups and measured phases of a round), next to the streams h2load left unfinished ' +
        'when it stopped (it resets those; veer then counts them as client_closed). More than h2load ' +
        'abandoned means veer failed requests itself.',
      '',
      ...veerNotes,
      '',
    )
  }
  const noise = noiseNote(r.subjects)
  if (noise !== '') lines.push(noise, '')
  const unavailable = r.subjects.filter((s) => s.status === 'unavailable')
  for (const s of unavailable) lines.push(`- ${s.name} unavailable: ${s.reason ?? ''}`)
  if (unavailable.length > 0) lines.push('')
  lines.push(
    '## Per round',
    '',
    ...spreadTable(r.subjects),
    '',
    `Wall time: ${r.wallSeconds.toFixed(0)} s.`,
    '',
  )
  return lines.join('\n')
}

const report = {
  date: new Date().toISOString(),
  machine,
  h2load: { version: h2loadTool.version },
  haproxy: { used: haproxy.available, version: haproxy.version, note: haproxy.note },
  settings,
  subjects: results,
  targets: checkTargets(results),
  wallSeconds: (performance.now() - startedAt) / 1000,
}
const markdown = renderMarkdown(report)
mkdirSync(resultsDir, { recursive: true })
writeFileSync(join(resultsDir, 'h2.md'), markdown)
writeFileSync(join(resultsDir, 'h2.json'), `${JSON.stringify(report, null, 2)}\n`)
process.stdout.write(`\n${markdown}\n`)
log(`wrote bench/results/h2.md and bench/results/h2.json (${report.wallSeconds.toFixed(0)} s)`)
process.exit(0)
