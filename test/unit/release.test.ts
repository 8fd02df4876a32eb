/**
 * Release identity (control/release.ts and the proxy's half in proxy/control/weights.ts): which
 * announcements are the route's pair, a change, or a stale config; hand-offs; and that a proxy never
 * lays control's weight on a release pair it was not set for.
 */
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import type { AnnouncedRoute, ReleasePair, RouteWeights, Upstream } from '../../config/wire.ts'
import { classify, isHandoff, type Releases, SUPERSEDED_KEPT, supersede } from '../../control/release.ts'
import { markChanged, otherReleases, withWeights } from '../../proxy/control/weights.ts'

const up = (release: string, port = 1): Upstream => ({ url: `http://127.0.0.1:${port}`, release })
const pair = (stable: Upstream, canary: Upstream | null): ReleasePair => ({ stable, canary })
const V1 = up('v1', 1)
const V2 = up('v2', 2)
const V3 = up('v3', 3)
const SH = up('s9', 9)

function held(p: ReleasePair, extra: Partial<Releases> = {}): Releases {
  return {
    stable: p.stable,
    canaryUpstream: p.canary,
    shadowUpstream: null,
    canaryFromShadow: false,
    superseded: [],
    ...extra,
  }
}

function announce(p: ReleasePair, extra: Partial<AnnouncedRoute> = {}): AnnouncedRoute {
  return { name: 'shop', stable: p.stable, canary: p.canary, shadow: null, canaryWeight: 0, ...extra }
}

describe('classify: how control takes an announcement of a route it knows', () => {
  const cases: [string, AnnouncedRoute, Releases, 'same' | 'change' | 'stale'][] = [
    ['the pair control holds', announce(pair(V1, V2)), held(pair(V1, V2)), 'same'],
    ['a new canary', announce(pair(V1, V3)), held(pair(V1, V2)), 'change'],
    ['a new stable', announce(pair(V3, V2)), held(pair(V1, V2)), 'change'],
    ['the canary removed', announce(pair(V1, null)), held(pair(V1, V2)), 'change'],
    ['a canary added', announce(pair(V1, V2)), held(pair(V1, null)), 'change'],
    ['same release id at another URL', announce(pair(V1, up('v2', 7))), held(pair(V1, V2)), 'change'],
    ['same URL, another release id', announce(pair(V1, up('v2b', 2))), held(pair(V1, V2)), 'change'],
    [
      'a pair control moved away from, on a restart: a stale config',
      announce(pair(V1, V2)),
      held(pair(V2, V3), { superseded: [pair(V1, V2)] }),
      'stale',
    ],
    [
      'a pair control moved away from, after a reload into it: going back on purpose',
      announce(pair(V1, V2), { changedFrom: pair(V2, V3) }),
      held(pair(V2, V3), { superseded: [pair(V1, V2)] }),
      'change',
    ],
    [
      'a reload that lands on the pair control holds',
      announce(pair(V2, V3), { changedFrom: pair(V1, V2) }),
      held(pair(V2, V3), { superseded: [pair(V1, V2)] }),
      'same',
    ],
    [
      'after promote-shadow, a proxy with that shadow serves it as the canary',
      announce(pair(V1, null), { shadow: SH }),
      held(pair(V1, SH), { shadowUpstream: SH, canaryFromShadow: true }),
      'same',
    ],
    [
      'after promote-shadow, a proxy with another shadow serves its file canary',
      announce(pair(V1, V2), { shadow: V3 }),
      held(pair(V1, SH), { shadowUpstream: SH, canaryFromShadow: true }),
      'change',
    ],
    [
      'after promote-shadow, the config names the promoted release as its canary',
      announce(pair(V1, SH), { shadow: null }),
      held(pair(V1, SH), { shadowUpstream: SH, canaryFromShadow: true }),
      'same',
    ],
  ]
  for (const [name, a, r, expected] of cases) it(name, () => expect(classify(a, r)).toBe(expected))
})

describe('hand-off and superseded pairs', () => {
  it('is a hand-off when the new stable was the canary', () => {
    expect(isHandoff(pair(V1, V2), pair(V2, V3))).toBe(true)
    expect(isHandoff(pair(V1, V2), pair(V2, null))).toBe(true)
    expect(isHandoff(pair(V1, V2), pair(V1, V3))).toBe(false)
    expect(isHandoff(pair(V1, null), pair(V2, null))).toBe(false)
    expect(isHandoff(null, pair(V2, null))).toBe(false)
  })

  it('keeps the pairs moved away from newest first, without repeats, bounded', () => {
    expect(supersede([], pair(V1, V2), pair(V2, V3))).toEqual([pair(V1, V2)])
    // Going back to a superseded pair takes it off the list; the pair left goes on top.
    expect(supersede([pair(V1, V2)], pair(V2, V3), pair(V1, V2))).toEqual([pair(V2, V3)])
    let list: ReleasePair[] = []
    for (let i = 0; i < 40; i++) list = supersede(list, pair(up(`s${i}`), null), pair(up(`s${i + 1}`), null))
    expect(list).toHaveLength(SUPERSEDED_KEPT)
    expect(list[0]!.stable.release).toBe('s39')
  })
})

describe('the proxy lays control weights only on the pair they are for', () => {
  const result = validateConfig({
    routes: [
      { name: 'shop', stable: { url: V2.url, release: 'v2' }, canary: { url: V3.url, release: 'v3' } },
      { name: 'web', match: { pathPrefix: '/w' }, stable: { url: V1.url, release: 'v1' } },
    ],
  })
  if (!result.ok) throw new Error(JSON.stringify(result.issues))
  const file = result.config
  const weights = (p: ReleasePair, canary: number): Record<string, RouteWeights> => ({
    shop: { version: 4, pair: p, canary },
  })

  it('after a release change in the file, 100% for the old pair is not applied: the file weight (0) serves', () => {
    const old = weights(pair(V1, V2), 100)
    const next = withWeights(file, old)
    expect(next.ok && next.config).toBe(file)
    expect(file.routes[0]!.canaryWeight).toBe(0)
    expect(otherReleases(file, old)).toEqual(['shop'])
  })

  it('applies the weight once control sends it for the pair the file serves', () => {
    const mine = weights(pair(V2, V3), 20)
    const next = withWeights(file, mine)
    expect(next.ok && next.config.routes[0]!.canaryWeight).toBe(20)
    expect(otherReleases(file, mine)).toEqual([])
  })

  it('marks the routes whose pair changed since control last heard from the proxy', () => {
    const before: AnnouncedRoute[] = [
      announce(pair(V1, V2)),
      { name: 'web', stable: V1, canary: null, shadow: null, canaryWeight: 0 },
    ]
    const now: AnnouncedRoute[] = [
      announce(pair(V2, V3), { canaryWeight: 0 }),
      { name: 'web', stable: V1, canary: null, shadow: null, canaryWeight: 5 },
    ]
    expect(markChanged(now, before).map((a) => a.changedFrom ?? null)).toEqual([pair(V1, V2), null])
    expect(markChanged(now, null)).toEqual(now)
  })
})
