// A fast fixed-answer cleartext HTTP/2 (h2c, prior knowledge) upstream for bench/h2.ts, run as its own
// process:   node bench/h2-upstream.ts PORT [NAME]
// A request with content-type application/grpc… is answered as a gRPC unary call: its body is read to the
// end, then 200 with one 5-byte-framed message and the trailers grpc-status 0 (HEADERS frames after the
// DATA, as gRPC servers send them). Anything else gets ~100 B at once, as bench/upstream.ts answers.
// Every answer carries `x-upstream: NAME`.
import { createServer, type ServerHttp2Stream } from 'node:http2'

const port = Number(process.argv[2] ?? process.env.PORT ?? 0)
const name = process.argv[3] ?? process.env.UPSTREAM_NAME ?? 'stable'
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node bench/h2-upstream.ts PORT [NAME]')
  process.exit(2)
}

const prefix = `{"upstream":${JSON.stringify(name)},"ok":true,"pad":"`
const small = Buffer.from(`${prefix.padEnd(98, '.')}"}`) // 100 bytes
const smallHead = {
  ':status': 200,
  'content-type': 'application/octet-stream',
  'content-length': String(small.length),
  'x-upstream': name,
}

/** A gRPC message frame: compressed flag 0, 4-byte big-endian length, then the (opaque) message. */
function grpcFrame(message: Buffer): Buffer {
  const frame = Buffer.alloc(5 + message.length)
  frame.writeUInt32BE(message.length, 1)
  message.copy(frame, 5)
  return frame
}
const grpcReply = grpcFrame(Buffer.from('bench reply, 24 bytes..'))
const grpcHead = { ':status': 200, 'content-type': 'application/grpc', 'x-upstream': name }
const grpcTrailers = { 'grpc-status': '0' }

function answerGrpc(stream: ServerHttp2Stream): void {
  stream.on('data', () => {}) // the request message: read, not looked at
  stream.once('end', () => {
    if (stream.destroyed) return
    stream.respond(grpcHead, { waitForTrailers: true })
    stream.once('wantTrailers', () => stream.sendTrailers(grpcTrailers))
    stream.end(grpcReply)
  })
}

const server = createServer({ settings: { maxConcurrentStreams: 1000 } })
server.on('stream', (stream, headers) => {
  stream.on('error', () => {}) // a reset stream: nothing to do
  const type = headers['content-type']
  if (typeof type === 'string' && type.startsWith('application/grpc')) {
    answerGrpc(stream)
    return
  }
  if (headers[':method'] !== 'GET' && headers[':method'] !== 'HEAD') stream.resume() // drain a body
  stream.respond(smallHead)
  stream.end(small)
})
server.on('session', (session) => session.on('error', () => session.destroy()))

server.listen(port, '127.0.0.1', () => {
  console.log(`h2c upstream ${name} listening on 127.0.0.1:${port}`)
})

const shutdown = () => {
  server.close()
  process.exit(0)
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
