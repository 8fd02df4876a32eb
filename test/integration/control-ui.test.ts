/**
 * The status page's files under /ui/ (control/ui.ts): no token, strict CSP and nosniff on every answer,
 * the right types, a fixed list (nothing else, `..` included, is served), /ui → /ui/; and what the page
 * reads from the event stream: `hello` names the token's role, `stats` carries per-version rate, error
 * rate and p99 of the proxies' reports at most once a second per route. The page itself: test/browser/.
 */
import { readFileSync } from 'node:fs'
import { request as rawRequest } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { UI_CSP } from '../../control/ui.ts'
import {
  type ControlProcess,
  followEvents,
  startControl,
  startLinkedBed,
  TOKENS,
  until,
} from '../helpers/control.ts'
import { startUpstream, type Upstream } from '../helpers/upstream.ts'
import type { VeerProcess } from '../helpers/veer.ts'

const ROOT = new URL('../../', import.meta.url).pathname

/** A request with the path sent exactly as written (fetch would normalise `..` away). */
function raw(
  url: string,
  path: string,
  method = 'GET',
): Promise<{ status: number; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = rawRequest(`${url}${path}`, { method, path }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers }))
    })
    req.on('error', reject)
    req.end()
  })
}

describe('the /ui/ files', () => {
  let control: ControlProcess
  beforeAll(async () => {
    control = await startControl()
  })
  afterAll(async () => {
    await control?.stop()
  })

  it.each([
    ['/ui/', 'text/html; charset=utf-8', 'control/ui/index.html'],
    ['/ui/app.js', 'text/javascript; charset=utf-8', 'control/ui/app.js'],
    ['/ui/style.css', 'text/css; charset=utf-8', 'control/ui/style.css'],
    ['/ui/uplot.js', 'text/javascript; charset=utf-8', 'node_modules/uplot/dist/uPlot.iife.min.js'],
    ['/ui/uplot.css', 'text/css; charset=utf-8', 'node_modules/uplot/dist/uPlot.min.css'],
  ])('%s: served without a token as %s, with the CSP and nosniff', async (path, type, file) => {
    const res = await fetch(`${control.url}${path}`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe(type)
    expect(res.headers.get('content-security-policy')).toBe(UI_CSP)
    expect(res.headers.get('x-content-type-options')).toBe('nosniff')
    expect(res.headers.get('referrer-policy')).toBe('no-referrer')
    expect(Buffer.from(await res.arrayBuffer()).equals(readFileSync(`${ROOT}${file}`))).toBe(true)
  })

  it('the CSP is the strict one, and the page has no inline script or style for it to allow', async () => {
    expect(UI_CSP).toBe(
      "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    )
    const html = await (await fetch(`${control.url}/ui/`)).text()
    const scripts = html.match(/<script\b[^>]*>/g) ?? []
    expect(scripts.length).toBe(2)
    for (const s of scripts) expect(s).toMatch(/ src="[a-z]+\.js"/)
    expect(html).not.toMatch(/<style|\sstyle=|\son[a-z]+=|https?:\/\//)
  })

  it('/ui redirects to /ui/ (with the same headers)', async () => {
    const res = await fetch(`${control.url}/ui`, { redirect: 'manual' })
    expect(res.status).toBe(301)
    expect(res.headers.get('location')).toBe('/ui/')
    expect(res.headers.get('content-security-policy')).toBe(UI_CSP)
  })

  it.each([
    '/ui/nope.js',
    '/ui/index.html',
    '/ui/app.js/',
    '/ui/../state.json',
    '/ui/../v1/routes',
    '/ui/..%2f..%2fpackage.json',
    '/ui/%2e%2e/package.json',
    '/ui//etc/passwd',
    '/ui/ui.ts',
  ])('%s: 404 with the CSP, nothing outside the list is served', async (path) => {
    const res = await raw(control.url, path)
    expect(res.status).toBe(404)
    expect(res.headers['content-security-policy']).toBe(UI_CSP)
    expect(res.headers['x-content-type-options']).toBe('nosniff')
  })

  it('takes GET and HEAD only', async () => {
    expect((await raw(control.url, '/ui/app.js', 'HEAD')).status).toBe(200)
    const post = await raw(control.url, '/ui/', 'POST')
    expect(post.status).toBe(405)
    expect(post.headers.allow).toBe('GET, HEAD')
  })

  it('the API still needs a token: the page is public, the data is not', async () => {
    expect((await control.api('GET', '/v1/routes', { token: null })).status).toBe(401)
    expect((await raw(control.url, '/uix')).status).toBe(401)
  })

  it('the event stream says hello with the token name and role', async () => {
    const read = await followEvents(control, TOKENS.read)
    const op = await followEvents(control, TOKENS.operator)
    try {
      await until(() => read.frames.length > 0 && op.frames.length > 0)
      expect(read.frames[0]).toMatchObject({ event: 'hello', data: { who: 'dashboard', role: 'read' } })
      expect(op.frames[0]).toMatchObject({ event: 'hello', data: { who: 'alice', role: 'operator' } })
    } finally {
      await Promise.all([read.close(), op.close()])
    }
  })
})

describe('stats events', () => {
  let stable: Upstream
  let canary: Upstream
  let control: ControlProcess
  let proxy: VeerProcess

  beforeAll(async () => {
    stable = await startUpstream('stable')
    canary = await startUpstream('canary')
    ;({ control, proxy } = await startLinkedBed(stable, canary))
  })
  afterAll(async () => {
    await Promise.all([control?.stop(), proxy?.stop()])
    await Promise.all([stable?.close(), canary?.close()])
  })

  it('once a second per route: the merged per-version rate, error rate and p99 of the proxies’ reports', async () => {
    expect((await control.api('PUT', '/v1/routes/shop/weights', { body: { canary: 50 } })).status).toBe(200)
    const events = await followEvents(control)
    let sending = true
    const load = (async () => {
      while (sending) await (await request(`${proxy.url}/x`)).body.dump()
    })()
    try {
      const stats = () => events.frames.filter((f) => f.event === 'stats' && f.data.route === 'shop')
      await until(() => stats().filter((f) => f.data.canary?.requests > 0).length >= 3, 15_000)
      const seen = stats().map((f) => f.data)
      for (const s of seen) {
        expect(s.intervalMs).toBeGreaterThanOrEqual(900)
        expect(s.stable.rps).toBeCloseTo((s.stable.requests * 1000) / s.intervalMs, 1)
        expect(s.proxies).toEqual({ live: 1, inSync: 1, stale: [] })
      }
      // Bounded: consecutive events of the route are at least ~a second apart, whatever the report rate.
      for (let i = 1; i < seen.length; i++) expect(seen[i].at - seen[i - 1].at).toBeGreaterThanOrEqual(900)
      const bytes = seen.map((s) => JSON.stringify(s).length + 'event: stats\ndata: \n\n'.length)
      console.log(
        `stats events for one route: ${seen.length} over ${((seen.at(-1).at - seen[0].at) / 1000).toFixed(1)} s after the first, ${Math.max(...bytes)} bytes each at most`,
      )
      const busy = seen.filter((s) => s.canary?.requests > 0).at(-1)
      expect(busy.stable.requests).toBeGreaterThan(0)
      expect(busy.stable.errorRate).toBe(0)
      expect(busy.canary.p99Ms).toBeGreaterThan(0)
      // No rollout: no verdict to show.
      expect(busy.analysis).toBeNull()
    } finally {
      sending = false
      await load
      await events.close()
    }
  })
})
