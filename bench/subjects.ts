// The things being measured. Each one is put in front of the same upstream (or, for `direct`, is
// the upstream) and started fresh for every round, pinned to the proxy core.
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { writeNginxConfig } from './nginx.ts'
import type { SinkCounts } from './otlp-sink.ts'
import {
  freePort,
  LOAD_CORE,
  type Managed,
  PROXY_CORE,
  startProcess,
  stopProcess,
  waitReady,
} from './proc.ts'

export const STICKY_HEADER = 'x-user-id'

/** What a subject needs the harness to start once for the whole run. */
export type Need = 'shadow-upstream' | 'otlp-sink' | 'nginx'

export interface Context {
  root: string
  tmpDir: string
  stablePort: number
  canaryPort: number
  /** a third upstream process answering as stable does; null unless a subject needs it */
  shadowPort: number | null
  /** the in-harness OTLP/HTTP trace sink; null unless a subject needs it */
  otlp: { port: number; counts: Readonly<SinkCounts> } | null
  /** the nginx command, when nginx is installed */
  nginx: string | null
}

export interface Running {
  /** where the load goes */
  port: number
  /** the proxy process whose CPU and RSS are measured; null for `direct` */
  proc: Managed | null
  /** veer's admin port, when the subject is veer */
  admin?: number
}

export interface Subject {
  name: string
  about: string
  /** load sends a rotating sticky header */
  sticky: boolean
  needs?: readonly Need[]
  /** why it cannot run at all (checked once, before the first round); null when it can */
  unavailable(ctx: Context): string | null
  start(ctx: Context): Promise<Running>
  /**
   * Counters read after the preflight and again after the last phase; the round records the
   * differences (e.g. shadow requests sent, trace exports received). Never fails the round.
   */
  observe?(running: Running, ctx: Context): Promise<Record<string, number>>
}

/** Thrown when a subject cannot be started; the harness marks it unavailable and goes on. */
export class Unavailable extends Error {}

const node = process.execPath
export const loopback = (port: number): string => `http://127.0.0.1:${port}`

/**
 * Start a bench/upstream.ts process on the load core; its body names `bodyName` (see upstream.ts).
 * `delayMs` makes it answer every request that late (a slow upstream).
 */
export async function startUpstream(
  root: string,
  tmpDir: string,
  name: string,
  bodyName = name,
  delayMs = 0,
): Promise<{ port: number; proc: Managed }> {
  const port = await freePort()
  const script = join(root, 'bench/upstream.ts')
  const proc = startProcess(`upstream-${name}`, node, [script, String(port), name, bodyName], {
    core: LOAD_CORE,
    logPath: join(tmpDir, `upstream-${name}.log`),
    ...(delayMs === 0 ? {} : { env: { ...process.env, UPSTREAM_DELAY_MS: String(delayMs) } }),
  })
  await waitReady(proc, port, 10_000)
  return { port, proc }
}

type Upstream = Awaited<ReturnType<typeof startUpstream>>

/**
 * The Node upstreams bench/run.ts's subjects run against: stable, canary and, when `withShadow`, a shadow
 * that answers byte for byte what stable does (so a veer shadow's comparisons match, the common case).
 */
export async function startNodeUpstreams(
  root: string,
  tmpDir: string,
  withShadow: boolean,
): Promise<{ stable: Upstream; canary: Upstream; shadow: Upstream | null }> {
  const stable = await startUpstream(root, tmpDir, 'stable')
  const canary = await startUpstream(root, tmpDir, 'canary')
  const shadow = withShadow ? await startUpstream(root, tmpDir, 'shadow', 'stable') : null
  return { stable, canary, shadow }
}

export async function started(
  proc: Managed,
  port: number,
  timeoutMs: number,
  health?: string,
): Promise<void> {
  try {
    await waitReady(proc, port, timeoutMs, health)
  } catch (err) {
    await stopProcess(proc)
    throw new Unavailable((err as Error).message)
  }
}

/** `node SCRIPT STABLE_URL PORT ...extra` on the proxy core. */
export async function startNodeProxy(
  name: string,
  ctx: Context,
  script: string,
  extra: readonly string[] = [],
): Promise<Running> {
  const port = await freePort()
  const args = [join(ctx.root, script), loopback(ctx.stablePort), String(port), ...extra]
  const proc = startProcess(name, node, args, {
    core: PROXY_CORE,
    logPath: join(ctx.tmpDir, `${name}.log`),
    cwd: ctx.root,
  })
  await started(proc, port, 10_000)
  return { port, proc }
}

export interface VeerOptions {
  /** quick-start flags after --listen/--admin (ports are added by the harness) */
  flags?: (ctx: Context) => string[]
  /** a YAML config instead of flags: written to its own directory (veer watches that directory) */
  config?: (ctx: Context, port: number, admin: number) => string
  env?: (ctx: Context) => NodeJS.ProcessEnv
  /** Another checkout's bin/veer.js instead of this repo's (the `veer-base` subject). */
  root?: string
}

export async function startVeer(name: string, ctx: Context, opts: VeerOptions): Promise<Running> {
  const port = await freePort()
  const admin = await freePort()
  const args = [join(opts.root ?? ctx.root, 'bin/veer.js'), 'proxy']
  if (opts.config !== undefined) {
    const dir = join(ctx.tmpDir, `${name}-config`)
    mkdirSync(dir, { recursive: true })
    const file = join(dir, 'veer.yaml')
    writeFileSync(file, opts.config(ctx, port, admin))
    args.push('--config', file)
  } else {
    args.push('--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${admin}`)
    args.push(...(opts.flags?.(ctx) ?? ['--stable', loopback(ctx.stablePort)]))
  }
  const proc = startProcess(name, node, args, {
    core: PROXY_CORE,
    logPath: join(ctx.tmpDir, `${name}.log`),
    cwd: ctx.root,
    ...(opts.env === undefined ? {} : { env: { ...process.env, ...opts.env(ctx) } }),
  })
  await started(proc, port, 15_000, `http://127.0.0.1:${admin}/healthz`)
  return { port, proc, admin }
}

const veerFound = (ctx: Context) =>
  existsSync(join(ctx.root, 'bin/veer.js')) ? null : 'bin/veer.js not found'

function veerSubject(
  name: string,
  about: string,
  opts: VeerOptions & Pick<Subject, 'needs' | 'observe'> & { sticky?: boolean },
): Subject {
  return {
    name,
    about,
    sticky: opts.sticky ?? false,
    ...(opts.needs === undefined ? {} : { needs: opts.needs }),
    ...(opts.observe === undefined ? {} : { observe: opts.observe }),
    unavailable: veerFound,
    start: (ctx) => startVeer(name, ctx, opts),
  }
}

/** GET a loopback URL (an admin endpoint) and return its body as text. */
export function getText(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'GET', timeout: 2000 }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (text += d))
      res.on('end', () => resolve(text))
    })
    req.once('timeout', () => req.destroy(new Error(`GET ${url}: timeout`)))
    req.once('error', reject)
    req.end()
  })
}

export async function getJson(url: string): Promise<unknown> {
  return JSON.parse(await getText(url))
}

/** veer's shadow counters from GET /v1/stats (route `default`). */
export async function shadowCounters(running: Running): Promise<Record<string, number>> {
  const stats = (await getJson(`http://127.0.0.1:${running.admin}/v1/stats`)) as {
    routes?: Array<{ shadow?: Record<string, unknown> | null }>
  }
  const shadow = stats.routes?.[0]?.shadow ?? null
  if (shadow === null) return {}
  const out: Record<string, number> = {}
  for (const key of ['sent', 'dropped', 'errors', 'compared', 'mismatches']) {
    const v = shadow[key]
    if (typeof v === 'number') out[`shadow ${key}`] = v
  }
  return out
}

const BASE = process.env.BENCH_BASE

export const subjects: readonly Subject[] = [
  {
    name: 'direct',
    about: 'load straight to the upstream (the limit)',
    sticky: false,
    unavailable: () => null,
    start: async (ctx) => ({ port: ctx.stablePort, proc: null }),
  },
  veerSubject('veer', 'veer proxy, plain forward to stable (metrics, analysis window, access log on)', {}),
  {
    name: 'veer-base',
    about:
      'veer from another checkout (env BENCH_BASE=DIR, e.g. a worktree of main before a change), plain forward: before and after in one run',
    sticky: false,
    unavailable: () =>
      BASE === undefined
        ? 'set BENCH_BASE=DIR (a veer checkout with node_modules) to compare with it'
        : existsSync(join(BASE, 'bin/veer.js'))
          ? null
          : `BENCH_BASE=${BASE}: no bin/veer.js there`,
    start: (ctx) => startVeer('veer-base', ctx, { root: BASE! }),
  },
  veerSubject('veer-canary-sticky', 'veer, 20% canary to a 2nd upstream, sticky on x-user-id', {
    sticky: true,
    flags: (ctx) => [
      '--stable',
      loopback(ctx.stablePort),
      '--canary',
      loopback(ctx.canaryPort),
      '--canary-weight',
      '20',
      '--sticky-header',
      STICKY_HEADER,
    ],
  }),
  veerSubject(
    'veer-shadow',
    'veer, every request mirrored (100%) to a 3rd upstream and compared; the shadow pool is sized for the load (connections 64, maxInflight 256: room for wrk’s 50 connections, whose copies can trail their primaries, with no drop)',
    {
      needs: ['shadow-upstream'],
      config: (ctx, port, admin) =>
        [
          `listen: 127.0.0.1:${port}`,
          `admin: 127.0.0.1:${admin}`,
          'routes:',
          '  - name: default',
          `    stable: { url: "${loopback(ctx.stablePort)}" }`,
          `    shadow: { url: "${loopback(ctx.shadowPort!)}", percent: 100, connections: 64, maxInflight: 256 }`,
          '',
        ].join('\n'),
      observe: shadowCounters,
    },
  ),
  veerSubject('veer-tracing', 'veer, OpenTelemetry tracing on, 1% traceidratio, OTLP/HTTP to a local sink', {
    needs: ['otlp-sink'],
    env: (ctx) => ({
      OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_ENDPOINT: loopback(ctx.otlp!.port),
      OTEL_TRACES_SAMPLER: 'traceidratio',
      OTEL_TRACES_SAMPLER_ARG: '0.01',
    }),
    observe: async (_running, ctx) => ({
      'trace exports': ctx.otlp!.counts.exports,
      'trace KiB': ctx.otlp!.counts.bytes / 1024,
    }),
  }),
  veerSubject('veer-nolog', 'veer, plain forward, access log off (YAML config `log: { access: false }`)', {
    config: (ctx, port, admin) =>
      [
        `listen: 127.0.0.1:${port}`,
        `admin: 127.0.0.1:${admin}`,
        'log: { access: false }',
        'routes:',
        '  - name: default',
        `    stable: { url: "${loopback(ctx.stablePort)}" }`,
        '',
      ].join('\n'),
  }),
  {
    name: 'http-proxy-3',
    about: 'http-proxy-3 v2 with a keep-alive http.Agent',
    sticky: false,
    unavailable: () => null,
    start: (ctx) => startNodeProxy('http-proxy-3', ctx, 'bench/baselines/http-proxy-3.ts'),
  },
  {
    name: 'fastify-http-proxy',
    about: '@fastify/http-proxy v11 (reply-from, default undici pool), logger off',
    sticky: false,
    unavailable: (ctx) =>
      existsSync(join(ctx.root, 'node_modules/@fastify/http-proxy')) &&
      existsSync(join(ctx.root, 'node_modules/fastify'))
        ? null
        : 'fastify / @fastify/http-proxy not installed (npm install)',
    start: (ctx) => startNodeProxy('fastify-http-proxy', ctx, 'bench/baselines/fastify-http-proxy.ts'),
  },
  {
    name: 'undici-minimal',
    about: 'node:http + undici Pool.dispatch, minimal (the Node ceiling)',
    sticky: false,
    unavailable: () => null,
    start: (ctx) => startNodeProxy('undici-minimal', ctx, 'bench/baselines/undici-minimal.ts'),
  },
  {
    name: 'undici-twice',
    about:
      'undici-minimal that also sends every request to the shadow upstream (a 64-connection Pool), ' +
      'fire-and-forget, its answer dumped; the client answered from stable: a second exchange alone, ' +
      'the yardstick of veer-shadow’s cost',
    sticky: false,
    needs: ['shadow-upstream'],
    unavailable: () => null,
    start: (ctx) =>
      startNodeProxy('undici-twice', ctx, 'bench/baselines/undici-twice.ts', [loopback(ctx.shadowPort!)]),
  },
  {
    name: 'nginx',
    about: 'nginx reverse proxy, 1 worker, upstream keepalive 64, access log off (the C reference)',
    sticky: false,
    needs: ['nginx'],
    unavailable: (ctx) =>
      ctx.nginx === null ? 'nginx not installed (run with --install to apt-get it)' : null,
    async start(ctx) {
      const port = await freePort()
      const files = writeNginxConfig(join(ctx.tmpDir, 'nginx'), port, ctx.stablePort)
      // nginx started by root runs its worker as `nobody`, which must be able to walk into its prefix.
      if (process.getuid?.() === 0) chmodSync(ctx.tmpDir, 0o711)
      // Its error log is stderr, so it lands in the round's log file (and in the reason if it fails).
      const proc = startProcess('nginx', ctx.nginx!, ['-p', files.prefix, '-c', files.conf, '-e', 'stderr'], {
        core: PROXY_CORE,
        logPath: join(ctx.tmpDir, 'nginx.log'),
      })
      await started(proc, port, 10_000)
      return { port, proc }
    },
  },
]
