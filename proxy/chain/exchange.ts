/**
 * One proxied request: the undici dispatch handler that streams the upstream's answer to the client
 * with backpressure, and records the outcome once at the end. All per-request state lives on this one
 * object; the listeners it needs on the response are module functions, so nothing is allocated per
 * request beyond the exchange itself.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import { classifyUpstreamError, isConnectFailure } from '../errors.ts'
import { type RequestHead, responseHeaders } from '../listen/headers.ts'
import { sendError } from '../listen/respond.ts'
import type { Backend, CompiledRoute } from '../routes/table.ts'
import type { Mirror } from '../shadow/mirror.ts'

type Controller = Dispatcher.DispatchController

/** What an exchange needs from the server that started it. */
export interface ExchangeHost {
  /** Adds the proxy's own response fields (Via, version header, Connection: close when draining). */
  decorate(out: string[], backend: Backend, switching?: boolean): string[]
  readonly ejectAfter: number
  readonly ejectForMs: number
  finished(ex: Exchange): void
  /**
   * A request that failed on canary (`ex.retry` set): send it to stable, which answers the user instead.
   * False when that cannot be done (the client left, stable is ejected or full): the failure is answered.
   */
  retry(ex: Exchange): boolean
}

/** What a retry on stable needs: the request's head (host rewritten for stable) and its kept body. */
export interface RetryPlan {
  readonly head: RequestHead
  readonly body: Buffer | null
}

const kExchange = Symbol('veer.exchange')
const CLIENT_GONE = new Error('client closed the connection')
const RETRIED = new Error('canary failed: the request was retried on stable')
type Tagged = ServerResponse & { [kExchange]?: Exchange }

function onClientClose(this: Tagged): void {
  const ex = this[kExchange]
  if (ex !== undefined && !ex.done) ex.clientGone()
}

function onClientDrain(this: Tagged): void {
  this[kExchange]?.controller?.resume()
}

export class Exchange implements Dispatcher.DispatchHandler {
  readonly host: ExchangeHost
  readonly req: IncomingMessage
  readonly res: ServerResponse
  readonly route: CompiledRoute
  readonly backend: Backend
  readonly start: number
  controller: Controller | null = null
  /** Upstream status, 0 until one came back. */
  status = 0
  done = false
  /** Set when the proxy answered (or aborted) instead of the upstream. */
  error: string | null = null
  /** Opaque per-request extension slot (a tracing span), owned by whoever set it. */
  span: unknown = null
  /** The shadow copy of this request, fed the primary's answer for comparison; null when not mirrored. */
  mirror: Mirror | null = null
  /** Set on a canary request that may fall back to stable when it fails (analysis.fallback). */
  retry: RetryPlan | null = null
  /** This canary attempt failed and stable was asked instead: the user never saw this failure. */
  retried = false
  /** On a fallback attempt: the canary backend whose failure it rescues. */
  rescue: Backend | null = null
  /** The upstream reported a failed business outcome (the route's outcome header said `fail`). */
  outcomeFailed = false
  /** A tester forced this version (override header): its failures are neither harm nor fuse counts. */
  forced = false

  constructor(
    host: ExchangeHost,
    req: IncomingMessage,
    res: ServerResponse,
    route: CompiledRoute,
    backend: Backend,
    start: number,
  ) {
    this.host = host
    this.req = req
    this.res = res
    this.route = route
    this.backend = backend
    this.start = start
    // A fallback attempt takes over the response of the failed one: one close listener serves both.
    if ((res as Tagged)[kExchange] === undefined) res.on('close', onClientClose)
    ;(res as Tagged)[kExchange] = this
  }

  onRequestStart(controller: Controller): void {
    this.controller = controller
    // The client left while the request waited in the pool's queue: it must not take a connection now.
    if (this.done) controller.abort(CLIENT_GONE)
  }

  onResponseStart(
    controller: Controller,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    statusMessage?: string,
  ): void {
    if (this.done) return controller.abort(CLIENT_GONE)
    // 1xx informational answers are not forwarded; Node answers a client's 100-continue itself.
    if (statusCode < 200) return
    this.status = statusCode
    const upstream = this.backend.upstream
    if (upstream.failures !== 0) upstream.connectSucceeded()
    // The canary's failed answer is dropped unread (the connection goes with it) when stable takes over:
    // a new connection per rescue, on the failure path only. retry() marks this attempt `retried` and
    // finishes it, so no later callback of it touches the response.
    if (this.retry !== null && this.route.errorStatus[statusCode] === 1 && this.host.retry(this))
      return controller.abort(RETRIED)
    const outcome = this.route.outcomeHeader
    if (outcome !== null && headers[outcome] === 'fail') this.outcomeFailed = true
    const out = this.host.decorate(responseHeaders(headers, []), this.backend)
    const res = this.res
    try {
      res.writeHead(statusCode, statusMessage || undefined, out)
    } catch {
      // Node refuses reason phrases undici accepts (text beyond Latin-1) and keeps the refused one, which
      // would make every later writeHead throw too: the standard phrase will do. If a field is what Node
      // refuses, this throws again and undici aborts the exchange (onResponseError answers 502).
      res.statusMessage = ''
      res.writeHead(statusCode, out)
    }
    if (this.mirror !== null) this.mirror.primaryStart(statusCode, controller.rawHeaders as Buffer[] | null)
  }

  onResponseData(controller: Controller, chunk: Buffer): void {
    if (this.done) return controller.abort(CLIENT_GONE)
    if (this.mirror !== null) this.mirror.primaryData(chunk)
    if (!this.res.write(chunk)) {
      controller.pause()
      this.res.once('drain', onClientDrain)
    }
  }

  onResponseEnd(_controller: Controller, trailers: Record<string, string | string[] | undefined>): void {
    if (this.done) return
    for (const _ in trailers) {
      this.res.addTrailers(trailers as Record<string, string>)
      break
    }
    this.res.end()
    this.finish()
  }

  onResponseError(_controller: Controller, err: Error): void {
    if (this.done) return
    const code = classifyUpstreamError(err)
    const upstream = this.backend.upstream
    if (isConnectFailure(code, err)) upstream.connectFailed(this.host.ejectAfter, this.host.ejectForMs)
    this.error = this.error ?? code
    if (this.retry !== null && !this.res.headersSent && this.host.retry(this)) return
    if (!this.res.destroyed) sendError(this.res, code, this.host.decorate([], this.backend))
    this.finish()
  }

  /** The client went away before the answer was complete: stop the upstream request too. */
  clientGone(): void {
    this.error = 'client_closed'
    if (this.controller !== null && !this.controller.aborted) this.controller.abort(CLIENT_GONE)
    this.finish()
  }

  finish(): void {
    if (this.done) return
    this.done = true
    this.backend.upstream.inflight--
    if (this.mirror !== null) this.mirror.primaryEnd(this.error === null)
    this.host.finished(this)
  }
}
