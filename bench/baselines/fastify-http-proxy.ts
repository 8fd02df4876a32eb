// Baseline: the smallest reasonable @fastify/http-proxy server (v11, on @fastify/reply-from and its
// default undici pool: keep-alive, 128 connections, no pipelining). Logging off, as in production
// benchmarks of fastify; no websocket support registered.
//   node bench/baselines/fastify-http-proxy.ts http://127.0.0.1:UPSTREAM_PORT LISTEN_PORT
import proxy from '@fastify/http-proxy'
import Fastify from 'fastify'

const target = process.argv[2]
const port = Number(process.argv[3])
if (target === undefined || !Number.isInteger(port) || port <= 0) {
  console.error('usage: node bench/baselines/fastify-http-proxy.ts TARGET_URL PORT')
  process.exit(2)
}

const app = Fastify({ logger: false })
await app.register(proxy, { upstream: target })
await app.listen({ host: '127.0.0.1', port })
console.log(`fastify-http-proxy baseline on 127.0.0.1:${port} -> ${target}`)

const shutdown = () => {
  app.server.closeAllConnections()
  void app.close().finally(() => process.exit(0))
  // Bounded: never wait for a straggler longer than a second.
  setTimeout(() => process.exit(0), 1000).unref()
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
