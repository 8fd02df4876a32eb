// The things being measured. Each one is put in front of the same upstream (or, for `direct`, is
// the upstream) and started fresh for every round, pinned to the proxy core.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { freePort, type Managed, PROXY_CORE, startProcess, stopProcess, waitReady } from './proc.ts'

export const STICKY_HEADER = 'x-user-id'

export interface Context {
  root: string
  tmpDir: string
  stablePort: number
  canaryPort: number
}

export interface Running {
  /** where the load goes */
  port: number
  /** the proxy process whose CPU and RSS are measured; null for `direct` */
  proc: Managed | null
}

export interface Subject {
  name: string
  about: string
  /** load sends a rotating sticky header */
  sticky: boolean
  /** why it cannot run at all (checked once, before the first round); null when it can */
  unavailable(ctx: Context): string | null
  start(ctx: Context): Promise<Running>
}

/** Thrown when a subject cannot be started; the harness marks it unavailable and goes on. */
export class Unavailable extends Error {}

const node = process.execPath
const loopback = (port: number) => `http://127.0.0.1:${port}`

async function startNodeProxy(name: string, ctx: Context, script: string): Promise<Running> {
  const port = await freePort()
  const proc = startProcess(name, node, [join(ctx.root, script), loopback(ctx.stablePort), String(port)], {
    core: PROXY_CORE,
    logPath: join(ctx.tmpDir, `${name}.log`),
    cwd: ctx.root,
  })
  try {
    await waitReady(proc, port, 10_000)
  } catch (err) {
    await stopProcess(proc)
    throw new Unavailable((err as Error).message)
  }
  return { port, proc }
}

function veerSubject(name: string, about: string, canary: boolean): Subject {
  return {
    name,
    about,
    sticky: canary,
    unavailable: (ctx) => (existsSync(join(ctx.root, 'bin/veer.js')) ? null : 'bin/veer.js not found'),
    async start(ctx) {
      const port = await freePort()
      const admin = await freePort()
      const args = [
        join(ctx.root, 'bin/veer.js'),
        'proxy',
        '--listen',
        `127.0.0.1:${port}`,
        '--admin',
        `127.0.0.1:${admin}`,
        '--stable',
        loopback(ctx.stablePort),
      ]
      if (canary) {
        args.push(
          '--canary',
          loopback(ctx.canaryPort),
          '--canary-weight',
          '20',
          '--sticky-header',
          STICKY_HEADER,
        )
      }
      const proc = startProcess(name, node, args, {
        core: PROXY_CORE,
        logPath: join(ctx.tmpDir, `${name}.log`),
        cwd: ctx.root,
      })
      try {
        await waitReady(proc, port, 15_000, `http://127.0.0.1:${admin}/healthz`)
      } catch (err) {
        await stopProcess(proc)
        throw new Unavailable((err as Error).message)
      }
      return { port, proc }
    },
  }
}

export const subjects: readonly Subject[] = [
  {
    name: 'direct',
    about: 'load straight to the upstream (the limit)',
    sticky: false,
    unavailable: () => null,
    start: async (ctx) => ({ port: ctx.stablePort, proc: null }),
  },
  veerSubject('veer', 'veer proxy, plain forward to stable', false),
  veerSubject('veer-canary-sticky', 'veer, 20% canary to a 2nd upstream, sticky on x-user-id', true),
  {
    name: 'http-proxy-3',
    about: 'http-proxy-3 v2 with a keep-alive http.Agent',
    sticky: false,
    unavailable: () => null,
    start: (ctx) => startNodeProxy('http-proxy-3', ctx, 'bench/baselines/http-proxy-3.ts'),
  },
  {
    name: 'undici-minimal',
    about: 'node:http + undici Pool.dispatch, minimal (the Node ceiling)',
    sticky: false,
    unavailable: () => null,
    start: (ctx) => startNodeProxy('undici-minimal', ctx, 'bench/baselines/undici-minimal.ts'),
  },
]
