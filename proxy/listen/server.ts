/**
 * The traffic listener: node:http → route → pick a version → forward through undici. Requests read one
 * frozen route table; `swap()` replaces it whole. Errors become answers in one place (respond.ts).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import type { ProxyConfig } from '../../config/types.ts'
import { ERROR, FAILED, HARMED, SAVED } from '../analysis/window.ts'
import { Exchange, type ExchangeHost } from '../chain/exchange.ts'
import { tunnel } from '../chain/upgrade.ts'
import type { ProxyErrorCode } from '../errors.ts'
import { type LineSink, requestLine } from '../log.ts'
import type { Backend, CompiledRoute, Fallback, RouteTable } from '../routes/table.ts'
import { type Mirror, type MirrorHost, startMirror } from '../shadow/mirror.ts'
import { pickBackend } from '../split/pick.ts'
import { cookieValue } from '../split/sticky.ts'
import type { Tracing } from '../tracing.ts'
import { appendVia, type ForwardingPolicy, pathOf, RequestHead } from './headers.ts'
import { sendError, sendErrorOnSocket } from './respond.ts'

const VIA = '1.1 veer'
const RETRIED_EXTRA = ',"retried":"stable"'

export class ProxyServer implements ExchangeHost, MirrorHost {
  readonly server: Server
  table: RouteTable
  draining = false
  ejectAfter = 5
  ejectForMs = 5000
  readonly #log: Logger
  readonly #sink: LineSink
  readonly #tracing: Tracing | null
  #policy: ForwardingPolicy = { trustedHops: 0, via: VIA, overrideHeader: 'x-veer-version' }
  #versionHeader = 'x-veer-version'
  #maxHeaderFields = 100
  #accessLog = true
  #accessSample = 1
  #inflight = 0
  #idle: (() => void) | null = null

  constructor(table: RouteTable, log: Logger, sink: LineSink, tracing: Tracing | null) {
    this.table = table
    this.#log = log
    this.#sink = sink
    this.#tracing = tracing
    const s = table.config.server
    this.server = createServer(
      {
        headersTimeout: s.headersTimeout,
        requestTimeout: s.requestTimeout,
        keepAliveTimeout: s.keepAliveTimeout,
        maxHeaderSize: s.maxHeaderBytes,
        // Checks for the two timeouts above run on this period (Node's default is 30 s, too coarse).
        connectionsCheckingInterval: Math.min(1000, Math.max(100, Math.floor(s.headersTimeout / 4))),
        insecureHTTPParser: false,
        // A missing Host is answered by the handler with the proxy's own JSON 400, not Node's bare one.
        requireHostHeader: false,
        joinDuplicateHeaders: false,
        // Only WebSocket upgrades are tunnelled; anything else (h2c) is served as a plain request.
        shouldUpgradeCallback: isWebSocketUpgrade,
      } as Parameters<typeof createServer>[0],
      this.#onRequest,
    )
    this.server.on('upgrade', this.#onUpgrade)
    this.server.on('clientError', onClientError)
    this.#apply(table.config)
  }

  /** Install a new snapshot; requests in flight finish on the table they started with. */
  swap(table: RouteTable): void {
    this.table = table
    this.#apply(table.config)
  }

  #apply(config: ProxyConfig): void {
    this.#policy = {
      trustedHops: config.trustedHops,
      via: config.via ? VIA : null,
      overrideHeader: config.versionHeader === '' ? 'x-veer-version' : config.versionHeader.toLowerCase(),
    }
    this.#versionHeader = config.versionHeader
    this.#maxHeaderFields = config.server.maxHeaders
    // No parser count limit (Node's answers a bare error): the head is bounded by maxHeaderBytes, and the
    // handler counts the fields to answer too_many_headers itself.
    this.server.maxHeadersCount = 0
    this.#accessLog = config.log.access && this.#log.isLevelEnabled('info')
    this.#accessSample = config.log.accessSample
    this.ejectAfter = config.health.ejectAfter
    this.ejectForMs = config.health.ejectFor
  }

  get inflight(): number {
    return this.#inflight
  }

  #onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const start = performance.now()
    const url = req.url!
    const head = new RequestHead()
    const policy = this.#policy
    const refused = this.#check(req, head)
    if (refused !== null) return this.#reject(res, refused)
    const route = this.table.match(head.host, url)
    if (route === null) return this.#reject(res, 'no_route')
    const backend = pickBackend(route, head.override, stickyKey(route, head))
    if (backend === null) return this.#reject(res, 'no_healthy_upstream')
    const upstream = backend.upstream
    if (upstream.inflight >= upstream.limit) return this.#reject(res, 'upstream_overloaded', backend)
    const socket = req.socket
    head.addForwarding(policy, socket.remoteAddress ?? '', socket.remoteFamily ?? 'IPv4')
    head.setHost(route.preserveHost ? head.host : upstream.host)
    const ex = new Exchange(this, req, res, route, backend, start)
    if (this.#tracing !== null) this.#tracing.start(ex, head)
    // A tester who forced a version gets its answer, failure included; users get stable's instead.
    const fallback = route.fallback
    const forced = route.allowOverride && head.override !== undefined
    ex.forced = forced
    if (fallback !== null && backend !== route.stable && !forced && retryable(fallback, req.method!, head)) {
      if (!head.hasBody) ex.retry = { head, body: null }
      else if (route.shadow === null || route.shadow.threshold === 0) {
        // A body is kept for the retry only when its length is known and small: read it, then forward.
        // (A mirrored body is teed as it streams, so a route that mirrors retries only bodiless requests.)
        const length = Number(head.get('content-length'))
        if (length <= fallback.maxBodyBytes) return this.#readThenForward(ex, head, length)
      }
    }
    let body: IncomingMessage | Mirror['primaryBody'] = head.hasBody ? req : null
    let secondary: string[] | null = null
    if (route.shadow !== null) {
      const m = startMirror(this, route.shadow, req, head.headers, head.hasBody, backend)
      if (m !== null) {
        ex.mirror = m.mirror
        secondary = m.secondary
        if (m.mirror.primaryBody !== null) body = m.mirror.primaryBody
        if (this.#tracing !== null) this.#tracing.startShadow(ex, m.mirror)
      }
    }
    upstream.inflight++
    this.#inflight++
    upstream.pool.dispatch({ path: url, method: req.method!, headers: head.headers, body }, ex)
    // The shadow is sent after the primary, so the primary is never second in line.
    if (ex.mirror !== null) ex.mirror.send(secondary)
  }

  /** A retryable canary request with a small body: keep the body, then send it (the rare path). */
  #readThenForward(ex: Exchange, head: RequestHead, length: number): void {
    const upstream = ex.backend.upstream
    // Counted from now: a client that leaves mid-body finishes the exchange (and undoes these).
    upstream.inflight++
    this.#inflight++
    const chunks: Buffer[] = []
    let size = 0
    const req = ex.req
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size <= length) chunks.push(chunk)
    })
    req.on('end', () => {
      if (ex.done) return
      const body = Buffer.concat(chunks, Math.min(size, length))
      ex.retry = { head, body }
      upstream.pool.dispatch({ path: req.url!, method: req.method!, headers: head.headers, body }, ex)
    })
  }

  retry(failed: Exchange): boolean {
    const plan = failed.retry!
    const route = failed.route
    const stable = route.stable
    const upstream = stable.upstream
    if (failed.res.destroyed || upstream.isEjected() || upstream.inflight >= upstream.limit) return false
    if (!route.preserveHost) plan.head.replaceHost(upstream.host)
    // Timed from its own dispatch: stable's latency is stable's, not the canary's failure plus stable.
    const ex = new Exchange(this, failed.req, failed.res, route, stable, performance.now())
    ex.rescue = failed.backend
    failed.retried = true
    // The trace follows the user's answer: the span moves to this attempt (tracing.end marks it retried).
    ex.span = failed.span
    failed.span = null
    // The shadow is compared with what the user gets; the failed attempt had no answer to compare.
    const mirror = failed.mirror
    if (mirror !== null) {
      failed.mirror = null
      mirror.primaryEnd(false)
    }
    // The new attempt is counted before the failed one finishes, so the proxy never looks idle between.
    upstream.inflight++
    this.#inflight++
    failed.finish()
    const req = failed.req
    upstream.pool.dispatch(
      { path: req.url!, method: req.method!, headers: plan.head.headers, body: plan.body },
      ex,
    )
    return true
  }

  #onUpgrade = (req: IncomingMessage, socket: Socket, first: Buffer): void => {
    const start = performance.now()
    const url = req.url!
    const head = new RequestHead()
    const refused = this.#check(req, head)
    if (refused !== null) return sendErrorOnSocket(socket, refused)
    const route = this.table.match(head.host, url)
    if (route === null) return sendErrorOnSocket(socket, 'no_route')
    const backend = pickBackend(route, head.override, stickyKey(route, head))
    if (backend === null) return sendErrorOnSocket(socket, 'no_healthy_upstream')
    if (backend.upstream.inflight >= backend.upstream.limit)
      return sendErrorOnSocket(socket, 'upstream_overloaded')
    head.addForwarding(this.#policy, socket.remoteAddress ?? '', socket.remoteFamily ?? 'IPv4')
    head.setHost(route.preserveHost ? head.host : backend.upstream.host)
    tunnel(this, req, socket, first, head.headers, route.name, backend, start)
  }

  /** Parse the head into `head` and refuse what no upstream should see; null when the request may pass. */
  #check(req: IncomingMessage, head: RequestHead): ProxyErrorCode | null {
    if (req.url!.charCodeAt(0) !== 47 /* / */) return 'bad_request_target'
    const raw = req.rawHeaders
    if (raw.length > this.#maxHeaderFields * 2) return 'too_many_headers'
    head.parse(raw, this.#policy)
    if (head.hostCount > 1) return 'duplicate_host'
    if (head.hostCount === 0 && req.httpVersionMinor === 1) return 'missing_host'
    if (head.otherCoding) return 'unsupported_transfer_coding'
    return null
  }

  #reject(res: ServerResponse, code: ProxyErrorCode, backend?: Backend): void {
    sendError(res, code, this.draining ? ['connection', 'close'] : undefined)
    if (backend !== undefined) backend.state.metrics.record(0, 0)
    this.#log.debug({ error: code, method: res.req.method, path: pathOf(res.req.url ?? '') }, 'rejected')
  }

  /** `switching`: a 101 answer, whose Connection: upgrade must stand alone even while draining. */
  decorate(out: string[], backend: Backend, switching = false): string[] {
    if (this.#policy.via !== null) appendVia(out, this.#policy.via)
    if (this.#versionHeader !== '') out.push(this.#versionHeader, backend.version)
    if (this.draining && !switching) out.push('connection', 'close')
    return out
  }

  finished(ex: Exchange): void {
    this.#inflight--
    const end = performance.now()
    const seconds = (end - ex.start) / 1000
    const closed = ex.error === 'client_closed'
    const status = ex.error === null || (closed && ex.status !== 0) ? ex.status : 0
    const backend = ex.backend
    const state = backend.state
    state.metrics.record(status, seconds)
    // A client that left before any answer says nothing about the upstream: no error, no success.
    const unjudged = closed && status === 0
    const error = !unjudged && (status === 0 || ex.route.errorStatus[status] === 1)
    let flags = error ? ERROR : 0
    if (ex.outcomeFailed) flags |= FAILED
    if (backend.version === 'canary' && !unjudged && !ex.forced) {
      if (!error) state.streak = 0
      else {
        if (!ex.retried) flags |= HARMED
        // `>=`: errors of requests still in flight on the old table may pass N before the swap.
        if (ex.route.fuseAfter !== 0 && ++state.streak >= ex.route.fuseAfter && ex.route.fuse === null) {
          state.streak = 0
          this.#trip(ex.route, status, ex.error)
        }
      }
    }
    // Counted in the slot it ends in, so a slot that has passed is final when control-link.ts reports it.
    // A rescue stays out of stable's window (it would add the canary's failing requests to stable's
    // sample); it counts for the canary it rescued, as saved or, when stable failed too, harmed.
    if (ex.rescue === null) state.window.record(end, seconds * 1000, flags)
    else if (!unjudged) ex.rescue.state.window.mark(end, error ? HARMED : SAVED)
    if (this.#tracing !== null) this.#tracing.end(ex, status)
    if (
      this.#accessLog &&
      (ex.error !== null || this.#accessSample >= 1 || Math.random() < this.#accessSample)
    ) {
      this.#access(ex, status, seconds)
    }
    if (this.#inflight === 0 && this.#idle !== null) this.#idle()
  }

  #access(ex: Exchange, status: number, seconds: number): void {
    const req = ex.req
    const error = ex.error === null ? '' : `,"error":"${ex.error}"`
    const extra = ex.retried ? error + RETRIED_EXTRA : error
    this.#sink.write(
      requestLine('access', ex.backend.lineFields, req.method!, pathOf(req.url!), status, seconds, extra),
    )
  }

  /** Called when a route's fuse trips (main.ts zeroes the canary and tells control). */
  onFuse: ((route: string, canary: { url: string; release: string }, reason: string) => void) | null = null

  #trip(route: CompiledRoute, status: number, error: string | null): void {
    const last = status === 0 ? (error ?? 'no answer') : String(status)
    this.#log.warn({ route: route.name, after: route.fuseAfter, last }, 'canary fuse tripped')
    this.onFuse?.(
      route.name,
      route.config.canary!,
      `${route.fuseAfter} consecutive canary errors (last: ${last})`,
    )
  }

  shadowFinished(m: Mirror, status: number, outcome: string, seconds: number): void {
    if (m.span !== null) this.#tracing?.endShadow(m, status, outcome)
    if (
      !this.#accessLog ||
      (this.#accessSample < 1 && outcome !== 'error' && Math.random() >= this.#accessSample)
    )
      return
    const extra = `,"outcome":"${outcome}"`
    this.#sink.write(
      requestLine('shadow', m.target.lineFields, m.method, pathOf(m.path), status, seconds, extra),
    )
  }

  /** Resolves once no request is in flight. */
  idle(): Promise<void> {
    if (this.#inflight === 0) return Promise.resolve()
    return new Promise((resolve) => {
      this.#idle = () => {
        this.#idle = null
        resolve()
      }
    })
  }
}

/** A failed canary attempt of this request may be sent again to stable: idempotent, or keyed. */
function retryable(fallback: Fallback, method: string, head: RequestHead): boolean {
  if (fallback.methods.has(method)) return true
  return fallback.idempotencyKey !== null && head.get(fallback.idempotencyKey) !== undefined
}

/** The user's key for sticky assignment: the route's header, or its cookie. */
function stickyKey(route: CompiledRoute, head: RequestHead): string | undefined {
  if (route.stickyHeader !== null) return head.get(route.stickyHeader)
  if (route.stickyCookie !== null && head.cookie !== undefined)
    return cookieValue(head.cookie, route.stickyCookie)
  return undefined
}

function isWebSocketUpgrade(req: IncomingMessage): boolean {
  const upgrade = req.headers.upgrade
  return typeof upgrade === 'string' && upgrade.toLowerCase() === 'websocket'
}

function onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy()
    return
  }
  // A response already under way on this socket cannot be replaced by an error answer.
  if ((socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent) {
    socket.destroy()
    return
  }
  const code: ProxyErrorCode =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? 'headers_too_large'
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'HPE_HEADERS_TIMEOUT'
        ? 'request_timeout'
        : 'bad_request'
  sendErrorOnSocket(socket, code)
}
