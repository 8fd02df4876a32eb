/**
 * An exchange answered on an HTTP/2 stream (node:http2's core API: one stream per request, no
 * compatibility layer). The upstream's trailers become the stream's trailing HEADERS, so gRPC's
 * `grpc-status` reaches the client; a failure after the answer started resets only this stream.
 */
import type { OutgoingHttpHeaders } from 'node:http'
import type { ServerHttp2Stream } from 'node:http2'
import { performance } from 'node:perf_hooks'
import { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import type { ProxyErrorCode } from '../errors.ts'
import { fieldObject, type RequestHead } from '../listen/headers.ts'
import { grpcErrorFields, sendErrorOnStream, sendGrpcError } from '../listen/respond.ts'
import type { Backend, CompiledRoute } from '../routes/table.ts'
import { type Body, Exchange, type ExchangeHost, PROTOCOL } from './exchange.ts'
import { CANCELLED, DEADLINE_EXCEEDED, grpcCodeFor, grpcTimeoutMs } from './grpc.ts'
import type { UpstreamFields } from './handler.ts'

const kExchange = Symbol('veer.exchange')
type Tagged = ServerHttp2Stream & { [kExchange]?: Http2Exchange }

const NO_TRAILERS: OutgoingHttpHeaders = Object.freeze(Object.create(null))
/** The trailers are known only at the end of the upstream's answer: the stream waits for them. */
const RESPOND = { waitForTrailers: true } as const
const END = { endStream: true } as const

function onStreamClose(this: Tagged): void {
  const ex = this[kExchange]
  if (ex !== undefined && !ex.done) ex.clientGone()
}

function onStreamDrain(this: Tagged): void {
  this[kExchange]?.controller?.resume()
}

function onWantTrailers(this: Tagged): void {
  this.sendTrailers(this[kExchange]?.trailers ?? NO_TRAILERS)
}

const DEADLINE = new Error("the gRPC call's deadline passed")

/**
 * A gRPC call's deadline passed while its answer streamed: the client gets DEADLINE_EXCEEDED in the
 * trailers, and the upstream's stream is cancelled (before the head, undici's headersTimeout answers).
 */
function expire(ex: Http2Exchange): void {
  if (ex.done) return
  ex.error = 'upstream_timeout'
  ex.grpc = DEADLINE_EXCEEDED
  ex.trailers = grpcErrorFields('upstream_timeout', ex.decorate([], false))
  if (!ex.stream.writableEnded) ex.stream.end()
  ex.finish()
  if (ex.controller !== null && !ex.controller.aborted) ex.controller.abort(DEADLINE)
}

const kReader = Symbol('veer.body')
/** Whoever reads a stream's request body: its StreamBody, or the chunks undici was given. */
interface Reader {
  chunk(chunk: Buffer): void
  end(): void
}
type Source = ServerHttp2Stream & { [kReader]?: Reader }

function onSourceData(this: Source, chunk: Buffer): void {
  this[kReader]!.chunk(chunk)
}

function onSourceEnd(this: Source): void {
  this[kReader]!.end()
}

function attach(source: Source, reader: Reader): void {
  source[kReader] = reader
  source.on('data', onSourceData)
  source.once('end', onSourceEnd)
}

/** Stop reading: what the upstream did not take is read and dropped, so the stream's answer is not held up. */
function detach(source: Source): void {
  source.off('data', onSourceData)
  source.off('end', onSourceEnd)
  if (!source.readableEnded) source.resume()
}

/**
 * The request body of a stream, as the upstream client reads it. undici destroys a body stream once
 * it has sent it; given the HTTP/2 stream itself, that would reset the stream before its answer.
 * It reads the stream only once read itself (the fallback keeps the body, a mirror tees it); a body
 * nothing else reads goes to undici as `SourceChunks` instead (see `Http2Exchange.dispatchOptions`).
 */
export class StreamBody extends Readable implements Reader {
  readonly #source: Source
  #reading = false
  /** An attempt read the stream through `SourceChunks`: no other attempt may have it. */
  taken = false

  constructor(source: ServerHttp2Stream) {
    super()
    this.#source = source as Source
  }

  /** Nothing has read it yet, as a Readable or as `SourceChunks`. */
  get unread(): boolean {
    return !this.#reading && !this.taken
  }

  chunk(chunk: Buffer): void {
    if (!this.push(chunk)) this.#source.pause()
  }

  end(): void {
    this.push(null)
  }

  override _read(): void {
    if (!this.#reading) {
      this.#reading = true
      attach(this.#source, this)
    }
    this.#source.resume()
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    if (this.#reading) detach(this.#source)
    else if (!this.#source.readableEnded) this.#source.resume()
    done(err)
  }
}

const RELEASED = new Error('the exchange ended before the request body was sent')
const DONE: IteratorReturnResult<undefined> = Object.freeze({ value: undefined, done: true })

/**
 * A stream's request body as the async iterable undici writes chunk by chunk. A Readable body is piped
 * with stream.pipeline (an AbortController, end-of-stream watchers and a DOMException per request):
 * that doubled the CPU of a gRPC unary call. undici never destroys an iterable, so the exchange
 * `release`s it when it ends, whichever way.
 */
class SourceChunks implements AsyncIterableIterator<Buffer>, Reader {
  readonly #source: Source
  readonly #body: StreamBody
  /** Chunks that came while undici was not waiting (the stream is paused then). */
  readonly #queue: Buffer[] = []
  #attached = false
  #ended = false
  #released = false
  #waiter: PromiseWithResolvers<IteratorResult<Buffer>> | null = null

  /**
   * Reads the stream only once undici asks for a chunk: an attempt that never connected read none of
   * it, and its fallback to stable gets the whole body (fallback.ts).
   */
  constructor(source: ServerHttp2Stream, body: StreamBody) {
    this.#source = source as Source
    this.#body = body
  }

  [Symbol.asyncIterator](): this {
    return this
  }

  next(): Promise<IteratorResult<Buffer>> {
    if (this.#queue.length > 0) return Promise.resolve({ value: this.#queue.shift()!, done: false })
    if (this.#released) return Promise.reject(RELEASED)
    if (this.#ended) return Promise.resolve(DONE)
    if (!this.#attached) {
      this.#attached = true
      this.#body.taken = true
      attach(this.#source, this)
    }
    this.#source.resume()
    this.#waiter = Promise.withResolvers()
    return this.#waiter.promise
  }

  return(): Promise<IteratorResult<Buffer>> {
    this.release()
    return Promise.resolve(DONE)
  }

  chunk(chunk: Buffer): void {
    const w = this.#waiter
    if (w === null) {
      this.#queue.push(chunk)
      this.#source.pause()
      return
    }
    this.#waiter = null
    w.resolve({ value: chunk, done: false })
  }

  end(): void {
    this.#ended = true
    const w = this.#waiter
    if (w === null) return
    this.#waiter = null
    w.resolve(DONE)
  }

  /** The exchange ended: stop reading, drop the rest, and end undici's loop if it waits for a chunk. */
  release(): void {
    if (this.#released) return
    this.#released = true
    this.#queue.length = 0
    if (this.#attached) detach(this.#source)
    const w = this.#waiter
    if (w === null) return
    this.#waiter = null
    w.reject(RELEASED)
  }
}

export class Http2Exchange extends Exchange {
  readonly stream: ServerHttp2Stream
  readonly protocol = PROTOCOL.http2
  /** What the upstream sent after its body, for the stream's trailing HEADERS. */
  trailers: OutgoingHttpHeaders | null = null
  /** The request body as undici reads it, when it reads the stream's own (released at `finish`). */
  #chunks: SourceChunks | null = null
  /** A gRPC call's deadline timer, from its answer's head to its end (see `expire`). */
  #deadline: NodeJS.Timeout | null = null

  constructor(
    host: ExchangeHost,
    route: CompiledRoute,
    backend: Backend,
    head: RequestHead,
    stream: ServerHttp2Stream,
    method: string,
    url: string,
    start: number,
    body: Body,
  ) {
    super(host, route.chain, route, backend, head, method, url, body, start)
    this.stream = stream
    if ((stream as Tagged)[kExchange] === undefined) {
      stream.on('close', onStreamClose)
      stream.on('wantTrailers', onWantTrailers)
    }
    ;(stream as Tagged)[kExchange] = this
  }

  again(backend: Backend): Exchange {
    return new Http2Exchange(
      this.host,
      this.route,
      backend,
      this.head,
      this.stream,
      this.method,
      this.url,
      performance.now(),
      this.keptBody,
    )
  }

  override dispatchOptions(): Dispatcher.DispatchOptions {
    const options = super.dispatchOptions()
    const body = this.body
    // undici's HTTP/1.1 client writes a Readable with plain listeners, and so does veer's own for h2c://
    // (upstream/h2-client.ts): only undici's HTTP/2 one (an https:// upstream's h2) pipes it.
    if (body instanceof StreamBody && body.unread && this.backend.upstream.protocol === 'tls') {
      this.#chunks = new SourceChunks(this.stream, body)
      // undici's types leave out the async iterables its dispatch takes.
      options.body = this.#chunks as unknown as Readable
    }
    return options
  }

  override finish(): void {
    if (this.done) return
    this.#chunks?.release()
    if (this.#deadline !== null) clearTimeout(this.#deadline)
    super.finish()
  }

  /** A streamed gRPC answer is bounded by the call's deadline too, not only its head. */
  override onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    fields: UpstreamFields,
    statusMessage?: string,
  ): void {
    super.onResponseStart(controller, statusCode, fields, statusMessage)
    if (!this.head.grpc || this.done || this.head.grpcTimeout === undefined || statusCode < 200) return
    const ms = grpcTimeoutMs(this.head.grpcTimeout)
    if (ms !== undefined) this.#deadline = setTimeout(expire, ms - (performance.now() - this.start), this)
  }

  get answered(): boolean {
    return this.stream.headersSent
  }

  /** A gRPC call whose client reset its stream ends CANCELLED, as the client itself reads it. */
  override clientGone(): void {
    if (this.head.grpc && this.grpc === -1) this.grpc = CANCELLED
    super.clientGone()
  }

  get gone(): boolean {
    return this.stream.destroyed || this.stream.closed
  }

  protected override closing(): boolean {
    return false
  }

  protected answer(status: number, _message: string | undefined, fields: string[]): void {
    // HTTP/2 has no reason phrase. The flat list goes to respond() as it is (Node >= 24 takes raw
    // header lists: names lower-cased, a repeated name sent once per value, pseudo-fields first, as
    // for an object): no header object of ours, and none of node:http2's copy of it.
    fields.push(':status', String(status))
    // A gRPC answer whose head carries grpc-status is trailers-only: it ends with its head, no body,
    // no trailers (a client would read an empty trailing HEADERS as a missing status).
    this.stream.respond(fields as unknown as OutgoingHttpHeaders, this.grpc >= 0 ? END : RESPOND)
  }

  protected override interim(status: number, fields: string[]): void {
    const stream = this.stream
    if (stream.headersSent || this.gone) return
    const headers = fieldObject(fields)
    headers[':status'] = status
    try {
      stream.additionalHeaders(headers)
    } catch {
      // A field node:http2 refuses in an informational HEADERS frame: hints are advisory.
    }
  }

  protected write(chunk: Buffer): boolean {
    if (this.stream.write(chunk)) return true
    this.stream.once('drain', onStreamDrain)
    return false
  }

  protected end(trailers: UpstreamFields): void {
    // A header object already (node:http2's or undici's: lower-case names, a list for a repeated one);
    // sendTrailers copies it and skips undefined values.
    for (const _ in trailers) {
      this.trailers = trailers as OutgoingHttpHeaders
      break
    }
    // A HEAD, 204 or 304 answer ended the stream with its headers.
    if (!this.stream.writableEnded) this.stream.end()
  }

  protected fail(code: ProxyErrorCode): void {
    if (this.head.grpc) {
      // A stream the client reset is owed nothing, and its call has no status of the proxy's making.
      if (!this.stream.headersSent && !this.gone) this.grpc = grpcCodeFor(code)
      sendGrpcError(this.stream, code, this.decorate([], false))
    } else sendErrorOnStream(this.stream, code, this.decorate([], false))
  }
}
