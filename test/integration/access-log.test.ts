/**
 * The access line (README "Logs"): one JSON line per request with the route, version, release, upstream,
 * method, path without its query, status, duration and, on failure, the error code. The line is built by
 * hand (log.ts requestLine), so these check that it is the JSON a log pipeline expects.
 */
import { createServer } from 'node:net'
import { request } from 'undici'
import { describe, expect, it } from 'vitest'
import { testBed, waitUntil } from '../helpers/bed.ts'
import { h2get } from '../helpers/h2.ts'
import { rawRequest } from './raw-http.ts'

const bed = testBed()

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const port = (s.address() as { port: number }).port
  await new Promise((r) => s.close(r))
  return port
}

describe('access log', () => {
  it('writes one line per request with the fixed fields, and escapes what it must', async () => {
    const stable = await bed.upstream('stable')
    const release = 'v1 "blue" \\ ü'
    const v = await bed.proxy({ stable: { url: stable.url, release } })
    const before = Date.now()
    const sent: Array<['GET' | 'POST', string]> = [
      ['GET', '/plain?token=secret'],
      ['POST', '/a%20b/%22q%22/caf%C3%A9'],
      ['POST', "/x/'y'/\u00e9"],
    ]
    for (const [method, path] of sent) {
      const res = await request(`${v.url}${path}`, { method, body: method === 'POST' ? 'x' : null })
      await res.body.dump()
      expect(res.statusCode).toBe(200)
    }
    await waitUntil(() => v.logs.filter((l) => l.msg === 'access').length === 3, 'three access lines')
    expect(v.unparsed).toEqual([])
    const lines = v.logs.filter((l) => l.msg === 'access')
    for (const l of lines) {
      expect(l).toMatchObject({
        level: 30,
        pid: v.child.pid,
        route: 'default',
        version: 'stable',
        release,
        upstream: stable.url,
        status: 200,
      })
      expect(Date.parse(String(l.time))).toBeGreaterThanOrEqual(before - 1)
      expect(typeof l.duration_ms).toBe('number')
      expect(l.duration_ms as number).toBeGreaterThanOrEqual(0)
      expect(l).not.toHaveProperty('error')
      expect(l).not.toHaveProperty('retried')
    }
    // The query string is left out (it may carry secrets); the rest of the target is as the client sent it.
    expect(lines.map((l) => [l.method, l.path])).toEqual([
      ['GET', '/plain'],
      ['POST', '/a%20b/%22q%22/caf%C3%A9'],
      ['POST', stable.seen[2]!.url],
    ])
  })

  it('says what failed when no answer came back', async () => {
    const v = await bed.proxy({ stable: { url: `http://127.0.0.1:${await closedPort()}` } })
    const res = await request(`${v.url}/down`)
    await res.body.dump()
    expect(res.statusCode).toBe(502)
    const line = await v.waitForLog((l) => l.msg === 'access')
    expect(line).toMatchObject({ path: '/down', status: null, error: 'upstream_connect_failed' })
  })

  it('names the client protocol: HTTP/1.0, HTTP/1.1 or HTTP/2', async () => {
    const stable = await bed.upstream('stable')
    const v = await bed.proxy({ stable: { url: stable.url } })
    const h11 = await request(`${v.url}/one-one`)
    await h11.body.dump()
    const h10 = await rawRequest(v.port, 'GET /one-zero HTTP/1.0\r\nHost: x\r\n\r\n')
    h10.client.close()
    const h2 = await h2get(v.url, '/two')
    expect([h11.statusCode, h10.status, h2.status]).toEqual([200, 200, 200])
    await waitUntil(() => v.logs.filter((l) => l.msg === 'access').length === 3, 'three access lines')
    const protocols = Object.fromEntries(
      v.logs.filter((l) => l.msg === 'access').map((l) => [l.path, l.protocol]),
    )
    expect(protocols).toEqual({ '/one-one': 'HTTP/1.1', '/one-zero': 'HTTP/1.0', '/two': 'HTTP/2' })
  })
})
