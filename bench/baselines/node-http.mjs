// Baseline "a bare node:http server": answers every request 200 with a 100 B body (as bench/upstream.ts's), no proxying, no
// metrics, no logging. bench/soak.ts runs it under the same load as veer, in the same run, so veer's
// "RSS ≤ a bare node:http server's + 40 MiB" is a paired figure.
// Plain JavaScript (.mjs), so it is not run through type stripping: the floor is node itself.
//   node bench/baselines/node-http.mjs PORT
import { createServer } from 'node:http'

const port = Number(process.argv[2])
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node bench/baselines/node-http.mjs PORT')
  process.exit(2)
}

const body = Buffer.from(`{"upstream":"node-http","ok":true,"pad":"${'.'.repeat(57)}"}`)
const head = ['content-type', 'application/json', 'content-length', String(body.length)]

const server = createServer((req, res) => {
  if (req.method !== 'GET' && req.method !== 'HEAD') req.resume()
  res.writeHead(200, head)
  res.end(body)
})
server.keepAliveTimeout = 65_000
server.headersTimeout = 66_000
server.listen(port, '127.0.0.1', () => console.log(`node-http listening on 127.0.0.1:${port}`))

const shutdown = () => {
  server.close()
  server.closeAllConnections()
  process.exit(0)
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
