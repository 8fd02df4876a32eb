// Bytes allocated per request, and where:  node bench/alloc.ts [--workload http1|grpc] [--only a,b]
//   [--requests N] [--warmup N] [--top N] [--out NAME] [--profiles DIR]    (--help)
// Every allocation, not only what stays live, is what costs a proxy its garbage collection (a quarter to a
// third of its busy time in CPU profiles under load). Each subject runs as the CPU benches run it (the
// same processes and flags: bench/run.ts's subjects and Node upstream for http1, bench/h2.ts's node-h2-proxy
// and veer-h2c in front of bench/h2-upstream.ts for grpc) with bench/alloc-sampler.ts preloaded: V8's
// sampling heap profiler, keeping the samples of objects already collected. Per subject: --warmup
// requests, then --requests measured ones (http1: closed loop, 50 clients, the sticky header when the
// subject routes on it; grpc: h2load -c16 -m10 -n, the unary call of bench/h2.ts), each window's profile
// dumped by SIGUSR2. It prints KB allocated per request (V8's estimate from the samples, which it scales by
// their size), the ratio to the floor (undici-minimal; node-h2-proxy for grpc) and, per subject, the top
// allocating functions (self) and — for veer — the veer function nearest each allocation on the stack (so
// bytes Node allocates for veer's calls, a header object or a Buffer, are charged to the veer code that
// asked for them). Writes bench/results/NAME.md and .json (default alloc, alloc-grpc). Figures are bytes,
// not time: they hold on a busy machine (±3% between runs), so this is the bench to compare a change's
// allocations before and after (BENCH_BASE=DIR for the http1 veer-base subject). Loopback only, bounded.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { GRPC_HEADERS, GRPC_PATH, startH2Upstream, writeGrpcBody } from './h2-pieces.ts'
import { h2load } from './h2load.ts'
import { positiveInt, startHarness } from './harness.ts'
import { closedLoop } from './load.ts'
import { describeMachine, machineLine } from './machine.ts'
import { stopAll, stopProcess } from './proc.ts'
import { fixed, row } from './report.ts'
import {
  type Context,
  type Running,
  STICKY_HEADER,
  shadowCounters,
  startNodeProxy,
  startNodeUpstreams,
  startVeer,
  subjects,
} from './subjects.ts'
import { findH2load } from './tools.ts'

const HTTP1 = ['undici-minimal', 'veer', 'veer-canary-sticky', 'undici-twice', 'veer-shadow']
const GRPC = ['node-h2-proxy', 'veer-h2c']

const { values: args } = parseArgs({
  options: {
    workload: { type: 'string', default: 'http1' },
    only: { type: 'string' },
    requests: { type: 'string' },
    warmup: { type: 'string' },
    top: { type: 'string' },
    out: { type: 'string' },
    profiles: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
if (args.help) {
  console.log(`usage: node bench/alloc.ts [--workload http1|grpc] [--only a,b] [--requests N] [--warmup N] [--top N] [--out NAME]
  --workload  http1 (default): GET / through bench/run.ts's subjects; grpc: bench/h2.ts's unary call
              through node-h2-proxy and veer-h2c, with h2load
  --only      subjects (http1 default: ${HTTP1.join(',')}; grpc: ${GRPC.join(',')})
  --requests  measured requests per subject (default 20000)
  --warmup    requests before the measured window (default 5000)
  --top       rows of each subject's allocation tables (default 15)
  --out       results name: bench/results/NAME.md and .json (default alloc, or alloc-grpc)
  --profiles  also keep each subject's measured profile as DIR/SUBJECT.heapprofile (Chrome DevTools,
              Memory tab, loads it: the call tree of every allocation)`)
  process.exit(0)
}

if (args.workload !== 'http1' && args.workload !== 'grpc') {
  console.error(`--workload: expected http1 or grpc, got ${JSON.stringify(args.workload)}`)
  process.exit(2)
}
const grpc = args.workload === 'grpc'
const FLOOR = grpc ? 'node-h2-proxy' : 'undici-minimal'
const CLIENTS = 50
const requests = positiveInt(args.requests, 20_000, 1_000_000)
const warmup = positiveInt(args.warmup, 5_000, 1_000_000)
const top = positiveInt(args.top, 15, 200)
const out = args.out ?? (grpc ? 'alloc-grpc' : 'alloc')
const names = (args.only?.split(',') ?? (grpc ? GRPC : HTTP1)).map((s) => s.trim())
for (const n of names) {
  const known = grpc ? GRPC.includes(n) : n !== 'direct' && subjects.some((x) => x.name === n)
  if (!known) {
    console.error(
      `--only: no ${args.workload} subject ${JSON.stringify(n)} (${grpc ? GRPC.join(', ') : 'bench/subjects.ts lists them'})`,
    )
    process.exit(2)
  }
}
if (grpc && !(await findH2load()).available) {
  console.error('--workload grpc needs h2load (apt-get install nghttp2-client)')
  process.exit(1)
}

const h = startHarness('veer-alloc', 30)
const sampler = join(h.root, 'bench/alloc-sampler.ts')
process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --import ${sampler}`.trim()

// ---------- the profile ----------

interface CallFrame {
  functionName: string
  url: string
  lineNumber: number
}
interface ProfileNode {
  callFrame: CallFrame
  selfSize: number
  children: ProfileNode[]
}

/** Where a frame is, this checkout's paths made relative, node_modules cut to the package. */
function place(f: CallFrame): string {
  let url = f.url.replace(/^file:\/\//, '')
  if (url.startsWith(h.root)) url = url.slice(h.root.length + 1)
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)\/(.*)$/.exec(url)
  if (pkg !== null) url = `${pkg[1]}/${pkg[2]}`
  return url === '' ? '' : `${url}:${f.lineNumber + 1}`
}

const label = (f: CallFrame) => `${f.functionName || '(anonymous)'} ${place(f)}`.trim()
const isVeer = (f: CallFrame) => /\/(proxy|config)\/[^/]+/.test(f.url) && !f.url.includes('node_modules')

interface Tally {
  total: number
  self: Map<string, number>
  /** by the innermost veer frame on the stack; `(no veer frame)` for what Node and libraries did alone */
  veer: Map<string, number>
}

function tally(root: ProfileNode): Tally {
  const t: Tally = { total: 0, self: new Map(), veer: new Map() }
  const walk = (n: ProfileNode, owner: string): void => {
    const own = isVeer(n.callFrame) ? label(n.callFrame) : owner
    if (n.selfSize > 0) {
      t.total += n.selfSize
      const k = label(n.callFrame)
      t.self.set(k, (t.self.get(k) ?? 0) + n.selfSize)
      t.veer.set(own, (t.veer.get(own) ?? 0) + n.selfSize)
    }
    for (const c of n.children) walk(c, own)
  }
  walk(root, '(no veer frame)')
  return t
}

// ---------- the subjects ----------

interface Load {
  ok: number
  errors: number
}

/** What a subject is measured with: how to start it, load it, and know its work is done. */
interface AllocSubject {
  name: string
  about: string
  start(): Promise<Running>
  load(running: Running, n: number): Promise<Load>
  /** resolves once work the load set going has ended (veer-shadow: its copies) */
  settled?(running: Running): Promise<void>
}

/** veer-shadow: wait until every copy sent has its answer compared (or failed), so none is cut off. */
async function shadowSettled(running: Running): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const c = await shadowCounters(running)
    if ((c['shadow compared'] ?? 0) + (c['shadow errors'] ?? 0) >= (c['shadow sent'] ?? 0)) return
    await sleep(50)
  }
}

async function http1Subjects(): Promise<AllocSubject[]> {
  const chosen = names.map((n) => subjects.find((x) => x.name === n)!)
  const withShadow = chosen.some((s) => s.needs?.includes('shadow-upstream'))
  const { stable, canary, shadow } = await startNodeUpstreams(h.root, h.tmpDir, withShadow)
  const ctx: Context = {
    root: h.root,
    tmpDir: h.tmpDir,
    stablePort: stable.port,
    canaryPort: canary.port,
    shadowPort: shadow?.port ?? null,
    otlp: null,
    nginx: null,
  }
  const out: AllocSubject[] = []
  for (const s of chosen) {
    const why = s.unavailable(ctx)
    if (why !== null) {
      h.log(`${s.name}: unavailable (${why})`)
      continue
    }
    out.push({
      name: s.name,
      about: s.about,
      start: () => s.start(ctx),
      load: (running, n) =>
        closedLoop(
          {
            origin: `http://127.0.0.1:${running.port}`,
            path: '/',
            ...(s.sticky ? { sticky: { header: STICKY_HEADER, users: 1000 } } : {}),
          },
          { requests: n, clients: CLIENTS },
        ),
      ...(s.name === 'veer-shadow' ? { settled: shadowSettled } : {}),
    })
  }
  return out
}

async function grpcSubjects(): Promise<AllocSubject[]> {
  const upstream = await startH2Upstream(h.root, h.tmpDir)
  const dataFile = writeGrpcBody(h.tmpDir)
  const ctx: Context = {
    root: h.root,
    tmpDir: h.tmpDir,
    stablePort: upstream.port,
    canaryPort: upstream.port,
    shadowPort: null,
    otlp: null,
    nginx: null,
  }
  const load = async (running: Running, n: number): Promise<Load> => {
    const r = await h2load({
      url: `http://127.0.0.1:${running.port}${GRPC_PATH}`,
      seconds: 120,
      requests: n,
      clients: 16,
      streams: 10,
      headers: GRPC_HEADERS,
      dataFile,
    })
    return { ok: r.requests - r.errors, errors: r.errors }
  }
  const all: AllocSubject[] = [
    {
      name: 'node-h2-proxy',
      about:
        'node:http2 h2c server forwarding every stream over one node:http2 client session (the Node floor)',
      start: () => startNodeProxy('node-h2-proxy', ctx, 'bench/baselines/node-h2-proxy.ts'),
      load,
    },
    {
      name: 'veer-h2c',
      about: 'veer proxy --stable h2c://… (quick-start flags: metrics, analysis window, access log on)',
      start: () =>
        startVeer('veer-h2c', ctx, { flags: () => ['--stable', `h2c://127.0.0.1:${upstream.port}`] }),
      load,
    },
  ]
  return names.map((n) => all.find((s) => s.name === n)!)
}

// ---------- a subject ----------

interface Measured {
  name: string
  about: string
  requests: number
  errors: number
  bytesPerRequest: number
  self: Array<[string, number]>
  veer: Array<[string, number]>
}

async function waitFile(path: string, running: Running): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (existsSync(path)) return
    if (running.proc?.exitedWith !== null) throw new Error(`the subject exited (${running.proc?.exitedWith})`)
    await sleep(50)
  }
  throw new Error(`no allocation profile at ${path} after 30 s`)
}

async function measure(s: AllocSubject): Promise<Measured> {
  const profile = join(h.tmpDir, `${s.name}.alloc`)
  process.env.ALLOC_PROFILE = profile
  const running = await s.start()
  try {
    await s.load(running, warmup)
    await s.settled?.(running)
    running.proc!.child.kill('SIGUSR2')
    await waitFile(`${profile}.1.json`, running)
    const r = await s.load(running, requests)
    await s.settled?.(running)
    running.proc!.child.kill('SIGUSR2')
    await waitFile(`${profile}.2.json`, running)
    const text = readFileSync(`${profile}.2.json`, 'utf8')
    if (args.profiles !== undefined) {
      mkdirSync(args.profiles, { recursive: true })
      writeFileSync(join(args.profiles, `${s.name}.heapprofile`), text)
    }
    const t = tally((JSON.parse(text) as { head: ProfileNode }).head)
    const perReq = (m: Map<string, number>) =>
      [...m]
        .sort((a, b) => b[1] - a[1])
        .slice(0, top)
        .map(([k, v]) => [k, v / r.ok] as [string, number])
    h.log(
      `${s.name}: ${fixed(t.total / r.ok / 1024, 2)} KB/request over ${r.ok} requests (${r.errors} errors)`,
    )
    return {
      name: s.name,
      about: s.about,
      requests: r.ok,
      errors: r.errors,
      bytesPerRequest: t.total / r.ok,
      self: perReq(t.self),
      veer: s.name.startsWith('veer') ? perReq(t.veer) : [],
    }
  } finally {
    if (running.proc !== null) await stopProcess(running.proc)
  }
}

// ---------- the run ----------

const results: Measured[] = []
for (const s of grpc ? await grpcSubjects() : await http1Subjects()) results.push(await measure(s))
await stopAll()

const floor = results.find((r) => r.name === FLOOR)?.bytesPerRequest
const kb = (b: number) => fixed(b / 1024, 2)
const machine = describeMachine()
const lines = [
  '# veer allocations per request',
  '',
  machineLine(new Date().toISOString(), machine),
  '',
  `Command: \`node bench/alloc.ts --workload ${args.workload} --only ${names.join(',')} --requests ${requests} --warmup ${warmup}\`. ` +
    `Each subject fresh, ${warmup.toLocaleString('en-US')} warm-up requests, then ${requests.toLocaleString('en-US')} ` +
    (grpc
      ? `measured (h2load -c16 -m10, bench/h2.ts's gRPC unary call to bench/h2-upstream.ts). KB: V8's sampling heap `
      : `measured (closed loop, ${CLIENTS} clients, GET / answered ~100 B by bench/upstream.ts). KB: V8's sampling heap `) +
    'profiler with collected objects kept (every allocation, estimated from 8 KiB-interval samples), divided by the requests answered.',
  '',
  row(['subject', 'KB allocated / request', `÷ ${FLOOR}`, 'requests', 'errors']),
  row(['---', '---:', '---:', '---:', '---:']),
  ...results.map((r) =>
    row([
      r.name,
      kb(r.bytesPerRequest),
      floor === undefined ? '—' : `${(r.bytesPerRequest / floor).toFixed(2)}×`,
      r.requests.toLocaleString('en-US'),
      String(r.errors),
    ]),
  ),
  '',
]
for (const r of results) {
  lines.push(
    `## ${r.name}`,
    '',
    r.about,
    '',
    row(['allocating function (self)', 'bytes / request']),
    row(['---', '---:']),
  )
  for (const [k, v] of r.self) lines.push(row([`\`${k}\``, fixed(v, 0)]))
  if (r.veer.length > 0) {
    lines.push('', row(['nearest veer function on the stack', 'bytes / request']), row(['---', '---:']))
    for (const [k, v] of r.veer) lines.push(row([`\`${k}\``, fixed(v, 0)]))
  }
  lines.push('')
}
const md = lines.join('\n')
writeFileSync(join(h.resultsDir, `${out}.md`), md)
writeFileSync(
  join(h.resultsDir, `${out}.json`),
  JSON.stringify({ machine, requests, warmup, results }, null, 2),
)
console.log(md)
h.log(`wrote bench/results/${out}.md and .json`)
process.exit(0)
