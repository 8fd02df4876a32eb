/**
 * A/B match rules through a real proxy: a request whose header, cookie or query parameter has the
 * configured value goes to the canary before weights apply (here at weight 0), over HTTP/1.1 and
 * HTTP/2; others stay on stable; the match traffic is counted as canary traffic; an ejected canary
 * sends matching requests to stable; the fuse ends matching; `/v1/config` shows the rules.
 */
import { describe, expect, it } from 'vitest'
import { testBed } from '../helpers/bed.ts'
import { h2get } from '../helpers/h2.ts'
import { deadPort } from '../helpers/upstream.ts'
import { proxyRefuses, writeConfig } from '../helpers/veer.ts'

const bed = testBed()
const rules = [
  { header: 'X-Beta', value: '1' },
  { cookie: 'cohort', value: 'early' },
  { query: 'preview', value: 'new ui' },
]

async function version(url: string, headers: Record<string, string> = {}): Promise<string | null> {
  const res = await fetch(url, { headers })
  await res.arrayBuffer()
  return res.headers.get('x-veer-version')
}

describe('canaryMatch', () => {
  it('sends matching requests to the canary at weight 0, and only those', async () => {
    const stable = await bed.upstream('stable')
    const canary = await bed.upstream('canary')
    const veer = await bed.proxy({
      stable: { url: stable.url },
      canary: { url: canary.url },
      canaryMatch: rules,
    })
    expect(await version(`${veer.url}/a`, { 'x-beta': '1' })).toBe('canary')
    expect(await version(`${veer.url}/a`, { 'x-beta': '2' })).toBe('stable')
    expect(await version(`${veer.url}/a`, { cookie: 'session=abc; cohort=early' })).toBe('canary')
    expect(await version(`${veer.url}/a`, { cookie: 'xcohort=early' })).toBe('stable')
    expect(await version(`${veer.url}/a?x=1&preview=new+ui`)).toBe('canary')
    expect(await version(`${veer.url}/a?preview=new%20ui`)).toBe('canary')
    expect(await version(`${veer.url}/a?preview=old`)).toBe('stable')
    expect(await version(`${veer.url}/a`)).toBe('stable')
    // HTTP/2 the same.
    expect((await h2get(veer.url, '/h2', { 'x-beta': '1' })).headers['x-veer-version']).toBe('canary')
    expect((await h2get(veer.url, '/h2')).headers['x-veer-version']).toBe('stable')
    expect(canary.seen).toHaveLength(5)
    const metrics = await (await fetch(`${veer.adminUrl}/metrics`)).text()
    expect(metrics).toMatch(/veer_requests_total\{route="default",version="canary",code="200"\} 5/)
    const config = (await (await fetch(`${veer.adminUrl}/v1/config`)).json()) as {
      routes: Record<string, unknown>[]
    }
    expect(config.routes[0]!.canaryMatch).toEqual(rules)
    expect(config.routes[0]!.canaryMatchActive).toBe(true)
    expect(config.routes[0]!.weights).toEqual({ stable: 100, canary: 0 })
  })

  it('sends matching requests to stable while the canary is ejected, and stops matching once the fuse trips', async () => {
    const stable = await bed.upstream('stable')
    const veer = await bed.proxy(
      {
        stable: { url: stable.url },
        canary: { url: `http://127.0.0.1:${await deadPort()}` },
        canaryMatch: [{ header: 'x-beta', value: '1' }],
        analysis: { fuse: { consecutiveFailures: 3 }, fallback: { enabled: false } },
      },
      { health: { ejectAfter: 100 } },
    )
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${veer.url}/b`, { headers: { 'x-beta': '1' } })
      expect(res.status).toBe(502)
    }
    await veer.waitForLog((l) => l.msg === 'canary weight set to 0 by the fuse')
    expect(await version(`${veer.url}/b`, { 'x-beta': '1' })).toBe('stable')
    const config = (await (await fetch(`${veer.adminUrl}/v1/config`)).json()) as {
      routes: Record<string, unknown>[]
    }
    expect(config.routes[0]!.canaryMatchActive).toBe(false)

    const ejecting = await bed.proxy(
      {
        stable: { url: stable.url },
        canary: { url: `http://127.0.0.1:${await deadPort()}` },
        canaryMatch: [{ header: 'x-beta', value: '1' }],
        analysis: { fuse: { consecutiveFailures: 0 }, fallback: { enabled: false } },
      },
      { health: { ejectAfter: 2, ejectFor: '1m' } },
    )
    for (let i = 0; i < 2; i++)
      expect((await fetch(`${ejecting.url}/c`, { headers: { 'x-beta': '1' } })).status).toBe(502)
    expect(await version(`${ejecting.url}/c`, { 'x-beta': '1' })).toBe('stable')
  })

  it('refuses rules that cannot work, naming the field', async () => {
    const fails = async (route: Record<string, unknown>, ...patterns: RegExp[]) => {
      const config = writeConfig({
        routes: [{ name: 'default', stable: { url: 'http://127.0.0.1:9' }, ...route }],
      })
      const stderr = (await proxyRefuses(['--config', config])).join('\n')
      for (const p of patterns) expect(stderr).toMatch(p)
    }
    const canary = { url: 'http://127.0.0.1:10' }
    await fails(
      { canary, canaryMatch: [{ header: 'x', cookie: 'y', value: '1' }] },
      /routes\[0\]\.canaryMatch\[0\] needs exactly one of header, cookie, query \(got header and cookie\)/,
    )
    await fails({ canary, canaryMatch: [{ value: '1' }] }, /canaryMatch\[0\] needs exactly one .*got none/)
    await fails({ canary, canaryMatch: [{ header: 'x' }] }, /canaryMatch\[0\]\.value is required/)
    await fails({ canaryMatch: [{ header: 'x', value: '1' }] }, /routes\[0\]\.canaryMatch .*no canary/)
  })
})
