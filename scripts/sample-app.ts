/**
 * The demo's sample service: `v1` (stable) and `v2` (canary) of one small JSON API. v2 is a little
 * slower, so the per-version figures differ visibly.
 */
import { createServer, type Server } from 'node:http'

export function startSampleApp(release: string, port: number, extraDelayMs: number): Promise<Server> {
  const server = createServer((req, res) => {
    req.resume()
    const delay = 1 + Math.random() * 4 + extraDelayMs
    setTimeout(() => {
      const body = JSON.stringify({
        service: 'shop',
        release,
        path: req.url,
        user: req.headers['x-user-id'] ?? null,
      })
      res.writeHead(200, { 'content-type': 'application/json', 'x-release': release })
      res.end(`${body}\n`)
    }, delay)
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve(server))
  })
}
