/**
 * GET /v1/events: server-sent events (text/event-stream) of every change. `change` events carry the
 * audit entry and the route after it, with `id:` the revision; `applied` says a rollout step reached
 * every live proxy (its pause starts); `proxy` says a proxy registered, acked or refused a revision.
 * A comment line every 15 s keeps idle connections through proxies and load balancers.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'

const HEARTBEAT_MS = 15_000
const MAX_BUFFERED = 1024 * 1024

export class EventHub {
  private readonly clients = new Set<ServerResponse>()
  private readonly heartbeat: NodeJS.Timeout

  constructor() {
    this.heartbeat = setInterval(() => {
      for (const res of this.clients) res.write(': ping\n\n')
    }, HEARTBEAT_MS)
    this.heartbeat.unref()
  }

  get size(): number {
    return this.clients.size
  }

  open(req: IncomingMessage, res: ServerResponse, hello: unknown): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
    })
    res.write(`retry: 2000\nevent: hello\ndata: ${JSON.stringify(hello)}\n\n`)
    this.clients.add(res)
    const drop = () => this.clients.delete(res)
    req.on('close', drop)
    res.on('error', drop)
  }

  publish(event: string, data: unknown, id?: number): void {
    if (this.clients.size === 0) return
    const frame = `${id === undefined ? '' : `id: ${id}\n`}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`
    for (const res of this.clients) {
      // A client that stopped reading is dropped rather than buffered for without end.
      if (res.writableLength > MAX_BUFFERED) {
        this.clients.delete(res)
        res.destroy()
        continue
      }
      res.write(frame)
    }
  }

  close(): void {
    clearInterval(this.heartbeat)
    for (const res of this.clients) res.end()
    this.clients.clear()
  }
}
