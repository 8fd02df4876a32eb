// Baseline "a second exchange alone": undici-minimal (node:http in front of an undici Pool, dispatch with
// the controller API) that also sends every request a second time, to a shadow upstream, fire-and-forget:
// the copy goes right after the primary, its answer is read and thrown away (body dumped), nothing is
// compared, nothing waits for it, and the client is answered from stable. What veer's 100% shadow costs
// beyond this is the cost of its mirroring itself (teeing, comparing, counters, the shadow line).
// Request bodies are not copied (the bench sends GETs); a request with a body is forwarded to stable only.
//   node bench/baselines/undici-twice.ts http://127.0.0.1:STABLE_PORT LISTEN_PORT http://127.0.0.1:SHADOW_PORT
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { type Dispatcher, Pool } from 'undici'

const target = process.argv[2]
const port = Number(process.argv[3])
const shadowTarget = process.argv[4]
if (target === undefined || shadowTarget === undefined || !Number.isInteger(port) || port <= 0) {
  console.error('usage: node bench/baselines/undici-twice.ts TARGET_URL PORT SHADOW_URL')
  process.exit(2)
}

const pool = new Pool(target, { connections: 256, pipelining: 1, keepAliveTimeout: 30_000 })
// Sized as the veer-shadow subject's shadow pool (connections 64), so neither drops nor queues more.
const shadowPool = new Pool(shadowTarget, { connections: 64, pipelining: 1, keepAliveTimeout: 30_000 })

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

/** The shadow copy's answer: read to its end and dropped; one shared handler, it keeps no state. */
const dump: Dispatcher.DispatchHandler = {
  onRequestStart() {},
  onResponseStart() {},
  onResponseData() {},
  onResponseEnd() {},
  onResponseError() {},
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  const handler = new Forward(res)
  // Client went away before the upstream answer was done: abort the upstream request.
  res.once('close', () => {
    if (!handler.finished) handler.controller?.abort(new Error('client closed'))
  })
  const hasBody =
    req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined
  const headers = forwardRequestHeaders(req.rawHeaders)
  const path = req.url ?? '/'
  const method = (req.method ?? 'GET') as Dispatcher.HttpMethod
  try {
    pool.dispatch({ path, method, headers, body: hasBody ? req : null }, handler)
  } catch {
    handler.finished = true
    res.writeHead(400, { 'content-type': 'text/plain' }).end('bad request\n')
    return
  }
  // The copy, after the primary (as veer sends it): same head, never a body, never waited for.
  if (!hasBody) shadowPool.dispatch({ path, method, headers, body: null }, dump)
}

const server = createServer(handle)
server.listen(port, '127.0.0.1', () =>
  console.log(`undici-twice on 127.0.0.1:${port} -> ${target}, copies to ${shadowTarget}`),
)

const shutdown = () => {
  server.close()
  server.closeAllConnections()
  void pool.destroy()
  void shadowPool.destroy()
  process.exit(0)
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
