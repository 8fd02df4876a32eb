// Where an HTTP/2 proxy spends its CPU:  node bench/h2-profile.ts [--workload grpc|get] [--rounds N]
//   [--seconds N] [--only a,b] [--profile] [--top N]   (--help)
// The bench:h2 pieces (bench/h2-upstream.ts, h2load, the same gRPC request) in front of: node-h2-proxy
// (the Node floor), undici-h2-proxy (the same server sending through an undici Pool, as veer does: the
// undici floor), the same with a Readable request body, and veer --stable h2c:// (and another checkout). Rounds interleave the subjects; prints the proxy's CPU
// µs per request and its ratio to the floor, medians over the rounds. With --profile every subject runs
// under --cpu-prof and the top self-time functions and files are printed too (profiling inflates the
// CPU figures: compare those runs with each other only). Loopback only, bounded by --seconds.
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { printTop, profilesIn, sumProfiles } from './cpu-profile.ts'
import { GRPC_HEADERS, startH2Upstream, writeGrpcBody } from './h2-pieces.ts'
import { h2load } from './h2load.ts'
import { positiveInt, startHarness } from './harness.ts'
import { cpuMicros, freePort, PROXY_CORE, pinHarness, startProcess, stopProcess, waitReady } from './proc.ts'
import { median } from './stats.ts'
import { findH2load } from './tools.ts'

const { values: args } = parseArgs({
  options: {
    workload: { type: 'string', default: 'grpc' },
    rounds: { type: 'string' },
    seconds: { type: 'string' },
    only: { type: 'string' },
    profile: { type: 'boolean', default: false },
    top: { type: 'string' },
    'veer-root': { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
if (args.help || (args.workload !== 'grpc' && args.workload !== 'get')) {
  console.log(`usage: node bench/h2-profile.ts [--workload grpc|get] [--rounds N] [--seconds N] [--only a,b] [--profile] [--top N]
  --workload   grpc (default: POST of one framed message, trailers back) or get (~100 B)
  --rounds N   rounds, subjects interleaved (default 3)
  --seconds N  seconds of measured load per subject and round (default 3, after 1 s of warm-up)
  --only       comma-separated subjects: node-h2-proxy, undici-h2-proxy, undici-h2-readable, veer-h2c, veer-other
  --profile    run the subjects under --cpu-prof and print their top self-time entries
  --top N      entries printed per profile (default 25)
  --veer-root  another veer checkout (e.g. \`git archive\` of a commit, node_modules linked), run as veer-other`)
  process.exit(args.help ? 0 : 2)
}

const { root, tmpDir, log } = startHarness('veer-h2-profile', 15)
const rounds = positiveInt(args.rounds, 3, 20)
const seconds = positiveInt(args.seconds, 3, 30)
const top = positiveInt(args.top, 25, 200)
const node = process.execPath
if (!(await findH2load()).available) {
  log('h2load (nghttp2-client) is not installed')
  process.exit(1)
}
log(`pinning: ${pinHarness('the proxy').description}`)

const upstream = await startH2Upstream(root, tmpDir)
const upPort = upstream.port
const bodyFile = writeGrpcBody(tmpDir)

interface Subject {
  name: string
  /** node arguments after the profiling flags; `port`/`admin` are the ones it must listen on */
  argv(port: number, admin: number): string[]
  health?: (admin: number) => string
}

const all: Subject[] = [
  {
    name: 'node-h2-proxy',
    argv: (port) => [
      join(root, 'bench/baselines/node-h2-proxy.ts'),
      `http://127.0.0.1:${upPort}`,
      String(port),
    ],
  },
  {
    name: 'undici-h2-proxy',
    argv: (port) => [
      join(root, 'bench/baselines/undici-h2-proxy.ts'),
      `http://127.0.0.1:${upPort}`,
      String(port),
    ],
  },
  {
    name: 'undici-h2-readable',
    argv: (port) => [
      join(root, 'bench/baselines/undici-h2-proxy.ts'),
      `http://127.0.0.1:${upPort}`,
      String(port),
      'readable',
    ],
  },
  {
    name: 'veer-h2c',
    argv: (port, admin) => veerArgv(root, port, admin),
    health: (admin) => `http://127.0.0.1:${admin}/healthz`,
  },
]
if (args['veer-root'] !== undefined) {
  const other = resolve(args['veer-root'])
  all.push({
    name: 'veer-other',
    argv: (port, admin) => veerArgv(other, port, admin),
    health: (admin) => `http://127.0.0.1:${admin}/healthz`,
  })
}

function veerArgv(checkout: string, port: number, admin: number): string[] {
  return [
    join(checkout, 'bin/veer.js'),
    'proxy',
    '--listen',
    `127.0.0.1:${port}`,
    '--admin',
    `127.0.0.1:${admin}`,
    '--stable',
    `h2c://127.0.0.1:${upPort}`,
  ]
}
const wanted = args.only === undefined ? null : new Set(args.only.split(',').map((s) => s.trim()))
const chosen = all.filter((s) => wanted === null || wanted.has(s.name))

const load = (url: string, secs: number) =>
  h2load({
    url,
    seconds: secs,
    clients: 16,
    streams: 10,
    ...(args.workload === 'grpc' ? { headers: GRPC_HEADERS, dataFile: bodyFile } : {}),
  })

interface Measured {
  cpuUsPerReq: number
  rps: number
  requests: number
  errors: number
  profile: string | null
}

async function measure(s: Subject, round: number): Promise<Measured> {
  const port = await freePort()
  const admin = await freePort()
  const dir = join(tmpDir, `${s.name}-${round}`)
  const prof = args.profile ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : []
  const proc = startProcess(s.name, node, [...prof, ...s.argv(port, admin)], {
    core: PROXY_CORE,
    logPath: join(tmpDir, `${s.name}-${round}.log`),
    cwd: root,
  })
  try {
    await waitReady(proc, port, 15_000, s.health?.(admin))
    const path = args.workload === 'grpc' ? '/bench.Echo/Unary' : '/'
    const url = `http://127.0.0.1:${port}${path}`
    await load(url, 1)
    const cpu0 = cpuMicros(proc.pid)
    const r = await load(url, seconds)
    const cpu = cpuMicros(proc.pid) - cpu0
    return {
      cpuUsPerReq: cpu / Math.max(1, r.requests),
      rps: r.rps,
      requests: r.requests,
      errors: r.errors,
      profile: dir,
    }
  } finally {
    await stopProcess(proc, 5000)
  }
}

const results = new Map<string, Measured[]>(chosen.map((s) => [s.name, []]))
for (let round = 1; round <= rounds; round++) {
  for (const s of chosen) {
    const m = await measure(s, round)
    results.get(s.name)!.push(m)
    log(
      `[round ${round}/${rounds}] ${s.name.padEnd(16)} ${args.workload} ${Math.round(m.rps)} req/s ` +
        `${m.cpuUsPerReq.toFixed(1)} µs/req, ${m.errors} errors`,
    )
  }
}
await stopProcess(upstream.proc)

const floor = median(results.get('node-h2-proxy')?.map((m) => m.cpuUsPerReq) ?? [])
console.log(
  `\n${args.workload}, medians of ${rounds} round(s), ${seconds} s each${args.profile ? ' (under --cpu-prof)' : ''}:`,
)
for (const [name, ms] of results) {
  const cpu = median(ms.map((m) => m.cpuUsPerReq))
  const rps = median(ms.map((m) => m.rps))
  const vs = Number.isFinite(floor) && floor > 0 ? ` (${(cpu / floor).toFixed(2)}× the floor's CPU)` : ''
  console.log(`  ${name.padEnd(16)} ${cpu.toFixed(1)} µs/req${vs}, ${Math.round(rps)} req/s`)
}

if (args.profile) {
  for (const [name, ms] of results) {
    // The profiles of all rounds, summed.
    const t = sumProfiles(ms.flatMap((m) => profilesIn(m.profile!)))
    printTop(`${name}: top self time by function`, t.byFn, t.total, top)
    printTop(`${name}: self time by file`, t.byFile, t.total, Math.min(top, 20))
  }
}
process.exit(0)
