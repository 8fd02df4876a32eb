// Baseline "the Node ceiling": node:http server in front of an undici Pool, using Pool.dispatch and the
// controller-based handler API directly (no Readable wrappers). Strips hop-by-hop headers, streams both
// bodies, honours backpressure with controller.pause()/resume().
//   node bench/baselines/undici-minimal.ts http://127.0.0.1:UPSTREAM_PORT LISTEN_PORT
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { type Dispatcher, Pool } from 'undici'

const target = process.argv[2]
const port = Number(process.argv[3])
if (target === undefined || !Number.isInteger(port) || port <= 0) {
  console.error('usage: node bench/baselines/undici-minimal.ts TARGET_URL PORT')
  process.exit(2)
}

const pool = new Pool(target, { connections: 256, pipelining: 1, keepAliveTimeout: 30_000 })

const HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'proxy-authenticate',
  'proxy-authorization',
])

function forwardRequestHeaders(raw: string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    if (!HOP.has(name.toLowerCase())) out.push(name, raw[i + 1]!)
  }
  return out
}

function forwardResponseHeaders(raw: Dispatcher.DispatchController['rawHeaders']): string[] {
  const out: string[] = []
  if (!Array.isArray(raw)) return out
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1')
    if (!HOP.has(name.toLowerCase())) out.push(name, raw[i + 1]!.toString('latin1'))
  }
  return out
}

class Forward implements Dispatcher.DispatchHandler {
  readonly res: ServerResponse
  controller: Dispatcher.DispatchController | null = null
  finished = false

  constructor(res: ServerResponse) {
    this.res = res
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    status: number,
    _h: unknown,
    text?: string,
  ): void {
    if (status < 200) return // 1xx informational: not forwarded by this minimal proxy
    const headers = forwardResponseHeaders(controller.rawHeaders)
    if (text) this.res.writeHead(status, text, headers)
    else this.res.writeHead(status, headers)
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.res.write(chunk)) {
      controller.pause()
      this.res.once('drain', () => controller.resume())
    }
  }

  onResponseEnd(): void {
    this.finished = true
    this.res.end()
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    this.finished = true
    if (this.res.headersSent) this.res.destroy(err)
    else if (!this.res.destroyed)
      this.res.writeHead(502, { 'content-type': 'text/plain' }).end('bad gateway\n')
  }
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  const handler = new Forward(res)
  // Client went away before the upstream answer was done: abort the upstream request.
  res.once('close', () => {
    if (!handler.finished) handler.controller?.abort(new Error('client closed'))
  })
  const hasBody =
    req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined
  try {
    pool.dispatch(
      {
        path: req.url ?? '/',
        method: (req.method ?? 'GET') as Dispatcher.HttpMethod,
        headers: forwardRequestHeaders(req.rawHeaders),
        body: hasBody ? req : null,
      },
      handler,
    )
  } catch {
    handler.finished = true
    res.writeHead(400, { 'content-type': 'text/plain' }).end('bad request\n')
  }
}

const server = createServer(handle)
server.listen(port, '127.0.0.1', () => console.log(`undici-minimal on 127.0.0.1:${port} -> ${target}`))

const shutdown = () => {
  server.close()
  server.closeAllConnections()
  void pool.destroy()
  process.exit(0)
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
