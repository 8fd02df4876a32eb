/**
 * `veer proxy`: read flags and config, start the traffic and admin listeners, reload on SIGHUP or file
 * change, drain on SIGTERM. Nothing starts unless the whole configuration is valid.
 */
import cluster from 'node:cluster'
import { createHash } from 'node:crypto'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { formatIssue, type Issue, type LoadResult } from '../config/load.ts'
import type { ProxyConfig } from '../config/types.ts'
import type { FuseReport } from '../config/wire.ts'
import { configView, createAdminServer, localViews, rawDiffs, rawStats } from './admin.ts'
import { PROXY_HELP, parseProxyArgs } from './args.ts'
import { answerPrimary, runPrimary, tellStarted } from './cluster.ts'
import { watchConfigFile } from './config-watch.ts'
import { KnownGoodFile, openKnownGood } from './control/cache.ts'
import type { ControlLink } from './control/link.ts'
import { RollbackLedger } from './control/rollbacks.ts'
import { sameWeights, withWeights } from './control/weights.ts'
import { ProxyServer } from './listen/server.ts'
import { readTls, type TlsMaterial, tlsFiles } from './listen/tls.ts'
import { createLogger } from './log.ts'
import { ProxyMetrics } from './metrics.ts'
import { compile } from './routes/compile.ts'
import { RouteStates } from './routes/states.ts'
import { createTracing } from './tracing.ts'
import { UpstreamPools } from './upstream/pools.ts'
import { readUpstreamTrust } from './upstream/trust.ts'

export class UsageError extends Error {}

export async function runProxy(argv: string[]): Promise<void> {
  const parsed = parseProxyArgs(argv)
  if (parsed.help) {
    process.stdout.write(PROXY_HELP)
    return
  }
  const control = parsed.control && {
    url: parsed.control.url,
    stateDir: parsed.control.stateDir,
    token: await parsed.control.token(),
  }
  const first = await parsed.load()
  if (!first.ok) throw new UsageError(first.issues.map(formatIssue).join('\n'))
  if (parsed.dryRun) {
    const files = await readStartFiles(first.config)
    if (Array.isArray(files)) throw new UsageError(files.map(formatIssue).join('\n'))
    const cache = control && (await KnownGoodFile.check(control.stateDir))
    if (typeof cache === 'string') throw new UsageError(`--state-dir: ${cache}`)
    process.stdout.write(
      `veer proxy: ${dryRunSummary(first.config, files.tls, control?.url ?? null, parsed.workers)}\n`,
    )
    return
  }
  if (parsed.workers > 1 && cluster.isPrimary) {
    const { log, sink } = createLogger(first.config.log.level, true)
    await runPrimary(first.config, parsed.configPath, parsed.workers, log, sink).catch((err: Error) => {
      throw new UsageError(err.message)
    })
    return
  }
  // A worker leaves the file to its primary, which passes changes on as SIGHUP.
  const worker = cluster.isWorker
  await startProxy(first.config, parsed.load, worker ? null : parsed.configPath, control, worker)
}

/** `--dry-run`'s line: what was checked and what a start would serve. */
function dryRunSummary(
  config: ProxyConfig,
  tls: TlsMaterial | null,
  control: string | null,
  workers: number,
): string {
  const names = config.routes.map((r) => r.name).join(', ')
  const parts = [
    `${config.routes.length} route${config.routes.length === 1 ? '' : 's'} (${names})`,
    `listen ${config.listen.host}:${config.listen.port}${tls === null ? '' : ` with TLS (${tls.certificates.length} certificate${tls.certificates.length === 1 ? '' : 's'})`}`,
    `admin ${config.admin.host}:${config.admin.port}`,
  ]
  if (workers > 1) parts.push(`${workers} workers`)
  if (control !== null) parts.push(`following ${control}`)
  return `dry run: config valid, ${parts.join(', ')}; nothing started`
}

/**
 * What a start reads and checks before anything listens: the TLS files and the CA files of https://
 * upstreams. The material, or every problem (the lines a start refuses with, and `veer check`'s).
 */
export async function readStartFiles(
  config: ProxyConfig,
): Promise<{ tls: TlsMaterial | null; trust: Map<string, string> } | Issue[]> {
  const problems: Issue[] = []
  const tls = config.tls === undefined ? null : await readTls(config.tls)
  if (typeof tls === 'string') {
    // readTls names the setting first: `tls.key: cannot read …`.
    const colon = tls.indexOf(': ')
    problems.push(
      colon === -1
        ? { path: 'tls', message: tls }
        : { path: tls.slice(0, colon), message: tls.slice(colon + 2) },
    )
  }
  const trust = await readUpstreamTrust(config)
  if (Array.isArray(trust)) problems.push(...trust)
  if (typeof tls === 'string' || Array.isArray(trust)) return problems
  return { tls, trust }
}

export interface ControlOptions {
  readonly url: string
  readonly token: string
  readonly stateDir: string
}

function some<T>(items: Iterable<T>, test: (item: T) => boolean): boolean {
  for (const item of items) if (test(item)) return true
  return false
}

/** Whether the config's canary for `route` is another one than the fuse tripped on. */
function servesOther(config: ProxyConfig, route: string, fuse: FuseReport): boolean {
  const canary = config.routes.find((r) => r.name === route)?.canary
  return canary?.url !== fuse.upstream || canary?.release !== fuse.release
}

function hashOf(config: ProxyConfig): string {
  return createHash('sha256').update(JSON.stringify(config)).digest('hex').slice(0, 12)
}

function listen(server: Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((ok, fail) => {
    server.once('error', fail)
    server.listen({ host, port, backlog: 1024 }, () => {
      server.off('error', fail)
      ok(server.address() as AddressInfo)
    })
  })
}

export async function startProxy(
  config: ProxyConfig,
  reloadSource: () => Promise<LoadResult>,
  configPath: string | null,
  control: ControlOptions | null = null,
  /** A `--workers` worker: no admin listener of its own; the primary asks it over IPC. */
  worker = false,
): Promise<void> {
  const { log, sink } = createLogger(config.log.level, worker)
  // With --control, the weights last applied from control (the last-known-good file) serve from the
  // first request: a proxy restarted while control is away comes up on them, not on its file's.
  const lastKnown = control && (await openKnownGood(control.stateDir, config, log))
  if (typeof lastKnown === 'string') throw new UsageError(`--state-dir: ${lastKnown}`)
  // The file's config; the table's is this with control's weights on top.
  let fileConfig = config
  // Certificates and the CA files of https:// upstreams (those of the control-cache's config are the
  // file's) are read and checked before anything starts: a bad file is a one-line reason.
  const files = await readStartFiles(config)
  if (Array.isArray(files)) throw new UsageError(files.map(formatIssue).join('\n'))
  const { tls, trust } = files
  const metrics = new ProxyMetrics()
  const pools = new UpstreamPools()
  pools.useTrust(trust)
  let lastTrust = JSON.stringify([...trust])
  /**
   * Routes whose fuse tripped: compiled with canary weight 0 until control (or the file) changes the
   * route's weights after the trip.
   */
  const fuses = new Map<string, FuseReport>()
  const states = new RouteStates({ metrics, pools, log, sink, tracing: await createTracing(log), onFuse })
  let generation = 1
  const rollbacks = new RollbackLedger(lastKnown?.known?.routes ?? null)
  const first = compile(generation, lastKnown?.config ?? config, fuses, states)
  const proxy = new ProxyServer(first, states, tls)
  // The link (and all of undici, which its `pool.request` needs) is loaded only with --control: without it
  // the proxy starts 4.9 MiB of anonymous memory smaller (README "Memory").
  const link: ControlLink | null =
    control &&
    new (await import('./control/link.ts')).ControlLink({
      url: control.url,
      token: control.token,
      cache: lastKnown!.cache,
      log,
      known: lastKnown!.known,
      host: {
        get table() {
          return proxy.table
        },
        get file() {
          return fileConfig
        },
        apply: (revision, weights) => {
          const next = withWeights(fileConfig, weights)
          if (!next.ok) return next.issues.map(formatIssue).join('; ')
          for (const { route, reason } of rollbacks.take(fileConfig, weights, (r) => fuses.has(r))) {
            metrics.rollbacks.labels(route, reason).inc()
            log.warn({ route, reason, revision }, 'canary rolled back by control')
          }
          // A fuse holds until control sets the route's canary to 0 (its rollback) or serves another canary:
          // a newer version that still sends traffic to the canary (a rollout step that raced the report)
          // does not lift it.
          let cleared = false
          for (const [route, fuse] of fuses) {
            const w = Object.hasOwn(weights, route) ? weights[route] : undefined
            if (w === undefined) continue
            if (w.canary === 0 || servesOther(next.config, route, fuse)) cleared = fuses.delete(route)
          }
          if (!cleared && sameWeights(next.config, proxy.table.config)) return null
          generation++
          proxy.swap(compile(generation, next.config, fuses, states))
          log.info({ configVersion: generation, revision, trigger: 'control' }, 'config applied')
          log.flush()
          return null
        },
      },
    })
  function onFuse(route: string, canary: { url: string; release: string }, reason: string): void {
    if (fuses.has(route)) return
    const version = link?.weights?.[route]?.version ?? 0
    fuses.set(route, {
      reason,
      version,
      at: Date.now(),
      release: canary.release,
      upstream: canary.url,
    })
    metrics.rollbacks.labels(route, 'fuse').inc()
    generation++
    proxy.swap(compile(generation, proxy.table.config, fuses, states))
    log.warn({ route, reason, configVersion: generation }, 'canary weight set to 0 by the fuse')
  }
  const admin = {
    get table() {
      return proxy.table
    },
    get draining() {
      return proxy.draining
    },
    get control() {
      return link?.status() ?? null
    },
    configHash: hashOf(config),
  }
  const adminServer = worker ? null : createAdminServer(localViews(admin, metrics))
  // The traffic listener's connections, for the drain: one that has not sent a byte yet carries a request
  // on its way (it was opened during the grace), it is not an idle keep-alive connection to close.
  const { listener } = proxy
  const connections = listener.connections
  let traffic: AddressInfo
  let adminAddress: AddressInfo
  try {
    traffic = await listener.listen(config.listen.host, config.listen.port)
    adminAddress =
      adminServer === null ? traffic : await listen(adminServer, config.admin.host, config.admin.port)
  } catch (err) {
    // Which listener failed is known only before they are closed (close() clears `listening`).
    const which = listener.front.listening ? '--admin' : '--listen'
    listener.front.close()
    adminServer?.close()
    pools.destroyAll()
    const e = err as NodeJS.ErrnoException
    throw new UsageError(
      `${which}: cannot listen (${e.code ?? e.message}); pick a free address or stop what holds it`,
    )
  }

  // Reload: SIGHUP or a change of the file (or of its directory, as a Kubernetes ConfigMap swaps a link).
  let reloading = Promise.resolve()
  const rejected = (issues: readonly Issue[], why: string) => {
    for (const issue of issues) {
      log.error(
        { field: issue.path, reason: issue.message, trigger: why },
        'config rejected, keeping the current one',
      )
    }
    log.flush()
  }
  const reload = (why: string) => {
    reloading = reloading.then(async () => {
      if (proxy.draining) return
      const next = await reloadSource()
      if (!next.ok) return rejected(next.issues, why)
      const hash = hashOf(next.config)
      // The upstream CA files are read again on every reload: a rotated CA makes new pools.
      const trust = await readUpstreamTrust(next.config)
      if (Array.isArray(trust)) return rejected(trust, why)
      const trustKey = JSON.stringify([...trust])
      if (hash === admin.configHash && trustKey === lastTrust) return
      // Control stays the source of truth: its weights go on top of the new file too.
      const weighted = withWeights(next.config, link?.weights ?? null)
      if (!weighted.ok) return rejected(weighted.issues, why)
      pools.useTrust(trust)
      lastTrust = trustKey
      if (
        next.config.listen.port !== config.listen.port ||
        next.config.admin.port !== config.admin.port ||
        next.config.listen.host !== config.listen.host ||
        JSON.stringify(next.config.tls) !== JSON.stringify(config.tls) ||
        JSON.stringify(next.config.server.http2) !== JSON.stringify(config.server.http2)
      ) {
        log.warn(
          { trigger: why },
          'listen and admin addresses, tls files and server.http2 change only on restart; the rest is applied',
        )
      }
      // A fuse holds across reloads, unless the file now serves another canary or sets its weight to 0 (a
      // weight change alone, a pipeline's next step say, does not lift it).
      for (const [route, fuse] of [...fuses]) {
        const after = weighted.config.routes.find((r) => r.name === route)
        if (after === undefined || after.canaryWeight === 0 || servesOther(weighted.config, route, fuse))
          fuses.delete(route)
      }
      generation++
      proxy.swap(compile(generation, weighted.config, fuses, states))
      fileConfig = next.config
      admin.configHash = hash
      link?.reannounce()
      log.info({ configVersion: generation, hash, trigger: why }, 'config applied')
      log.flush()
    })
  }
  // Certificates: read again on SIGHUP and when one of their files changes (a Secret swap); a set that
  // does not load is refused and the current one kept. The files themselves change only on restart.
  let certificates = tls
  const recertify = (why: string) => {
    if (config.tls === undefined) return
    const t = config.tls
    reloading = reloading.then(async () => {
      const next = await readTls(t)
      if (typeof next === 'string') {
        log.error({ reason: next, trigger: why }, 'certificates rejected, keeping the current ones')
        return
      }
      if (certificates!.digest === next.digest) return
      certificates = next
      listener.setCertificates(next)
      log.info({ certificates: next.certificates, trigger: why }, 'certificates reloaded')
      log.flush()
    })
  }
  process.on('SIGHUP', () => {
    reload('SIGHUP')
    recertify('SIGHUP')
  })
  const watcher = configPath === null ? null : await watchConfigFile(configPath, () => reload('file change'))
  const certWatchers =
    config.tls === undefined
      ? []
      : await Promise.all(tlsFiles(config.tls).map((f) => watchConfigFile(f, () => recertify('file change'))))

  let stopping = false
  const drain = async (signal: string) => {
    if (stopping) return
    stopping = true
    const { grace, deadline } = proxy.table.config.shutdown
    // HTTP/1.1 answers now carry Connection: close; HTTP/2 connections get GOAWAY.
    proxy.drain()
    log.info({ signal, grace, deadline, inflight: proxy.inflight }, 'draining')
    await new Promise((r) => setTimeout(r, grace))
    watcher?.close()
    for (const w of certWatchers) w.close()
    // Stop accepting and close idle keep-alive connections (not those yet to send a first request: Node
    // counts them as active). The HTTP servers are not closed: http's close would also stop the checks
    // that answer a silent connection 408 after server.headersTimeout, so one could hold the drain to
    // the deadline.
    const closed = listener.stopAccepting()
    proxy.server.closeIdleConnections()
    // HTTP/2 connections opened during the grace get their GOAWAY too.
    listener.goAway()
    // A connection ends with its request. Wait, up to the deadline, until no request is in flight and no
    // connection is yet to send its first.
    const settled = async () => {
      for (;;) {
        await proxy.idle()
        if (!some(connections, (s) => s.bytesRead === 0)) return false
        await new Promise((r) => setTimeout(r, 20))
      }
    }
    const timedOut = await Promise.race([
      settled(),
      new Promise<boolean>((r) => setTimeout(() => r(true), deadline).unref()),
    ])
    if (timedOut)
      log.warn({ inflight: proxy.inflight }, 'drain deadline passed, closing the remaining connections')
    // What is left: HTTP/2 streams past the deadline, and what the HTTP server handed over (WebSocket
    // tunnels), which would otherwise keep the process alive for as long as they last.
    listener.destroyAll()
    await closed
    adminServer?.close()
    adminServer?.closeAllConnections()
    await link?.stop()
    await pools.closeAll()
    log.info({ signal }, 'veer proxy stopped')
    await sink.drained()
    process.exit(0)
  }
  link?.start()
  process.on('SIGTERM', () => void drain('SIGTERM'))
  process.on('SIGINT', () => void drain('SIGINT'))
  // Only now, with every signal handled: a SIGTERM right after this line drains rather than kills.
  const listenText = `${traffic.address}:${traffic.port}`
  if (worker) {
    answerPrimary(metrics.registry, (what) =>
      what === 'stats' ? rawStats(proxy.table) : what === 'diffs' ? rawDiffs(proxy.table) : configView(admin),
    )
    tellStarted(listenText, generation)
  }
  log.info(
    {
      listen: listenText,
      ...(worker ? {} : { admin: `${adminAddress.address}:${adminAddress.port}` }),
      routes: config.routes.map((r) => r.name),
      configVersion: generation,
      certificates: certificates === null ? undefined : certificates.certificates,
      control: link ? { url: link.url, id: link.id, revision: link.revision } : undefined,
    },
    worker ? 'veer worker started' : 'veer proxy started',
  )
  log.flush()
}
