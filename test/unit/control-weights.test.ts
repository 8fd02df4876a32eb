/** proxy/control/weights.ts after promote-shadow: control's `canaryFromShadow` makes a route's shadow its canary. */
import pino from 'pino'
import { afterAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import type { ProxyConfig } from '../../config/types.ts'
import { parseRevision, sameWeights, withWeights } from '../../proxy/control/weights.ts'
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
        name: 'shop',
        stable: { url: 'http://127.0.0.1:1', release: 'v1' },
        shadow: { url: 'http://127.0.0.1:4', release: 'v3', percent: 25, connections: 2 },
        connections: 7,
        timeouts: { headers: '9s' },
      },
      {
        name: 'both',
        match: { pathPrefix: '/b' },
        stable: { url: 'http://127.0.0.1:1', release: 'v1' },
        canary: { url: 'http://127.0.0.1:2', release: 'v2' },
        shadow: { url: 'http://127.0.0.1:5', release: 'v4' },
        canaryWeight: 10,
      },
      { name: 'plain', match: { pathPrefix: '/p' }, stable: { url: 'http://127.0.0.1:3' } },
    ],
  })
  if (!result.ok) throw new Error(JSON.stringify(result.issues))
  return result.config
}

const promoted = (canary: number, shadow?: number) => ({
  version: 3,
  canary,
  canaryFromShadow: true as const,
  ...(shadow === undefined ? {} : { shadow }),
})

describe('canaryFromShadow over the file config', () => {
  const base = config()

  it("serves the shadow's url and release as the canary at control's weight, mirroring nothing", () => {
    const next = withWeights(base, paired(base, { shop: promoted(50, 25) }))
    expect(next.ok).toBe(true)
    if (!next.ok) return
    const shop = next.config.routes[0]!
    expect(shop.canary).toEqual({ url: 'http://127.0.0.1:4', release: 'v3' })
    expect(shop.canaryWeight).toBe(50)
    // Mirroring stops whatever percent control or the file says; the rest of the shadow is kept.
    expect(shop.shadow!.percent).toBe(0)
    expect({ ...shop.shadow!, percent: 25 }).toEqual(base.routes[0]!.shadow)
    // Served as a canary: the route's pool and timeouts, not the shadow's.
    expect(shop.connections).toBe(7)
    expect(shop.timeouts.headers).toBe(9000)
    expect(Object.isFrozen(shop)).toBe(true)
    expect(Object.isFrozen(shop.canary)).toBe(true)
    expect(next.config.routes.slice(1)).toEqual(base.routes.slice(1))
    expect(base.routes[0]!.canary).toBeUndefined()
    expect(sameWeights(next.config, base)).toBe(false)

    const table = compile(
      1,
      next.config,
      new Map(),
      new RouteStates({ metrics: new ProxyMetrics(), pools, log: pino({ level: 'silent' }) }),
    )
    const route = table.routes[0]!
    expect(route.canary).toMatchObject({ version: 'canary', release: 'v3' })
    expect(route.canary!.upstream.origin).toBe('http://127.0.0.1:4')
    expect(route.canary!.upstream).not.toBe(route.shadow!.upstream)
    expect(route.threshold).toBeGreaterThan(0)
    expect(route.shadow!.threshold).toBe(0)
  })

  it('replaces a file canary, even at weight 0, and is a different table from the file at 0', () => {
    const next = withWeights(base, paired(base, { both: promoted(0) }))
    expect(next.ok).toBe(true)
    if (!next.ok) return
    const both = next.config.routes[1]!
    expect(both.canary).toEqual({ url: 'http://127.0.0.1:5', release: 'v4' })
    expect([both.canaryWeight, both.shadow!.percent]).toEqual([0, 0])
    const plain = withWeights(base, paired(base, { both: { version: 3, canary: 0, shadow: 0 } }))
    expect(plain.ok && sameWeights(next.config, plain.config)).toBe(false)
    // Applied again on top of itself it changes nothing.
    const again = withWeights(next.config, paired(next.config, { both: promoted(0) }))
    expect(again.ok && again.config).toBe(next.config)
  })

  it('refuses it, whole, for a route with no shadow here, and checks the weight', () => {
    const bad = withWeights(base, paired(base, { shop: promoted(20), plain: promoted(0) }))
    expect(bad).toEqual({
      ok: false,
      issues: [
        {
          path: 'routes[2].shadow',
          message: expect.stringMatching(
            /is not set, but control serves route "plain"'s shadow as its canary/,
          ),
        },
      ],
    })
    expect(withWeights(base, paired(base, { shop: promoted(101) })).ok).toBe(false)
    expect(withWeights(base, paired(base, { shop: promoted(2.5) })).ok).toBe(false)
  })

  it('reads the flag in a revision; anything but true is refused', () => {
    expect(parseRevision({ revision: 4, routes: { shop: { ...promoted(10, 0), pair: P } } })).toEqual({
      revision: 4,
      routes: { shop: { version: 3, pair: P, canary: 10, shadow: 0, canaryFromShadow: true } },
    })
    const old = parseRevision({ revision: 4, routes: { shop: { version: 3, pair: P, canary: 10 } } })
    expect(typeof old !== 'string' && Object.hasOwn(old.routes.shop!, 'canaryFromShadow')).toBe(false)
    expect(
      parseRevision({
        revision: 4,
        routes: { shop: { version: 3, pair: P, canary: 0, canaryFromShadow: 'yes' } },
      }),
    ).toMatch(/routes\.shop\.canaryFromShadow must be true/)
    expect(
      parseRevision({
        revision: 4,
        routes: { shop: { version: 3, pair: P, canary: 0, canaryFromShadow: false } },
      }),
    ).toMatch(/canaryFromShadow/)
  })
})
