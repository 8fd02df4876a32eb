/**
 * The proxy registry with other replicas' records (etcd, control/proxy-book.ts): another replica's
 * proxy is live as its record says and is counted by sync(); this replica's proxies are written when
 * they register, ack and change liveness; one that moved to another replica is that replica's.
 */
import { describe, expect, it } from 'vitest'
import { ProxyRegistry } from '../../control/proxies.ts'
import type { ProxyRecord } from '../../control/state-schema.ts'

const route = {
  name: 'shop',
  stable: { url: 'http://s', release: 'v1' },
  canary: { url: 'http://c', release: 'v2' },
  shadow: null,
  canaryWeight: 0,
}
const shop = { name: 'shop', stable: route.stable, canaryUpstream: route.canary }
const record = (over: Partial<ProxyRecord> = {}): ProxyRecord => ({
  id: 'far',
  who: 'edge',
  routes: [route],
  appliedRevision: 4,
  lastError: null,
  registeredAt: 1,
  replica: 'other',
  live: true,
  ...over,
})

function registry() {
  const r = new ProxyRegistry(1000)
  const written: string[] = []
  r.changed = (p) => written.push(`${p.id} ${p.appliedRevision} ${p.live}`)
  return { r, written }
}

describe('proxy registry with etcd records', () => {
  it("counts another replica's live proxies, and not those its replica calls not live", () => {
    const { r, written } = registry()
    expect(r.takeRecord('far', record(), 'me')).toBe(true)
    r.register('near', [route], 4, 'edge', 0)
    expect(r.sync(shop as never, 4, 0)).toMatchObject({ live: 2, applied: 2 })
    r.takeRecord('far', record({ live: false }), 'me')
    expect(r.sync(shop as never, 4, 0)).toMatchObject({ live: 1, applied: 1 })
    // Only this replica's own proxy was written; the other's record is not echoed back.
    expect(written).toEqual(['near 4 true'])
    // Its own records coming back from etcd change nothing.
    expect(r.takeRecord('near', record({ id: 'near', replica: 'me', appliedRevision: 1 }), 'me')).toBe(false)
    expect(r.get('near')?.appliedRevision).toBe(4)
  })

  it('a proxy another replica now writes has moved there; its record gone, it is gone', () => {
    const { r } = registry()
    r.register('p', [route], 1, 'edge', 0)
    r.takeRecord('p', record({ id: 'p', replica: 'other', appliedRevision: 5 }), 'me')
    expect(r.get('p')).toMatchObject({ replica: 'other', appliedRevision: 5 })
    expect(r.own()).toEqual([])
    expect(r.takeRecord('p', null, 'me')).toBe(true)
    expect(r.get('p')).toBeUndefined()
    // A record going away never removes a proxy of this replica.
    r.register('q', [route], 1, 'edge', 0)
    expect(r.takeRecord('q', null, 'me')).toBe(false)
    expect(r.get('q')).toBeDefined()
  })

  it('writes this replica’s proxy again when it stops and starts being live, and on ack', () => {
    const { r, written } = registry()
    const p = r.register('p', [route], 1, 'edge', 0)
    r.sweep(500)
    r.sweep(2000)
    p.lastSeen = 2500
    r.sweep(2600)
    p.appliedRevision = 2
    r.acked(p)
    expect(written).toEqual(['p 1 true', 'p 1 false', 'p 1 true', 'p 2 true'])
  })
})
