/** The pure parts of the proxy's control link: backoff schedule, weights over a config, reports. */
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { afterAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import type { ProxyConfig } from '../../config/types.ts'
import { ERROR } from '../../proxy/analysis/window.ts'
import { Backoff } from '../../proxy/control/backoff.ts'
import { CACHE_FILE, openKnownGood } from '../../proxy/control/cache.ts'
import { reportOf } from '../../proxy/control/link.ts'
import { announcedRoutes, parseRevision, sameWeights, withWeights } from '../../proxy/control/weights.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { compile } from '../../proxy/routes/compile.ts'
import { RouteStates } from '../../proxy/routes/states.ts'
import { UpstreamPools } from '../../proxy/upstream/pools.ts'
import { paired } from '../helpers/pairs.ts'

/** Any release pair: parseRevision checks its shape, not whose it is. */
const P = { stable: { url: 'http://127.0.0.1:1', release: 'v1' }, canary: null }

const pools = new UpstreamPools()
afterAll(() => pools.destroyAll())

function config(): ProxyConfig {
  const result = validateConfig({
    routes: [
      {
        name: 'api',
        stable: { url: 'http://127.0.0.1:1', release: 'v1' },
        canary: { url: 'http://127.0.0.1:2', release: 'v2' },
        canaryWeight: 10,
      },
      { name: 'constructor', match: { pathPrefix: '/c' }, stable: { url: 'http://127.0.0.1:3' } },
    ],
  })
  if (!result.ok) throw new Error(JSON.stringify(result.issues))
  return result.config
}

const w = (canary: number, version = 1) => ({ version, canary })

describe('backoff', () => {
  it('doubles from 100 ms to the 5 s cap, and starts over on reset', () => {
    const b = new Backoff(100, 5_000, () => 0.5)
    const steps = Array.from({ length: 9 }, () => b.next())
    expect(steps).toEqual([100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000])
    b.reset()
    expect(b.next()).toBe(100)
  })

  it('jitters each delay ±50% around its step, never above the cap', () => {
    const low = new Backoff(100, 5_000, () => 0)
    expect(Array.from({ length: 8 }, () => low.next())).toEqual([50, 100, 200, 400, 800, 1600, 2500, 2500])
    const high = new Backoff(100, 5_000, () => 0.999999)
    expect(Array.from({ length: 8 }, () => high.next())).toEqual([
      150, 300, 600, 1200, 2400, 4800, 5000, 5000,
    ])
    let seed = 7
    const random = () => ((seed = (seed * 48271) % 2147483647) - 1) / 2147483646
    for (let run = 0; run < 200; run++) {
      const b = new Backoff(100, 5_000, random)
      for (let i = 0; i < 10; i++) {
        const step = Math.min(5_000, 100 * 2 ** i)
        const d = b.next()
        expect(d).toBeGreaterThanOrEqual(step * 0.5)
        expect(d).toBeLessThanOrEqual(Math.min(5_000, step * 1.5))
      }
    }
  })
})

describe('control weights over the file config', () => {
  const base = config()

  it('announces every route with its upstreams, releases and file weight', () => {
    expect(announcedRoutes(base)).toEqual([
      {
        name: 'api',
        stable: { url: 'http://127.0.0.1:1', release: 'v1' },
        canary: { url: 'http://127.0.0.1:2', release: 'v2' },
        shadow: null,
        canaryWeight: 10,
      },
      {
        name: 'constructor',
        stable: { url: 'http://127.0.0.1:3', release: 'unknown' },
        canary: null,
        shadow: null,
        canaryWeight: 0,
      },
    ])
  })

  it('lays control weights over the routes it names; others keep the file weight', () => {
    const next = withWeights(base, paired(base, { api: w(40), other: w(90) }))
    expect(next.ok).toBe(true)
    if (!next.ok) return
    expect(next.config.routes.map((r) => r.canaryWeight)).toEqual([40, 0])
    expect(next.config.routes[1]).toBe(base.routes[1])
    expect(Object.isFrozen(next.config) && Object.isFrozen(next.config.routes[0])).toBe(true)
    expect(base.routes[0]!.canaryWeight).toBe(10)
    expect(sameWeights(next.config, base)).toBe(false)
  })

  it('hands back the same config when nothing changes', () => {
    expect(withWeights(base, null)).toEqual({ ok: true, config: base })
    const same = withWeights(base, paired(base, { api: w(10), constructor: w(0) }))
    expect(same.ok && same.config).toBe(base)
  })

  it('refuses, whole, a weight it cannot apply, naming the field and the fix', () => {
    // "constructor" has no canary: an own key is needed, not Object.prototype.constructor.
    const bad = withWeights(base, paired(base, { api: w(50), constructor: w(20) }))
    expect(bad).toEqual({
      ok: false,
      issues: [
        {
          path: 'routes[1].canary',
          message: expect.stringMatching(
            /control gives route "constructor" canary weight 20; add canary\.url/,
          ),
        },
      ],
    })
    const range = withWeights(base, paired(base, { api: w(101) }))
    expect(range.ok === false && range.issues[0]).toMatchObject({
      path: 'routes[0].canaryWeight',
      message: expect.stringMatching(/101.*0 to 100/),
    })
    expect(withWeights(base, paired(base, { api: w(2.5) })).ok).toBe(false)
    expect(withWeights(base, paired(base, {})).ok).toBe(true)
  })

  it('reads a revision, or says what is wrong with it', () => {
    expect(parseRevision({ revision: 3, routes: { api: { version: 2, pair: P, canary: 5 } } })).toEqual({
      revision: 3,
      routes: { api: { version: 2, pair: P, canary: 5 } },
    })
    expect(parseRevision('x')).toMatch(/^\(top level\) must be an object \(got "x"\)$/)
    expect(parseRevision(null)).toMatch(/^revision is required/)
    expect(parseRevision({ revision: -1, routes: {} })).toMatch(/revision/)
    expect(parseRevision({ revision: 1 })).toMatch(/routes/)
    expect(parseRevision({ revision: 1, routes: { api: { canary: '5' } } })).toMatch(/routes\.api/)
    // Weights without the release pair they are for (an older control) are not applied to any release.
    expect(parseRevision({ revision: 1, routes: { api: { version: 1, canary: 5 } } })).toMatch(
      /routes\.api\.pair is required: .*upgrade control first/,
    )
    expect(
      parseRevision({
        revision: 1,
        routes: { api: { version: 1, canary: 5, pair: { stable: { url: 'x' } } } },
      }),
    ).toMatch(/routes\.api\.pair/)
  })
})

describe('control shadow percent over the file config', () => {
  const result = validateConfig({
    routes: [
      {
        name: 'shop',
        stable: { url: 'http://127.0.0.1:1', release: 'v1' },
        shadow: { url: 'http://127.0.0.1:4', release: 'v3', percent: 25 },
      },
      { name: 'plain', match: { pathPrefix: '/p' }, stable: { url: 'http://127.0.0.1:3' } },
    ],
  })
  if (!result.ok) throw new Error(JSON.stringify(result.issues))
  const base = result.config
  const s = (shadow: number, canary = 0) => ({ version: 2, canary, shadow })

  it('announces the shadow upstream', () => {
    expect(announcedRoutes(base).map((r) => r.shadow)).toEqual([
      { url: 'http://127.0.0.1:4', release: 'v3' },
      null,
    ])
  })

  it("lays the percent over the route's shadow, keeping the rest of it; absent keeps the file's", () => {
    const next = withWeights(base, paired(base, { shop: s(0) }))
    expect(next.ok).toBe(true)
    if (!next.ok) return
    const shadow = next.config.routes[0]!.shadow!
    expect(shadow.percent).toBe(0)
    expect({ ...shadow, percent: 25 }).toEqual(base.routes[0]!.shadow)
    expect(Object.isFrozen(shadow)).toBe(true)
    expect(base.routes[0]!.shadow!.percent).toBe(25)
    expect(sameWeights(next.config, base)).toBe(false)
    const back = withWeights(next.config, paired(next.config, { shop: s(100) }))
    expect(back.ok && back.config.routes[0]!.shadow!.percent).toBe(100)
    // No shadow percent from control (an older control, or none set yet): the file's 25 stays.
    const same = withWeights(base, paired(base, { shop: w(0), plain: w(0) }))
    expect(same.ok && same.config).toBe(base)
    expect(withWeights(base, paired(base, { shop: s(25) }))).toEqual({ ok: true, config: base })
  })

  it('ignores a percent for a route with no shadow here; refuses one out of range, whole', () => {
    const none = withWeights(base, paired(base, { plain: s(50) }))
    expect(none.ok && none.config).toBe(base)
    const bad = withWeights(base, paired(base, { shop: s(101), plain: s(0) }))
    expect(bad).toEqual({
      ok: false,
      issues: [
        {
          path: 'routes[0].shadow.percent',
          message: expect.stringMatching(/control sent 101 for route "shop".*0 to 100/),
        },
      ],
    })
    expect(withWeights(base, paired(base, { shop: s(-1) })).ok).toBe(false)
  })

  it('reads a revision with or without shadow percents', () => {
    expect(
      parseRevision({ revision: 3, routes: { shop: { version: 2, pair: P, canary: 0, shadow: 10 } } }),
    ).toEqual({
      revision: 3,
      routes: { shop: { version: 2, pair: P, canary: 0, shadow: 10 } },
    })
    const old = parseRevision({ revision: 3, routes: { shop: { version: 2, pair: P, canary: 0 } } })
    expect(typeof old !== 'string' && Object.hasOwn(old.routes.shop!, 'shadow')).toBe(false)
    expect(
      parseRevision({ revision: 3, routes: { shop: { version: 2, pair: P, canary: 0, shadow: '5' } } }),
    ).toMatch(/routes\.shop\.shadow must be a number/)
  })
})

describe('report', () => {
  it('adds up each version over the seconds asked for', () => {
    const table = compile(
      1,
      config(),
      new Map(),
      new RouteStates({ metrics: new ProxyMetrics(), pools, log: pino({ level: 'silent' }) }),
    )
    const [api, other] = table.routes
    api!.stable.state.window.record(5_100, 1, 0)
    api!.stable.state.window.record(6_900, 1, ERROR)
    api!.stable.state.window.record(7_000, 1, 0) // a later second: not in this report
    api!.canary!.state.window.record(6_000, 100, 0)
    // Slots of 250 ms: 20..27 are the seconds 5 and 6.
    const report = reportOf(table, 4, 20, 27)
    expect(report.revision).toBe(4)
    expect(report.intervalMs).toBe(2_000)
    const stable = report.routes.api!.stable
    expect([stable.requests, stable.errors]).toEqual([2, 1])
    expect(stable.latency.reduce((a, b) => a + b, 0)).toBe(2)
    expect(stable.latency.at(-1)).toBe(2) // both in the bucket of 1 ms, trailing zeros cut
    expect(report.routes.api!.canary!.requests).toBe(1)
    expect(report.routes[other!.name]).toEqual({
      stable: { requests: 0, errors: 0, failed: 0, harmed: 0, saved: 0, latency: [] },
      canary: null,
    })
  })
})

describe('last-known-good file', () => {
  const silent = pino({ level: 'silent' })

  it('saves whole and reads back what fits; ignores what does not', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'veer-unit-')), 'a', 'b')
    const base = config()
    const empty = await openKnownGood(dir, base, silent)
    if (typeof empty === 'string') throw new Error(empty)
    expect(empty).toMatchObject({ known: null, config: base })
    await Promise.all([
      empty.cache.save({ revision: 7, routes: paired(base, { api: w(20) }) }),
      empty.cache.save({ revision: 8, routes: paired(base, { api: w(30, 2) }) }),
    ])
    expect(readdirSync(dir)).toEqual([CACHE_FILE]) // the temp file was renamed, not left
    expect(JSON.parse(readFileSync(join(dir, CACHE_FILE), 'utf8'))).toMatchObject({ revision: 8 })
    const again = await openKnownGood(dir, base, silent)
    if (typeof again === 'string') throw new Error(again)
    expect(again.known).toEqual({ revision: 8, routes: paired(base, { api: w(30, 2) }) })
    expect(again.config.routes[0]!.canaryWeight).toBe(30)

    await again.cache.save({ revision: 9, routes: paired(base, { constructor: w(5) }) }) // no canary there
    expect(await openKnownGood(dir, base, silent)).toMatchObject({ known: null, config: base })
    writeFileSync(join(dir, CACHE_FILE), '{"revision": 3, "rou')
    expect(await openKnownGood(dir, base, silent)).toMatchObject({ known: null, config: base })
  })

  it('names a state dir it cannot create', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'veer-unit-')), 'file')
    writeFileSync(file, '')
    expect(await openKnownGood(join(file, 'sub'), config(), silent)).toMatch(/cannot create .*file\/sub/)
  })
})
