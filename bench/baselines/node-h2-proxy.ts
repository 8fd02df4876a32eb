// Baseline "the Node floor" for HTTP/2: a node:http2 cleartext (h2c) server that forwards every stream
// over ONE node:http2 client session to an h2c upstream (reopened if it closes). It copies the method,
// path, authority and regular headers (hop-by-hop ones left out, `te: trailers` kept), pipes both bodies
// (backpressure included), and passes response trailers on (gRPC's grpc-status) as a trailing HEADERS frame.
// Nothing else: no routing, metrics, logs or timeouts.
//   node bench/baselines/node-h2-proxy.ts http://127.0.0.1:UPSTREAM_PORT LISTEN_PORT
import {
  type ClientHttp2Session,
  connect,
  constants,
  createServer,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type ServerHttp2Stream,
} from 'node:http2'

const target = process.argv[2]
const port = Number(process.argv[3])
if (target === undefined || !Number.isInteger(port) || port <= 0) {
  console.error('usage: node bench/baselines/node-h2-proxy.ts TARGET_URL PORT')
  process.exit(2)
}

// Connection-specific fields HTTP/2 forbids (RFC 9113 §8.2.2), plus `host` (it is :authority here).
const HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'host',
  'http2-settings',
])

function forwardHeaders(headers: IncomingHttpHeaders, into: OutgoingHttpHeaders): OutgoingHttpHeaders {
  for (const name in headers) {
    if (name.charCodeAt(0) === 58 /* ':' */ || HOP.has(name)) continue
    if (name === 'te' && headers.te !== 'trailers') continue
    into[name] = headers[name]
  }
  return into
}

let session: ClientHttp2Session | null = null
function upstream(): ClientHttp2Session {
  if (session === null || session.closed || session.destroyed) {
    const s = connect(target!)
    s.on('error', () => {}) // the streams on it see the error; the next request reconnects
    s.once('close', () => {
      if (session === s) session = null
    })
    session = s
  }
  return session
}

function badGateway(stream: ServerHttp2Stream): void {
  if (stream.destroyed) return
  if (stream.headersSent) stream.close(constants.NGHTTP2_INTERNAL_ERROR)
  else {
    stream.respond({ ':status': 502, 'content-type': 'text/plain' })
    stream.end('bad gateway\n')
  }
}

function handle(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number): void {
  const endStream = (flags & constants.NGHTTP2_FLAG_END_STREAM) !== 0
  const out = forwardHeaders(headers, {
    ':method': headers[':method'],
    ':path': headers[':path'],
    ':authority': headers[':authority'],
    ':scheme': 'http',
  })
  let up: ReturnType<ClientHttp2Session['request']>
  try {
    up = upstream().request(out, { endStream })
  } catch {
    badGateway(stream)
    return
  }
  let trailers: OutgoingHttpHeaders | null = null
  up.once('response', (head, upFlags) => {
    if (stream.destroyed) return
    const status = head[':status'] ?? 502
    if ((upFlags & constants.NGHTTP2_FLAG_END_STREAM) !== 0) {
      // Headers only (a gRPC trailers-only answer, a 204): one HEADERS frame that ends the stream.
      stream.respond(forwardHeaders(head, { ':status': status }), { endStream: true })
      return
    }
    // Trailers are announced by gRPC's content-type or a Trailer field; only then wait for them.
    const type = head['content-type']
    const expectTrailers =
      (typeof type === 'string' && type.startsWith('application/grpc')) || head.trailer !== undefined
    stream.respond(forwardHeaders(head, { ':status': status }), { waitForTrailers: expectTrailers })
    if (expectTrailers) {
      stream.once('wantTrailers', () => {
        if (trailers === null) stream.close()
        else stream.sendTrailers(trailers)
      })
    }
    up.pipe(stream)
  })
  up.once('trailers', (t) => {
    trailers = forwardHeaders(t, {})
  })
  up.once('error', () => badGateway(stream))
  // The client reset or went away: cancel the upstream stream too.
  stream.once('close', () => {
    if (!up.closed) up.close(constants.NGHTTP2_CANCEL)
  })
  stream.on('error', () => {})
  if (!endStream) stream.pipe(up)
}

const server = createServer({ settings: { maxConcurrentStreams: 1000 } })
server.on('stream', handle)
server.on('session', (s) => s.on('error', () => s.destroy()))
server.listen(port, '127.0.0.1', () => console.log(`node-h2-proxy on 127.0.0.1:${port} -> ${target}`))

const shutdown = () => {
  server.close()
  session?.destroy()
  process.exit(0)
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
