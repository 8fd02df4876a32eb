// Baseline: the smallest reasonable http-proxy-3 (v2) reverse proxy, with a keep-alive agent.
//   node bench/baselines/http-proxy-3.ts http://127.0.0.1:UPSTREAM_PORT LISTEN_PORT
import { Agent, createServer, ServerResponse } from 'node:http'
import { createProxyServer } from 'http-proxy-3'

const target = process.argv[2]
const port = Number(process.argv[3])
if (target === undefined || !Number.isInteger(port) || port <= 0) {
  console.error('usage: node bench/baselines/http-proxy-3.ts TARGET_URL PORT')
  process.exit(2)
}

const agent = new Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 256 })
const proxy = createProxyServer({ target, agent })

proxy.on('error', (err, _req, res) => {
  if (res instanceof ServerResponse) {
    if (res.headersSent) res.destroy(err)
    else res.writeHead(502, { 'content-type': 'text/plain' }).end('bad gateway\n')
  } else {
    res.destroy()
  }
})

const server = createServer((req, res) => proxy.web(req, res))
server.listen(port, '127.0.0.1', () => console.log(`http-proxy-3 baseline on 127.0.0.1:${port} -> ${target}`))

const shutdown = () => {
  server.close()
  server.closeAllConnections()
  agent.destroy()
  process.exit(0)
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
