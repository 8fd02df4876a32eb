// Baseline "the undici floor" for HTTP/2: the same node:http2 h2c server as node-h2-proxy.ts, but every
// stream goes to the upstream through an undici Pool (allowH2, h2c, veer's default pool settings), as
// veer sends it: Pool.dispatch with the controller-based handler API, trailers passed on. The request
// body goes as an async iterable over the stream's chunks (undici writes those itself), or with
// `readable` as a small Readable wrapper (undici pipes those with stream.pipeline, which costs about as
// much again per gRPC call; the HTTP/2 stream itself cannot go: undici destroys a body once sent).
// Nothing else: no routing, metrics, logs or timeouts. What it costs beyond node-h2-proxy is undici's.
//   node bench/baselines/undici-h2-proxy.ts http://127.0.0.1:UPSTREAM_PORT LISTEN_PORT [readable]
import {
  constants,
  createServer,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type ServerHttp2Stream,
} from 'node:http2'
import { Readable } from 'node:stream'
import { type Dispatcher, Pool } from 'undici'

const target = process.argv[2]
const port = Number(process.argv[3])
const readable = process.argv[4] === 'readable'
if (target === undefined || !Number.isInteger(port) || port <= 0) {
  console.error('usage: node bench/baselines/undici-h2-proxy.ts TARGET_URL PORT [readable]')
  process.exit(2)
}

// veer's defaults (connections 128, streams 100): its pool, without veer around it.
const pool = new Pool(target, {
  connections: 128,
  pipelining: 1,
  allowH2: true,
  useH2c: true,
  h2Options: { maxConcurrentStreams: 100 },
} as Pool.Options & { useH2c: boolean })

const HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'host',
  'http2-settings',
])

function requestHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const name in headers) {
    if (name.charCodeAt(0) === 58 /* ':' */ || HOP.has(name)) continue
    if (name === 'te' && headers.te !== 'trailers') continue
    out[name] = headers[name]!
  }
  return out
}

function responseHeaders(
  fields: Record<string, string | string[] | undefined>,
  into: OutgoingHttpHeaders,
): OutgoingHttpHeaders {
  for (const name in fields) if (!HOP.has(name) && fields[name] !== undefined) into[name] = fields[name]
  return into
}

/** The request body: the stream's chunks, pushed on; undici may destroy this, not the stream. */
class Body extends Readable {
  readonly source: ServerHttp2Stream
  constructor(source: ServerHttp2Stream) {
    super()
    this.source = source
    source.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) source.pause()
    })
    source.once('end', () => this.push(null))
  }
  override _read(): void {
    this.source.resume()
  }
}

/** The request body as an async iterable: the stream's chunks, the stream paused while undici writes. */
class Chunks {
  source: ServerHttp2Stream
  queue: Buffer[] = []
  ended = false
  waiter: PromiseWithResolvers<IteratorResult<Buffer>> | null = null
  constructor(source: ServerHttp2Stream) {
    this.source = source
    source.on('data', (c: Buffer) => {
      const w = this.waiter
      if (w !== null) {
        this.waiter = null
        w.resolve({ value: c, done: false })
      } else {
        this.queue.push(c)
        source.pause()
      }
    })
    source.once('end', () => {
      this.ended = true
      const w = this.waiter
      if (w !== null) {
        this.waiter = null
        w.resolve({ value: undefined, done: true })
      }
    })
  }
  [Symbol.asyncIterator]() {
    return this
  }
  next(): Promise<IteratorResult<Buffer>> {
    if (this.queue.length > 0) return Promise.resolve({ value: this.queue.shift()!, done: false })
    if (this.ended) return Promise.resolve({ value: undefined, done: true })
    this.source.resume()
    this.waiter = Promise.withResolvers()
    return this.waiter.promise
  }
}

class Forward implements Dispatcher.DispatchHandler {
  readonly stream: ServerHttp2Stream
  controller: Dispatcher.DispatchController | null = null
  trailers: OutgoingHttpHeaders | null = null
  done = false

  constructor(stream: ServerHttp2Stream) {
    this.stream = stream
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    status: number,
    fields: Record<string, string | string[] | undefined>,
  ): void {
    if (status < 200 || this.stream.destroyed) return
    this.stream.respond(responseHeaders(fields, { ':status': status }), { waitForTrailers: true })
    this.stream.once('wantTrailers', () => {
      if (this.trailers === null) this.stream.close()
      else this.stream.sendTrailers(this.trailers)
    })
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.stream.write(chunk)) {
      controller.pause()
      this.stream.once('drain', () => controller.resume())
    }
  }

  onResponseEnd(
    _controller: Dispatcher.DispatchController,
    trailers: Record<string, string | string[] | undefined>,
  ): void {
    this.done = true
    for (const _ in trailers) {
      this.trailers = responseHeaders(trailers, {})
      break
    }
    this.stream.end()
  }

  onResponseError(_controller: Dispatcher.DispatchController, _err: Error): void {
    this.done = true
    const stream = this.stream
    if (stream.destroyed) return
    if (stream.headersSent) stream.close(constants.NGHTTP2_INTERNAL_ERROR)
    else {
      stream.respond({ ':status': 502, 'content-type': 'text/plain' })
      stream.end('bad gateway\n')
    }
  }
}

function handle(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
  const handler = new Forward(stream)
  stream.on('error', () => {})
  // The client reset or went away: cancel the upstream request too.
  stream.once('close', () => {
    if (!handler.done) handler.controller?.abort(new Error('client closed'))
  })
  pool.dispatch(
    {
      path: headers[':path']!,
      method: headers[':method'] as Dispatcher.HttpMethod,
      headers: requestHeaders(headers),
      // undici's types leave out the async iterables its dispatch takes.
      body: stream.endAfterHeaders
        ? null
        : readable
          ? new Body(stream)
          : (new Chunks(stream) as unknown as Readable),
    },
    handler,
  )
}

const server = createServer({ settings: { maxConcurrentStreams: 100 } })
server.on('stream', handle)
server.on('session', (s) => s.on('error', () => s.destroy()))
server.listen(port, '127.0.0.1', () => console.log(`undici-h2-proxy on 127.0.0.1:${port} -> ${target}`))

const shutdown = () => {
  server.close()
  void pool.destroy()
  process.exit(0)
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
