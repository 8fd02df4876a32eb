/**
 * The demo's sample service: one small JSON API, started once per release (`v1` stable, `v2` canary).
 * Two knobs, changeable while it runs: `errorRate`, the share of requests answered 500 (spread evenly:
 * at 0.05 every 20th request fails, so a run's rate is exact rather than luck), and `extraDelayMs`,
 * added to every answer's 1–5 ms.
 */
import { createServer, type Server } from 'node:http'

export interface SampleKnobs {
  /** Share of requests answered 500, 0..1. */
  errorRate: number
  /** Milliseconds added to every answer. */
  extraDelayMs: number
}

export interface SampleApp {
  readonly server: Server
  readonly release: string
  /** What it serves now. */
  readonly knobs: Readonly<SampleKnobs>
  /** Requests it has received since it started. */
  readonly requests: number
  /** Change its behaviour from the next request on (the error count starts again). */
  set(knobs: Partial<SampleKnobs>): void
  /** Stop listening and drop every connection (keep-alive ones included). */
  close(): Promise<void>
}

export function startSampleApp(
  release: string,
  port: number,
  knobs: Partial<SampleKnobs> = {},
): Promise<SampleApp> {
  const k: SampleKnobs = { errorRate: 0, extraDelayMs: 0, ...knobs }
  let served = 0
  let failed = 0
  let requests = 0
  const server = createServer((req, res) => {
    req.resume()
    requests++
    served++
    // Fail when the running count of failures falls behind errorRate × requests.
    const fail = k.errorRate > 0 && failed < Math.floor(served * k.errorRate)
    if (fail) failed++
    const delay = 1 + Math.random() * 4 + k.extraDelayMs
    setTimeout(() => {
      if (fail) {
        res.writeHead(500, { 'content-type': 'application/json', 'x-release': release })
        res.end(`${JSON.stringify({ error: 'internal', release })}\n`)
        return
      }
      const body = JSON.stringify({
        service: 'shop',
        release,
        method: req.method,
        path: req.url,
        user: req.headers['x-user-id'] ?? null,
      })
      res.writeHead(200, { 'content-type': 'application/json', 'x-release': release })
      res.end(`${body}\n`)
    }, delay)
  })
  const app: SampleApp = {
    server,
    release,
    knobs: k,
    get requests() {
      return requests
    },
    set(knobs) {
      Object.assign(k, knobs)
      served = 0
      failed = 0
    },
    close: () =>
      new Promise<void>((resolve) => {
        if (!server.listening) return resolve()
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject)
      resolve(app)
    })
  })
}
