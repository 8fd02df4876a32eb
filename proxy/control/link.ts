/**
 * The proxy's link to `veer control` (config/wire.ts): register, long-poll for new weights, apply and
 * ack each revision, report per-version outcomes every quarter second. It lives entirely off the request path:
 * its only effect on traffic is a new route table its host swaps in. While control is away the proxy
 * keeps serving on its last weights and retries with jittered backoff; every applied revision is saved to
 * the last-known-good file, which carries the weights across a restart of the proxy. Given several
 * control replicas' URLs, it moves to the next one when the current one cannot be reached or answers
 * 5xx, and registers there with the revision it has applied: a proxy in sync stays so (same weights).
 */
import { hostname } from 'node:os'
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import { Pool } from 'undici'
import type { ProxyConfig } from '../../config/types.ts'
import type {
  AckRequest,
  AnnouncedRoute,
  RegisterRequest,
  ReportRequest,
  RouteReport,
  VersionReport,
} from '../../config/wire.ts'
import { addInto, emptyCounts, type OutcomeWindow, SLOT_MS } from '../analysis/window.ts'
import type { RouteTable } from '../routes/table.ts'
import { Backoff } from './backoff.ts'
import type { KnownGoodFile } from './cache.ts'
import {
  announcedRoutes,
  type ControlWeights,
  markChanged,
  otherReleases,
  parseRevision,
  type Revision,
} from './weights.ts'

/** Calls other than the watch; a control that takes longer is treated as away. */
const CALL_TIMEOUT_MS = 5_000
/** Control answers a watch with 204 after ~20 s of nothing new; past this it is taken for lost. */
const WATCH_TIMEOUT_MS = 30_000
/** A report never reaches further back than the window holds (30 s). */
const MAX_REPORT_SLOTS = (29 * 1000) / SLOT_MS

/** What the link needs from the proxy it steers. */
export interface ControlHost {
  readonly table: RouteTable
  /** The config file as loaded (without control's weights); control is told of its routes. */
  readonly file: ProxyConfig
  /** Install control's weights over the file's; the reason when they cannot be (and nothing changed). */
  apply(revision: number, weights: ControlWeights): string | null
}

export interface ControlStatus {
  url: string
  id: string
  connected: boolean
  /** The control revision applied (0: none yet). */
  revision: number
  lastError: string | null
  /**
   * Routes served as the file says because control's weights are for another release pair (a new
   * release control has not taken in yet, or a config control moved away from).
   */
  otherReleases: string[]
}

/** A non-2xx answer from control. */
class ControlError extends Error {
  readonly status: number
  readonly path: string
  constructor(status: number, path: string, message: string) {
    super(message)
    this.status = status
    this.path = path
  }
}

function describe(err: unknown): string {
  if (err instanceof ControlError) return err.message
  const e = err as NodeJS.ErrnoException
  const message = String(e.message ?? err)
  return e.code && !message.includes(e.code) ? `${e.code}: ${message}` : message
}

/** Outcomes of every route and version over the window slots `from..to` (reads the windows only). */
export function reportOf(table: RouteTable, revision: number, from: number, to: number): ReportRequest {
  const sum = (window: OutcomeWindow): VersionReport => {
    const total = emptyCounts()
    for (let i = from; i <= to; i++) addInto(total, window.countsAt(i))
    return total
  }
  const routes: Record<string, RouteReport> = {}
  for (const r of table.routes) {
    const stable = sum(r.stable.state.window)
    const canary = r.canary ? sum(r.canary.state.window) : null
    routes[r.name] = r.fuse === null ? { stable, canary } : { stable, canary, fuse: r.fuse }
  }
  return { revision, intervalMs: (to - from + 1) * SLOT_MS, routes }
}

export interface ControlLinkOptions {
  /** One control URL, or several replicas' comma-separated. */
  readonly url: string
  readonly token: string
  readonly host: ControlHost
  readonly cache: KnownGoodFile
  readonly log: Logger
  /** The revision already applied from the last-known-good file, if any. */
  readonly known: Revision | null
}

/** One control replica: its URL and the connections to it. */
interface Target {
  readonly url: string
  readonly base: string
  readonly pool: Pool
}

export class ControlLink {
  readonly id = `${hostname()}-${process.pid}-${Math.round(performance.timeOrigin)}`
  /** Control's weights as last applied (null before any): a config reload keeps them on top of the file. */
  weights: ControlWeights | null
  revision: number
  connected = false
  lastError: string | null = null
  readonly #host: ControlHost
  readonly #cache: KnownGoodFile
  #log: Logger
  readonly #baseLog: Logger
  readonly #targets: readonly Target[]
  /** The replica talked to now, and the failures in a row since one answered (a whole round: back off). */
  #at = 0
  #misses = 0
  readonly #headers: Record<string, string>
  readonly #backoff = new Backoff()
  /** The newest revision received, applied or refused: the watch asks for one newer than this. */
  #seen: number
  /** Bumped when the announced routes change; registered is `#registered === #announce`, -1 after a failure. */
  #announce = 0
  #registered = -1
  #announced = ''
  /** The routes as control last took them (a successful registration); null before the first. */
  #heard: readonly AnnouncedRoute[] | null = null
  #watch: AbortController | null = null
  #stopped = false
  #timer: NodeJS.Timeout | null = null
  #lastReported = Math.floor(performance.now() / SLOT_MS) - 1
  #reporting = false
  #warned = false

  constructor(options: ControlLinkOptions) {
    this.#targets = options.url.split(',').map((text) => {
      const url = new URL(text)
      const base = url.pathname.replace(/\/+$/, '')
      const pool = new Pool(url.origin, { connections: 4, maxResponseSize: 1 << 20 })
      return { url: `${url.origin}${base}`, base, pool }
    })
    this.#headers = { authorization: `Bearer ${options.token}`, 'content-type': 'application/json' }
    this.#host = options.host
    this.#cache = options.cache
    this.#baseLog = options.log
    this.#log = options.log.child({ component: 'control', control: this.url })
    this.weights = options.known?.routes ?? null
    this.revision = options.known?.revision ?? 0
    this.#seen = this.revision
  }

  /** The control replica this proxy talks to now. */
  get url(): string {
    return this.#targets[this.#at]!.url
  }

  start(): void {
    void this.#run()
    this.#scheduleReport()
  }

  async stop(): Promise<void> {
    this.#stopped = true
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#watch?.abort()
    await Promise.all(this.#targets.map((t) => t.pool.destroy().catch(() => {})))
  }

  /** After a config reload: register again if the routes to announce changed. */
  reannounce(): void {
    if (JSON.stringify(announcedRoutes(this.#host.file)) === this.#announced) return
    this.#announce++
    this.#watch?.abort()
  }

  status(): ControlStatus {
    const { url, id, connected, revision, lastError } = this
    return {
      url,
      id,
      connected,
      revision,
      lastError,
      otherReleases: otherReleases(this.#host.file, this.weights),
    }
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      try {
        if (this.#registered !== this.#announce) {
          await this.#register()
          continue
        }
        const watch = new AbortController()
        this.#watch = watch
        let update: unknown
        try {
          update = await this.#call('GET', `/watch?revision=${this.#seen}`, null, watch.signal)
        } catch (err) {
          // Aborted by reannounce() or a report's 404: register again at once.
          if (watch.signal.aborted && !this.#stopped) continue
          throw err
        } finally {
          this.#watch = null
        }
        if (update !== null) await this.#take(update)
        // Control answered a watch: it is healthy, and the next outage starts from the first step.
        this.#backoff.reset()
        this.#misses = 0
      } catch (err) {
        if (this.#stopped) return
        this.#fail(err)
        // Another replica is tried at once; only after a whole round without an answer, a pause.
        if (this.#move(err) && ++this.#misses < this.#targets.length) continue
        await new Promise((r) => setTimeout(r, this.#backoff.next()).unref())
      }
    }
  }

  async #register(): Promise<void> {
    const announce = this.#announce
    const routes = announcedRoutes(this.#host.file)
    // A reload that changed a route's releases since control last heard from this proxy says so: an
    // operator's change, which control takes in even when it goes back to a pair served before.
    const body: RegisterRequest = {
      id: this.id,
      routes: markChanged(routes, this.#heard),
      appliedRevision: this.revision,
    }
    const answer = await this.#call('POST', '/v1/proxies/register', body)
    this.#registered = announce
    this.#announced = JSON.stringify(routes)
    this.#heard = routes
    if (!this.connected) {
      this.connected = true
      this.#warned = false
      this.#log.info({ id: this.id, appliedRevision: this.revision }, 'control connected')
      this.#log.flush()
    }
    await this.#take(answer)
  }

  /** Apply (or refuse) one revision, save it when applied, and ack it either way. */
  async #take(raw: unknown): Promise<void> {
    const update = parseRevision(raw)
    if (typeof update === 'string')
      throw new Error(`control sent a revision this proxy cannot read: ${update}`)
    this.#seen = update.revision
    let error: string | null
    try {
      error = this.#host.apply(update.revision, update.routes)
    } catch (err) {
      error = `cannot apply: ${describe(err)}`
    }
    if (error === null) {
      const changed = update.revision !== this.revision
      this.weights = update.routes
      this.revision = update.revision
      // Not waited for: an fsync must not hold up the ack or the next watch (saves queue in order).
      if (changed) {
        this.#cache.save(update).catch((err) => {
          this.lastError = `cannot save ${this.#cache.path}: ${describe(err)}`
          this.#log.warn({ error: this.lastError }, 'last-known-good weights not saved')
        })
      }
    } else {
      this.lastError = `revision ${update.revision} refused: ${error}`
      this.#log.warn(
        { revision: update.revision, reason: error },
        'control weights refused, keeping the current ones',
      )
      this.#log.flush()
    }
    const ack: AckRequest = { revision: update.revision, error }
    await this.#call('POST', '/ack', ack)
  }

  /** Move to the next replica when this one cannot be reached or answers 5xx; whether it moved. */
  #move(err: unknown): boolean {
    if (this.#targets.length === 1) return false
    const status = err instanceof ControlError ? err.status : 0
    if (status !== 0 && status < 500) return false
    const from = this.url
    this.#at = (this.#at + 1) % this.#targets.length
    this.#log = this.#baseLog.child({ component: 'control', control: this.url })
    this.#log.info({ from, error: describe(err) }, 'moving to the next control replica')
    return true
  }

  #fail(err: unknown): void {
    this.#registered = -1
    this.connected = false
    this.lastError = describe(err)
    const status = err instanceof ControlError ? err.status : 0
    // A 404 for this proxy's id: control restarted and forgot it. (One for register itself is a wrong URL.)
    if (status === 404 && !(err as ControlError).path.endsWith('/register')) {
      this.#log.info(
        { error: this.lastError },
        'control does not know this proxy (restarted?); registering again',
      )
    } else if (!this.#warned) {
      // Once per outage; the retries that follow are debug lines.
      this.#warned = true
      const level = status === 401 || status === 403 ? 'error' : 'warn'
      this.#log[level](
        { error: this.lastError },
        'control unreachable; serving on the last weights, retrying',
      )
    } else {
      this.#log.debug({ error: this.lastError }, 'control still unreachable')
    }
    this.#log.flush()
  }

  /**
   * `path` under /v1/proxies/{id} (or a full /v1 path); the JSON answer, or null for 204. A token is
   * never part of an error message or a log line.
   */
  async #call(
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    signal: AbortSignal | null = null,
  ): Promise<unknown> {
    const full = path.startsWith('/v1/') ? path : `/v1/proxies/${encodeURIComponent(this.id)}${path}`
    const timeout = signal === null ? CALL_TIMEOUT_MS : WATCH_TIMEOUT_MS
    const target = this.#targets[this.#at]!
    const res = await target.pool.request({
      path: target.base + full,
      method,
      headers: this.#headers,
      body: body === null ? undefined : JSON.stringify(body),
      signal: signal ?? undefined,
      headersTimeout: timeout,
      bodyTimeout: timeout,
    })
    const text = await res.body.text()
    if (res.statusCode >= 200 && res.statusCode < 300) return text === '' ? null : JSON.parse(text)
    let detail = ''
    try {
      const e = JSON.parse(text) as { error?: unknown; message?: unknown }
      detail = `: ${e.error ?? ''}${e.message ? ` (${e.message})` : ''}`
    } catch {}
    const where = full.split('?')[0]!
    throw new ControlError(res.statusCode, where, `${method} ${where} answered ${res.statusCode}${detail}`)
  }

  #scheduleReport(): void {
    // Just past the next slot boundary of the windows' clock, so the slot that ended is complete.
    const now = performance.now()
    this.#timer = setTimeout(() => this.#report(), SLOT_MS - (now % SLOT_MS) + 5)
    this.#timer.unref()
  }

  #report(): void {
    if (this.#stopped) return
    this.#scheduleReport()
    // One report at a time: a slow control gets the slots in between merged into the next one.
    if (this.#reporting) return
    const to = Math.floor(performance.now() / SLOT_MS) - 1
    const from = Math.max(this.#lastReported + 1, to - MAX_REPORT_SLOTS + 1)
    if (from > to) return
    this.#lastReported = to
    // Unregistered (control away): these slots are dropped; stale outcomes would mislead analysis.
    if (this.#registered === -1) return
    this.#reporting = true
    this.#call('POST', '/report', reportOf(this.#host.table, this.revision, from, to))
      .catch((err) => {
        if (this.#stopped) return
        this.lastError = `report: ${describe(err)}`
        this.#log.debug({ error: this.lastError }, 'report not taken')
        // A 404 means control lost this proxy: register again. The watch notices an outage by itself.
        if (err instanceof ControlError && err.status === 404) {
          this.#registered = -1
          this.#watch?.abort()
        }
      })
      .finally(() => (this.#reporting = false))
  }
}
