// A tiny OTLP/HTTP trace sink for the `veer-tracing` subject: answers 200 to POST /v1/traces and
// counts what it was sent, so the report can show that spans really left the proxy. It runs inside the
// harness process (core 0, with the load generator): at 1% sampling it sees a batch every few seconds,
// and its CPU is counted as the harness's own, never as "other load" on the machine.
import { createServer, type Server } from 'node:http'

export interface SinkCounts {
  /** export requests answered (POST /v1/traces) */
  exports: number
  /** request body bytes received by those exports */
  bytes: number
}

export interface OtlpSink {
  readonly port: number
  readonly counts: Readonly<SinkCounts>
  close(): Promise<void>
}

export function startOtlpSink(): Promise<OtlpSink> {
  const counts: SinkCounts = { exports: 0, bytes: 0 }
  const server: Server = createServer((req, res) => {
    let bytes = 0
    req.on('data', (chunk: Buffer) => (bytes += chunk.length))
    req.on('end', () => {
      if (req.method !== 'POST' || (req.url ?? '').split('?')[0] !== '/v1/traces') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
        return
      }
      counts.exports++
      counts.bytes += bytes
      // An empty ExportTraceServiceResponse: no body in protobuf, `{}` in JSON; both mean full success.
      const json = (req.headers['content-type'] ?? '').includes('json')
      res.writeHead(200, { 'content-type': json ? 'application/json' : 'application/x-protobuf' })
      res.end(json ? '{}' : undefined)
    })
  })
  server.keepAliveTimeout = 65_000
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address()
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0
      resolve({
        port,
        counts,
        close: () =>
          new Promise<void>((done) => {
            server.closeAllConnections()
            server.close(() => done())
          }),
      })
    })
  })
}
