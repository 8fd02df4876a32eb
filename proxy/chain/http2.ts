/**
 * An exchange answered on an HTTP/2 stream (node:http2's core API: one stream per request, no
 * compatibility layer). The upstream's trailers become the stream's trailing HEADERS, so gRPC's
 * `grpc-status` reaches the client; a failure after the answer started resets only this stream.
 */
import type { OutgoingHttpHeaders } from 'node:http'
import type { ServerHttp2Stream } from 'node:http2'
import { performance } from 'node:perf_hooks'
import { Readable } from 'node:stream'
import type { ProxyErrorCode } from '../errors.ts'
import { fieldObject, type RequestHead } from '../listen/headers.ts'
import { sendErrorOnStream, sendGrpcError } from '../listen/respond.ts'
import type { Backend, CompiledRoute } from '../routes/table.ts'
import { type Body, Exchange, type ExchangeHost } from './exchange.ts'
import { CANCELLED, grpcCodeFor } from './grpc.ts'
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

const kBody = Symbol('veer.body')
type Source = ServerHttp2Stream & { [kBody]?: StreamBody }

function onSourceData(this: Source, chunk: Buffer): void {
  if (!this[kBody]!.push(chunk)) this.pause()
}

function onSourceEnd(this: Source): void {
  this[kBody]!.push(null)
}

/**
 * The request body of a stream, as the upstream client reads it. undici destroys a body stream once
 * it has sent it; given the HTTP/2 stream itself, that would reset the stream before its answer.
 */
export class StreamBody extends Readable {
  readonly #source: Source

  constructor(source: ServerHttp2Stream) {
    super()
    this.#source = source as Source
    this.#source[kBody] = this
    source.on('data', onSourceData)
    source.once('end', onSourceEnd)
  }

  override _read(): void {
    this.#source.resume()
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    const source = this.#source
    source.off('data', onSourceData)
    source.off('end', onSourceEnd)
    // What the upstream did not take is read and dropped, so the stream's answer is not held up.
    if (!source.readableEnded) source.resume()
    done(err)
  }
}

export class Http2Exchange extends Exchange {
  readonly stream: ServerHttp2Stream
  /** What the upstream sent after its body, for the stream's trailing HEADERS. */
  trailers: OutgoingHttpHeaders | null = null

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
    // HTTP/2 has no reason phrase.
    const headers = fieldObject(fields)
    headers[':status'] = status
    // A gRPC answer whose head carries grpc-status is trailers-only: it ends with its head, no body,
    // no trailers (a client would read an empty trailing HEADERS as a missing status).
    this.stream.respond(headers, this.grpc >= 0 ? END : RESPOND)
  }

  protected write(chunk: Buffer): boolean {
    if (this.stream.write(chunk)) return true
    this.stream.once('drain', onStreamDrain)
    return false
  }

  protected end(trailers: UpstreamFields): void {
    for (const _ in trailers) {
      this.trailers = fieldObject(flatten(trailers))
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

function flatten(fields: UpstreamFields): string[] {
  const out: string[] = []
  for (const name in fields) {
    const value = fields[name]
    if (value === undefined) continue
    if (typeof value === 'string') out.push(name, value)
    else for (const v of value) out.push(name, v)
  }
  return out
}
