/**
 * One proxied request: the undici dispatch handler that passes the upstream's answer through its route's
 * chain (handler.ts) to the client, with backpressure. All per-request state lives on this one object;
 * subclasses write the answer to one kind of client: an HTTP response here, an upgraded socket in
 * upgrade.ts. Listeners are module functions, so nothing is allocated per request beyond the exchange.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import type { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import { classifyUpstreamError, type ProxyErrorCode } from '../errors.ts'
import { appendVia, fieldObject, type RequestHead, responseHeaders } from '../listen/headers.ts'
import { sendError } from '../listen/respond.ts'
import type { Backend, CompiledRoute } from '../routes/table.ts'
import type { Mirror } from '../shadow/mirror.ts'
import { grpcStatusOf, grpcTimeoutMs, UNKNOWN } from './grpc.ts'
import type { Chain, UpstreamFields } from './handler.ts'

type Controller = Dispatcher.DispatchController

/** What an exchange needs from the listener that started it. */
export interface ExchangeHost {
  /** Every answer then carries Connection: close (see main.ts's drain). */
  readonly draining: boolean
  /** An exchange began (counted until `finished`). */
  started(): void
  finished(ex: Exchange): void
}

const CLIENT_GONE = new Error('client closed the connection')
const TAKEN_OVER = new Error('the answer was taken over (canary failed: retried on stable)')

/** The access line's `protocol` field of each client protocol, serialised once (outcome.ts). */
export const PROTOCOL = {
  http10: ',"protocol":"HTTP/1.0"',
  http11: ',"protocol":"HTTP/1.1"',
  http2: ',"protocol":"HTTP/2"',
} as const

/** The request body for the upstream: the client's stream, a kept copy (fallback), or none. */
export type Body = Readable | Buffer | null

export abstract class Exchange implements Dispatcher.DispatchHandler {
  readonly host: ExchangeHost
  readonly chain: Chain
  readonly route: CompiledRoute
  readonly backend: Backend
  /** The head for the upstream; a fallback attempt reuses it. */
  readonly head: RequestHead
  readonly method: string
  /** The request target as sent (path and query). */
  readonly url: string
  readonly start: number
  body: Body
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
  /** A canary attempt that may fall back to stable when it fails (analysis.fallback; see fallback.ts). */
  fallback = false
  /** This canary attempt failed and stable was asked instead: the user never saw this failure. */
  retried = false
  /** On a fallback attempt: the canary backend whose failure it rescues. */
  rescue: Backend | null = null
  /** The upstream reported a failed business outcome (the route's outcome header said `fail`). */
  outcomeFailed = false
  /** A tester forced this version (override header): its failures are neither harm nor fuse counts. */
  forced = false
  /** A gRPC call's status (from the upstream's trailers or trailers-only head, or the proxy's own); -1 if none. */
  grpc = -1
  /** The client's protocol, as the access line's `protocol` field (`,"protocol":"HTTP/2"`; see PROTOCOL). */
  abstract readonly protocol: string

  constructor(
    host: ExchangeHost,
    chain: Chain,
    route: CompiledRoute,
    backend: Backend,
    head: RequestHead,
    method: string,
    url: string,
    body: Body,
    start: number,
  ) {
    this.host = host
    this.chain = chain
    this.route = route
    this.backend = backend
    this.head = head
    this.method = method
    this.url = url
    this.body = body
    this.start = start
    // Counted from now: a client that leaves while a fallback reads the body finishes the exchange.
    backend.upstream.inflight++
    host.started()
  }

  dispatchOptions(): Dispatcher.DispatchOptions {
    const options: Dispatcher.DispatchOptions = {
      path: this.url,
      method: this.method,
      headers: this.head.headers,
      body: this.body,
    }
    // A gRPC call's deadline (also passed on in grpc-timeout): veer waits no longer for the answer.
    if (this.head.grpcTimeout !== undefined) {
      const ms = grpcTimeoutMs(this.head.grpcTimeout)
      if (ms !== undefined && ms < this.route.headersTimeout) options.headersTimeout = ms
    }
    return options
  }

  /** The status the outcome counts: 0 when the proxy answered, or when the client left before any. */
  get outcomeStatus(): number {
    return this.error === null || (this.error === 'client_closed' && this.status !== 0) ? this.status : 0
  }

  /**
   * The body for another attempt (`again`): the kept copy, a stream no attempt has read (the canary
   * could not be connected, see fallback.ts), or none (a streamed body is gone).
   */
  protected get keptBody(): Body {
    const body = this.body
    if (body === null || Buffer.isBuffer(body)) return body
    return untouched(body) ? body : null
  }

  /** Write the answer's head to the client. */
  protected abstract answer(status: number, message: string | undefined, fields: string[]): void
  /** Pass an interim answer (102 Processing, 103 Early Hints) to the client; an upgrade has none to pass. */
  protected interim(_status: number, _fields: string[]): void {}
  /** Write a body chunk; false when the client is full (call `controller.resume()` once it drains). */
  protected abstract write(chunk: Buffer): boolean
  protected abstract end(trailers: UpstreamFields): void
  /** Answer with the proxy's own error, or cut the connection when an answer is under way. */
  protected abstract fail(code: ProxyErrorCode): void
  /** The answer's head went to the client. */
  abstract get answered(): boolean
  /** The client's connection is gone. */
  abstract get gone(): boolean
  /** A new exchange for the same client answer, from another backend (the fallback to stable). */
  abstract again(backend: Backend): Exchange

  /**
   * Adds the proxy's own response fields: Via (`via`: veer's hop with the version the answer came in),
   * the version header, and Connection: close when `close`.
   */
  decorate(out: string[], close: boolean, via = this.backend.upstream.via): string[] {
    const a = this.route.answer
    if (a.via) appendVia(out, via)
    if (a.versionHeader !== '') out.push(a.versionHeader, this.backend.version)
    if (close) out.push('connection', 'close')
    return out
  }

  /**
   * Whether the answer ends its connection: while draining, on HTTP/1.1. HTTP/2 has no Connection
   * field; its connections get GOAWAY instead (see server.ts).
   */
  protected closing(): boolean {
    return this.host.draining
  }

  onRequestStart(controller: Controller): void {
    this.controller = controller
    // The client left while the request waited in the pool's queue: it must not take a connection now.
    if (this.done) controller.abort(CLIENT_GONE)
  }

  onResponseStart(
    controller: Controller,
    statusCode: number,
    fields: UpstreamFields,
    statusMessage?: string,
  ): void {
    if (this.done) return controller.abort(CLIENT_GONE)
    if (statusCode < 200) {
      // 102 and 103 are passed on before the final answer. A 100 is not: Node answered the client's
      // Expect itself (veer does not forward Expect), so an upstream's own is news to no one.
      if (statusCode === 102 || statusCode === 103) this.interim(statusCode, responseHeaders(fields, []))
      return
    }
    this.status = statusCode
    if (this.head.grpc) {
      const g = fields['grpc-status']
      if (g !== undefined) this.grpc = grpcStatusOf(g)
    }
    // A handler that takes the answer over (the fallback) has finished this attempt: its answer is
    // dropped unread, and the connection goes with it (a new connection per rescue, on the failure path).
    if (!this.chain.head(this, statusCode, fields)) return controller.abort(TAKEN_OVER)
    this.answer(
      statusCode,
      statusMessage || undefined,
      this.decorate(responseHeaders(fields, []), this.closing()),
    )
  }

  onResponseData(controller: Controller, chunk: Buffer): void {
    if (this.done) return controller.abort(CLIENT_GONE)
    this.chain.data(this, chunk)
    if (!this.write(chunk)) controller.pause()
  }

  onResponseEnd(_controller: Controller, trailers: UpstreamFields): void {
    if (this.done) return
    if (this.head.grpc) {
      const g = trailers['grpc-status']
      // A 200 that ends without a status is UNKNOWN to the client ("no status received").
      if (g !== undefined) this.grpc = grpcStatusOf(g)
      else if (this.grpc === -1 && this.status === 200) this.grpc = UNKNOWN
    }
    this.end(trailers)
    this.finish()
  }

  onResponseError(_controller: Controller, err: Error): void {
    if (this.done) return
    const code = classifyUpstreamError(err)
    this.error = this.error ?? code
    if (!this.chain.error(this, err, code)) return
    this.fail(code)
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
    this.chain.done(this)
    this.host.finished(this)
  }
}

const kExchange = Symbol('veer.exchange')
type Tagged = ServerResponse & { [kExchange]?: HttpExchange }

function onClientClose(this: Tagged): void {
  const ex = this[kExchange]
  if (ex !== undefined && !ex.done) ex.clientGone()
}

function onClientDrain(this: Tagged): void {
  this[kExchange]?.controller?.resume()
}

/** An exchange answered on a node:http response. */
export class HttpExchange extends Exchange {
  readonly req: IncomingMessage
  readonly res: ServerResponse
  /** Body bytes still to come by the upstream's Content-Length; -1 when it gave none. */
  #rest = -1
  /**
   * The body's last chunk by Content-Length, held for `end`: `res.end(chunk)` writes the head and the
   * body in one corked write(2), where `write` then `end` would cork until the next tick (Node's write
   * schedules an uncork per response). undici ends the answer in the same parse that gave the last byte.
   */
  #last: Buffer | null = null
  get protocol(): string {
    return this.req.httpVersionMinor === 0 ? PROTOCOL.http10 : PROTOCOL.http11
  }

  constructor(
    host: ExchangeHost,
    route: CompiledRoute,
    backend: Backend,
    head: RequestHead,
    req: IncomingMessage,
    res: ServerResponse,
    start: number,
    body: Body,
  ) {
    super(host, route.chain, route, backend, head, req.method!, head.target, body, start)
    this.req = req
    this.res = res
    // A fallback attempt takes over the response of the failed one: one close listener serves both.
    if ((res as Tagged)[kExchange] === undefined) res.on('close', onClientClose)
    ;(res as Tagged)[kExchange] = this
  }

  again(backend: Backend): Exchange {
    // Timed from its own dispatch: stable's latency is stable's, not the canary's failure plus stable.
    return new HttpExchange(
      this.host,
      this.route,
      backend,
      this.head,
      this.req,
      this.res,
      performance.now(),
      this.keptBody,
    )
  }

  get answered(): boolean {
    return this.res.headersSent
  }

  get gone(): boolean {
    return this.res.destroyed
  }

  protected answer(status: number, message: string | undefined, fields: string[]): void {
    const res = this.res
    try {
      res.writeHead(status, message, fields)
    } catch {
      // Node refuses reason phrases undici accepts (text beyond Latin-1) and keeps the refused one, which
      // would make every later writeHead throw too: the standard phrase will do. If a field is what Node
      // refuses, this throws again and undici aborts the exchange (onResponseError answers 502).
      res.statusMessage = ''
      res.writeHead(status, fields)
    }
  }

  protected override interim(status: number, fields: string[]): void {
    const res = this.res
    // An HTTP/1.0 client must not get a 1xx (RFC 9110 15.2).
    if (res.headersSent || this.req.httpVersionMinor === 0) return
    if (status === 102) return res.writeProcessing()
    try {
      // Node sends Early Hints only with a Link field, as RFC 8297 means them.
      res.writeEarlyHints(fieldObject(fields) as Record<string, string | string[]>)
    } catch {
      // A Link value Node refuses: hints are advisory, the final answer is what is owed.
    }
  }

  override onResponseStart(
    controller: Controller,
    statusCode: number,
    fields: UpstreamFields,
    statusMessage?: string,
  ): void {
    const length = fields['content-length']
    if (typeof length === 'string' && this.method !== 'HEAD') this.#rest = Number(length)
    super.onResponseStart(controller, statusCode, fields, statusMessage)
  }

  protected write(chunk: Buffer): boolean {
    const rest = this.#rest
    if (rest === chunk.length) {
      this.#rest = 0
      this.#last = chunk
      return true
    }
    if (rest > 0) this.#rest = rest - chunk.length
    if (this.res.write(chunk)) return true
    this.res.once('drain', onClientDrain)
    return false
  }

  protected end(trailers: UpstreamFields): void {
    const last = this.#last
    for (const _ in trailers) {
      if (last !== null) this.res.write(last)
      this.res.addTrailers(trailers as Record<string, string>)
      return void this.res.end()
    }
    if (last !== null) this.res.end(last)
    else this.res.end()
  }

  protected fail(code: ProxyErrorCode): void {
    if (!this.res.destroyed) sendError(this.res, code, this.decorate([], this.closing()))
  }
}

/** A streamed body no attempt has read a byte of (an HTTP/2 one may be read as `SourceChunks`: `taken`). */
export function untouched(body: Readable): boolean {
  return !(body.readableDidRead || body.destroyed || (body as { taken?: boolean }).taken === true)
}
