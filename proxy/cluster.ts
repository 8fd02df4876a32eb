/**
 * `veer proxy --workers N`: the primary process forks N workers that share the traffic listener
 * (node:cluster hands each new connection to a worker), and serves the one admin listener itself:
 * metrics summed across workers (prom-client's AggregatorRegistry), stats merged from their counts,
 * config from the first worker. SIGHUP and config-file changes are passed to every worker; SIGTERM
 * drains them all, then the primary exits 0. A worker that dies outside a drain is replaced.
 */
import cluster, { type Worker } from 'node:cluster'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import { AggregatorRegistry, type Registry } from 'prom-client'
import type { ProxyConfig } from '../config/types.ts'
import { type AdminViews, createAdminServer, type RawStats } from './admin.ts'
import { watchConfigFile } from './config-watch.ts'
import type { LineSink } from './log.ts'
import type { DiffSample } from './shadow/stats.ts'

/** Messages between the primary and its workers (besides prom-client's own). */
type Ask = { veer: 'ask'; id: number; what: 'stats' | 'diffs' | 'config' }
type Reply = { veer: 'reply'; id: number; body: unknown }
type Started = { veer: 'started'; listen: string; configVersion: number }
type WorkerMessage = Reply | Started

export function isVeerAsk(m: unknown): m is Ask {
  return typeof m === 'object' && m !== null && (m as Ask).veer === 'ask'
}

/** In a worker: answer the primary's questions from this process's views. */
export function answerPrimary(registry: Registry, answer: (what: Ask['what']) => unknown): void {
  // prom-client answers the primary's metric requests from these registries once an AggregatorRegistry
  // exists in the worker.
  AggregatorRegistry.setRegistries([registry])
  new AggregatorRegistry()
  process.on('message', (m: unknown) => {
    if (isVeerAsk(m)) process.send?.({ veer: 'reply', id: m.id, body: answer(m.what) } satisfies Reply)
  })
}

export function tellStarted(listen: string, configVersion: number): void {
  process.send?.({ veer: 'started', listen, configVersion } satisfies Started)
}

export async function runPrimary(
  config: ProxyConfig,
  configPath: string | null,
  count: number,
  log: Logger,
  sink: LineSink,
): Promise<void> {
  const aggregator = new AggregatorRegistry()
  const workers = new Set<Worker>()
  const started = new Map<Worker, Started>()
  const pending = new Map<number, { left: number; bodies: unknown[]; done: (b: unknown[]) => void }>()
  let nextId = 0
  let draining = false

  const ask = (what: Ask['what']): Promise<unknown[]> => {
    const live = [...workers].filter((w) => started.has(w) && w.isConnected())
    if (live.length === 0) return Promise.resolve([])
    const id = nextId++
    return new Promise((resolveAsk, reject) => {
      const timer = setTimeout(() => {
        pending.delete(id)
        reject(new Error(`workers did not answer ${what} within 5 s`))
      }, 5000)
      pending.set(id, {
        left: live.length,
        bodies: [],
        done: (bodies) => {
          clearTimeout(timer)
          resolveAsk(bodies)
        },
      })
      for (const w of live) w.send({ veer: 'ask', id, what } satisfies Ask)
    })
  }

  /** Set while the first workers start: a worker that cannot start then fails the whole start. */
  let failStart: ((reason: Error) => void) | null = null
  let startFailed = false
  const fork = () => {
    const w = cluster.fork({ VEER_WORKER: '1' })
    const forkedAt = Date.now()
    workers.add(w)
    w.on('message', (m: WorkerMessage) => {
      if (m?.veer === 'started') started.set(w, m)
      else if (m?.veer === 'reply') {
        const p = pending.get(m.id)
        if (p === undefined) return
        p.bodies.push(m.body)
        if (--p.left === 0) {
          pending.delete(m.id)
          p.done(p.bodies)
        }
      }
    })
    w.on('exit', (code, signal) => {
      const wasStarted = started.delete(w)
      workers.delete(w)
      if (startFailed) return
      if (draining) {
        if (workers.size === 0) finish()
        return
      }
      if (!wasStarted && failStart !== null) {
        startFailed = true
        // Its own error line (bad address, bad token file, …) is already on stderr.
        failStart(new Error(`a worker could not start (exit code ${code ?? signal}); see its error above`))
        return
      }
      // A worker that dies young waits a second before its replacement: no tight fork loop.
      const delay = Date.now() - forkedAt < 5000 ? 1000 : 0
      log.error({ worker: w.process.pid, code, signal, restartInMs: delay }, 'worker died; starting another')
      setTimeout(fork, delay)
    })
  }

  const views: AdminViews = {
    get draining() {
      return draining
    },
    configVersion: () =>
      started.size === count ? Math.min(...[...started.values()].map((s) => s.configVersion)) : 0,
    metrics: async () => ({ contentType: aggregator.contentType, text: await aggregator.clusterMetrics() }),
    config: async () => ({ workers: started.size, ...((await ask('config'))[0] as object) }),
    stats: async () => (await ask('stats')) as RawStats[],
    diffs: async () => (await ask('diffs')) as Record<string, DiffSample[]>[],
  }
  const admin = createAdminServer(views)
  const adminAddress = await new Promise<AddressInfo>((ok, fail) => {
    admin.once('error', fail)
    admin.listen({ host: config.admin.host, port: config.admin.port }, () =>
      ok(admin.address() as AddressInfo),
    )
  }).catch((err: NodeJS.ErrnoException) => {
    throw new Error(
      `--admin: cannot listen (${err.code ?? err.message}); pick a free address or stop what holds it`,
    )
  })

  for (let i = 0; i < count; i++) fork()
  // Every worker up, or none: one that cannot start stops the others and the start fails.
  try {
    await new Promise<void>((ok, fail) => {
      failStart = fail
      const check = () => {
        if (started.size === count) ok()
        else if (!startFailed) setTimeout(check, 20)
      }
      check()
    })
  } catch (err) {
    startFailed = true
    for (const w of workers) w.process.kill('SIGKILL')
    admin.close()
    throw err
  } finally {
    failStart = null
  }

  const signalAll = (signal: NodeJS.Signals) => {
    for (const w of workers) w.process.kill(signal)
  }
  process.on('SIGHUP', () => signalAll('SIGHUP'))
  // One watcher for all: a change is passed on as SIGHUP, and each worker reloads and validates.
  const watcher = configPath === null ? null : await watchConfigFile(configPath, () => signalAll('SIGHUP'))
  const finish = () => {
    watcher?.close()
    admin.close()
    admin.closeAllConnections()
    log.info({ workers: count }, 'veer proxy stopped')
    void sink.drained().then(() => process.exit(0))
  }
  const drain = (signal: NodeJS.Signals) => {
    if (draining) return
    draining = true
    log.info({ signal, workers: workers.size }, 'draining')
    signalAll('SIGTERM')
    if (workers.size === 0) finish()
  }
  process.on('SIGTERM', () => drain('SIGTERM'))
  process.on('SIGINT', () => drain('SIGINT'))

  const first = [...started.values()][0]!
  log.info(
    {
      listen: first.listen,
      admin: `${adminAddress.address}:${adminAddress.port}`,
      routes: config.routes.map((r) => r.name),
      configVersion: first.configVersion,
      workers: count,
    },
    'veer proxy started',
  )
  log.flush()
}
