/**
 * `veer control`: check flags, tokens and the state dir, then serve the API. Nothing listens unless all
 * of it is valid. SIGHUP re-reads the token file; SIGTERM/SIGINT finish the queued writes and stop.
 * A failed state write stops the process (exit 1): what is on disk stays the last acknowledged state,
 * and a restart (systemd, Kubernetes) resumes from it — retrying a write after a failed fsync is not safe.
 */
import { createServer as createHttp, type Server } from 'node:http'
import { createServer as createHttps } from 'node:https'
import type { AddressInfo } from 'node:net'
import { resolve } from 'node:path'
import { AnalysisBook } from './analysis.ts'
import { createApi } from './api.ts'
import { CONTROL_HELP, type ControlSetup, ControlUsageError, parseControlArgs } from './args.ts'
import { FailureLimiter, type Tokens } from './auth.ts'
import { RolloutClock } from './clock.ts'
import type { ControlStore } from './control-store.ts'
import { Denials } from './denials.ts'
import { Engine } from './engine.ts'
import { connect, EtcdStore } from './etcd-store.ts'
import { EventHub } from './events.ts'
import { LeaderFeed } from './feed.ts'
import { EtcdLeadership, type Leadership, replicaId, SOLE } from './leader.ts'
import { ProxyLink } from './link.ts'
import { createLogger } from './log.ts'
import { ControlMetrics } from './metrics.ts'
import { exportStateDir, importIntoEtcd } from './migrate.ts'
import { Notifier, redact } from './notify.ts'
import { PrometheusBook } from './prometheus.ts'
import { ProxyRegistry } from './proxies.ts'
import { EtcdProxyBook } from './proxy-book.ts'
import { StatsFeed } from './stats.ts'
import { type Inspection, Store, StoreError } from './store.ts'
import { loadUi } from './ui.ts'

export { ControlUsageError }

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost'])

export async function runControl(argv: string[]): Promise<void> {
  const setup = await parseControlArgs(argv, process.env)
  if (setup === 'help') {
    process.stdout.write(CONTROL_HELP)
    return
  }
  const { config } = setup
  const stateDir = resolve(config.stateDir)
  if (setup.dryRun) return dryRun(setup, stateDir)
  const log = createLogger(config.log.level)
  const etcd = config.store.etcd
  // Read before the store is opened (and locked): a build without the page's files fails here, cleanly.
  const ui = readUi()
  let store: ControlStore
  // This process as a control replica (etcd): its audit entries and its election candidacy name it.
  const replica = replicaId()
  try {
    if (setup.exportFile !== null) {
      const done = await exportStateDir(stateDir, setup.exportFile, log)
      log.info({ stateDir, file: setup.exportFile, ...done }, 'state exported')
      return
    }
    if (setup.importFile !== null && etcd !== null) {
      const done = await importIntoEtcd(etcd, setup.importFile)
      log.info(
        { endpoints: etcd.endpoints, prefix: etcd.prefix, file: setup.importFile, ...done },
        'state imported',
      )
      return
    }
    if (setup.recover) {
      const { store: rebuilt, recovery } = await Store.recover(stateDir, log)
      await rebuilt.close()
      log.info({ stateDir, ...recovery }, 'state rebuilt from the audit')
      return
    }
    store = etcd === null ? await Store.open(stateDir, log) : await EtcdStore.open(etcd, log, replica)
  } catch (err) {
    if (err instanceof StoreError) throw new ControlUsageError(err.message)
    throw err
  }
  let tokens: Tokens = setup.tokens
  let closing = false
  const proxies = new ProxyRegistry(setup.liveMs)
  const events = new EventHub()
  const notifier = new Notifier(config.webhooks, log, setup.notifier)
  const metrics = new ControlMetrics()
  if (etcd === null) metrics.watchStateDir(stateDir)
  store.observer = metrics
  // A Prometheus evaluation that came back is acted on at once, not at the next tick.
  const prometheus = new PrometheusBook({ evaluated: () => clock.tick() })
  const analysis = new AnalysisBook(prometheus)
  // Several replicas on one etcd prefix: one leads and runs the clock (control/leader.ts).
  const lead: Leadership =
    etcd === null
      ? SOLE
      : new EtcdLeadership(connect(etcd), etcd.prefix, etcd.leaseTtl, replica, log, {
          elected: () => clock.elected(),
          deposed: () => {},
        })
  const engine = new Engine({
    lead,
    remoteChanged: () => clock.tick(),
    analysis,
    store,
    proxies,
    events,
    notifier,
    log,
    fatal: (err) => {
      log.fatal(
        { err },
        'state could not be written; stopping so that the state dir stays the last acknowledged state',
      )
      closing = true
      setTimeout(() => process.exit(1), 100)
    },
  })
  const clock = new RolloutClock({
    engine,
    proxies,
    analysis,
    log,
    graceMs: setup.graceMs,
    lead,
  })
  // Every replica knows every proxy, from their records in etcd (control/proxy-book.ts).
  const book =
    etcd === null
      ? null
      : new EtcdProxyBook(connect(etcd), etcd.prefix, replica, etcd.leaseTtl, proxies, log, (id, by, rec) => {
          events.publish('proxy', {
            kind: rec === null ? 'gone' : 'record',
            id,
            replica: by,
            appliedRevision: rec?.appliedRevision ?? null,
          })
          clock.tick()
        })
  void book?.start()
  metrics.watchRoutes(() => engine.state, proxies, engine.now)
  metrics.watchLead(lead)
  const stats = new StatsFeed({ engine, events, proxies, analysis })
  const link = new ProxyLink({ engine, proxies, events, clock, log, analysis, stats })
  const denials = new Denials((draft) => engine.deny(draft), setup.denialIntervalMs)
  const handler = createApi({
    engine,
    lead,
    ...(etcd !== null && { feed: new LeaderFeed(lead, log) }),
    ...(book !== null && { registryHealthy: () => book.healthy() }),
    link,
    proxies,
    events,
    tokens: () => tokens,
    limiter: new FailureLimiter(setup.authBurst, setup.authRefillMs),
    denials,
    log,
    watchMs: setup.watchMs,
    closing: () => closing,
    metrics,
    ui,
  })
  const server: Server = setup.tls ? createHttps({ ...setup.tls }, handler) : createHttp(handler)
  let address: AddressInfo
  try {
    address = await new Promise<AddressInfo>((ok, fail) => {
      server.once('error', fail)
      server.listen({ host: config.listen.host, port: config.listen.port }, () => {
        server.off('error', fail)
        ok(server.address() as AddressInfo)
      })
    })
  } catch (err) {
    events.close()
    await store.close()
    throw new ControlUsageError(
      `--listen: cannot listen on ${config.listen.host}:${config.listen.port} (${(err as NodeJS.ErrnoException).code}); pick a free address`,
    )
  }
  const ticker = setInterval(() => clock.tick(), setup.tickMs)
  // This replica's proxies that stopped (or started) being live: their etcd records say so.
  // Cut off from etcd, the long polls waiting here are answered at once: the proxies' next watch gets 503
  // (api.ts) and they move to a replica that sees etcd.
  let healthy = true
  const sweeper =
    book === null
      ? null
      : setInterval(() => {
          proxies.sweep(engine.now())
          const now = book.healthy()
          if (healthy && !now) {
            log.warn(
              'cut off from etcd past two thirds of the lease: sending this replica’s proxies elsewhere',
            )
            proxies.closeAll()
          }
          healthy = now
        }, 1000)
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
  const url = `${setup.tls ? 'https' : 'http'}://${host}:${address.port}`
  if (lead instanceof EtcdLeadership) lead.start(etcd?.advertise ?? url)

  process.on('SIGHUP', () => {
    const next = setup.readTokens()
    if (!next.ok) {
      log.error({ reason: next.error }, 'token file rejected, keeping the current tokens')
      return
    }
    tokens = next.tokens
    log.info({ tokens: tokens.size }, 'tokens reloaded')
  })
  const stop = async (signal: string) => {
    if (closing) return
    closing = true
    clearInterval(ticker)
    if (sweeper !== null) clearInterval(sweeper)
    proxies.closeAll()
    stats.close()
    events.close()
    notifier.close()
    server.close()
    server.closeIdleConnections()
    await denials.close().catch(() => {})
    await engine.idle()
    await book?.close()
    await lead.close()
    await store.close()
    server.closeAllConnections()
    log.info({ signal }, 'veer control stopped')
    process.exit(0)
  }
  process.on('SIGTERM', () => void stop('SIGTERM'))
  process.on('SIGINT', () => void stop('SIGINT'))

  if (!LOOPBACK.has(config.listen.host) && setup.tls === null)
    log.warn(
      { listen: `${host}:${address.port}` },
      'listening beyond loopback without TLS: tokens cross the network in clear; give --tls-cert and --tls-key',
    )
  log.info(
    {
      listen: `${host}:${address.port}`,
      url,
      ...(etcd !== null && { replica: lead.view().replica, leaseTtl: etcd.leaseTtl }),
      ...(etcd === null ? { stateDir } : { etcd: { endpoints: etcd.endpoints, prefix: etcd.prefix } }),
      revision: store.state.revision,
      routes: Object.keys(store.state.routes),
      tokens: tokens.size,
      webhooks: config.webhooks.map(redact),
    },
    'veer control started',
  )
  for (const note of setup.tokenNotes) log.info({ note }, 'token sources overlap')
}

/** `--dry-run`: the state dir read as a start reads it (no lock, nothing written), then one line. */
async function dryRun(setup: ControlSetup, stateDir: string): Promise<void> {
  const { config } = setup
  readUi()
  const etcd = config.store.etcd
  // etcd is not asked: a dry run checks what this machine has, and a start says in one line when etcd is not there.
  const found: Inspection | null = etcd === null ? await inspect(stateDir) : null
  const dir =
    found === null
      ? `etcd ${etcd!.endpoints.join(',')} prefix ${etcd!.prefix} (not contacted)`
      : found.exists
        ? `state dir ${stateDir} at revision ${found.revision} (${found.routes} route${found.routes === 1 ? '' : 's'})`
        : `state dir ${stateDir} (missing: a start creates it)`
  const parts = [
    `listen ${config.listen.host}:${config.listen.port}${setup.tls === null ? '' : ' with TLS'}`,
    dir,
    `${setup.tokens.size} token${setup.tokens.size === 1 ? '' : 's'}`,
  ]
  if (config.webhooks.length > 0) parts.push(`${config.webhooks.length} webhook(s)`)
  const repairs =
    found === null || found.repairs.length === 0 ? '' : `; at start ${found.repairs.join(', and ')}`
  process.stdout.write(
    `veer control: dry run: config valid, ${parts.join(', ')}${repairs}; nothing started\n`,
  )
}

/** The status page's files, read as a start reads them (a build without dist/control/ui has none). */
function readUi(): ReturnType<typeof loadUi> {
  try {
    return loadUi()
  } catch (err) {
    throw new ControlUsageError(`the status page's files cannot be read: ${(err as Error).message}`)
  }
}

async function inspect(stateDir: string): Promise<Inspection> {
  try {
    // Silent: what a start would log (an interrupted change it completes) is in the dry run's line.
    return await Store.inspect(stateDir, createLogger('silent'))
  } catch (err) {
    if (err instanceof StoreError) throw new ControlUsageError(err.message)
    throw err
  }
}
