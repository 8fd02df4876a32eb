/**
 * The proxy registry with other replicas' records (etcd, control/proxy-book.ts): another replica's
 * proxy is live as its record says and is counted by sync(); a proxy with records from two replicas
 * (it moved) is counted once, by its live record with the newest applied revision; this replica's
 * proxies are written when they register, ack and change liveness.
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
const shop = { name: 'shop', stable: route.stable, canaryUpstream: route.canary } as never
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
    r.takeRecord(record(), 0)
    r.register('near', [route], 4, 'edge', 0)
    expect(r.sync(shop, 4, 0)).toMatchObject({ live: 2, applied: 2 })
    expect(r.counts(4, 0)).toEqual({ known: 2, live: 2, inSync: 2 })
    r.takeRecord(record({ live: false }), 0)
    expect(r.sync(shop, 4, 0)).toMatchObject({ live: 1, applied: 1 })
    // Only this replica's own proxy was written; the other's record is not echoed back.
    expect(written).toEqual(['near 4 true'])
    expect(r.list(0).map((p) => [p.id, p.replica])).toEqual([
      ['near', null],
      ['far', 'other'],
    ])
    expect(r.dropRecord('far', 'other')).toBe(true)
    expect(r.dropRecord('far', 'other')).toBe(false)
    expect(r.counts(4, 0)).toEqual({ known: 1, live: 1, inSync: 1 })
  })

  it('a proxy that moved is counted once: by its live record with the newest applied revision', () => {
    const { r } = registry()
    // It was here (revision 3 applied), then moved to B, which has seen it apply 5.
    r.register('p', [route], 3, 'edge', 0)
    r.takeRecord(record({ id: 'p', replica: 'B', appliedRevision: 5 }), 0)
    expect(r.counts(5, 0)).toEqual({ known: 1, live: 1, inSync: 1 })
    expect(r.best('p', 0)).toMatchObject({ replica: 'B', appliedRevision: 5 })
    // This replica's own record is still its own: it goes not live here, and is written so.
    expect(r.own().map((p) => p.id)).toEqual(['p'])
    // B says it is gone (not live) while this replica still hears from it: this one stands for it.
    r.takeRecord(record({ id: 'p', replica: 'B', appliedRevision: 5, live: false }), 0)
    expect(r.best('p', 0)).toMatchObject({ replica: null, appliedRevision: 3 })
    expect(r.sync(shop, 5, 0)).toMatchObject({ live: 1, applied: 0, lagging: ['p'] })
    // Not live anywhere: still one proxy, not live.
    expect(r.counts(5, 5000)).toEqual({ known: 1, live: 0, inSync: 0 })
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
