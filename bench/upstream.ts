// A fast fixed-answer HTTP/1.1 upstream for the benchmark, run as its own process:
//   node bench/upstream.ts PORT [NAME [BODY_NAME]]        (or env PORT / UPSTREAM_NAME)
// GET /16k answers 16 KiB, anything else ~100 B. Every answer carries `x-upstream: NAME` so the
// harness can see which upstream a proxied request reached. The ~100 B JSON body names BODY_NAME
// (default NAME): a shadow upstream started as `shadow stable` answers byte for byte what stable does,
// so veer's shadow comparison sees matches, the common case, rather than a diff on every request.
// Env UPSTREAM_DELAY_MS (default 0): answer every request only after that many ms (a slow upstream,
// e.g. a shadow that takes 3 s); 0 answers at once, as before.
import { createServer, type ServerResponse } from 'node:http'

const port = Number(process.argv[2] ?? process.env.PORT ?? 0)
const name = process.argv[3] ?? process.env.UPSTREAM_NAME ?? 'stable'
const bodyName = process.argv[4] ?? name
const delayMs = Number(process.env.UPSTREAM_DELAY_MS ?? 0)
if (!Number.isInteger(port) || port <= 0 || port > 65535 || !Number.isInteger(delayMs) || delayMs < 0) {
  console.error('usage: [UPSTREAM_DELAY_MS=N] node bench/upstream.ts PORT [NAME [BODY_NAME]]')
  process.exit(2)
}

const prefix = `{"upstream":${JSON.stringify(bodyName)},"ok":true,"pad":"`
const small = Buffer.from(`${prefix.padEnd(98, '.')}"}`) // 100 bytes
const big = Buffer.alloc(16 * 1024, 'x')
const head = (body: Buffer): string[] => [
  'content-type',
  'application/octet-stream',
  'content-length',
  String(body.length),
  'x-upstream',
  name,
]
const smallHead = head(small)
const bigHead = head(big)

const answer = (url: string | undefined, res: ServerResponse): void => {
  if (url === '/16k') {
    res.writeHead(200, bigHead)
    res.end(big)
  } else {
    res.writeHead(200, smallHead)
    res.end(small)
  }
}

const server = createServer((req, res) => {
  if (req.method !== 'GET' && req.method !== 'HEAD') req.resume() // drain any request body
  if (delayMs === 0) answer(req.url, res)
  else setTimeout(answer, delayMs, req.url, res)
})
// Longer than any proxy's idle pool timeout, so the upstream never closes a pooled connection first.
server.keepAliveTimeout = 65_000
server.headersTimeout = 66_000

server.listen(port, '127.0.0.1', () => {
  console.log(
    `upstream ${name} listening on 127.0.0.1:${port}${delayMs > 0 ? ` (answers after ${delayMs} ms)` : ''}`,
  )
})

const shutdown = () => {
  server.close()
  server.closeAllConnections()
  process.exit(0)
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
