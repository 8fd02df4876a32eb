/**
 * Passive health of an upstream as droppable traffic (the shadow) sees it: ejected after consecutive
 * connect failures, one probe once the ejection runs out, cleared by a connection, ejected again at
 * once by a failed probe; and the limiter that writes a repeating line at most once a second.
 */
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { LogLimiter } from '../../proxy/log.ts'
import { Upstream } from '../../proxy/upstream/pools.ts'

const timeouts = { connect: 100, headers: 100, body: 100, idle: 100 }
const upstreams: Upstream[] = []
const make = () => {
  const u = new Upstream(
    { url: 'http://127.0.0.1:1' },
    { connections: 1, maxPending: 0, streams: 1, timeouts },
    undefined,
  )
  upstreams.push(u)
  return u
}
afterAll(async () => {
  await Promise.all(upstreams.map((u) => u.pool.destroy()))
})

describe('Upstream.admit (shadow passive health)', () => {
  beforeEach(() => {
    vi.useFakeTimers()
    vi.setSystemTime(1_000_000)
  })
  afterEach(() => vi.useRealTimers())

  it('admits all until ejectAfter consecutive connect failures, then none until ejectFor has passed', () => {
    const u = make()
    u.connectFailed(3, 1000)
    u.connectFailed(3, 1000)
    expect(u.admit()).toBe(true)
    u.connectSucceeded() // a connection breaks the streak
    u.connectFailed(3, 1000)
    u.connectFailed(3, 1000)
    expect(u.admit()).toBe(true)
    u.connectFailed(3, 1000)
    for (let i = 0; i < 10; i++) expect(u.admit()).toBe(false)
    vi.setSystemTime(1_000_999)
    expect(u.admit()).toBe(false)
  })

  it('lets one probe through after ejectFor; a connection clears the ejection', () => {
    const u = make()
    for (let i = 0; i < 3; i++) u.connectFailed(3, 1000)
    vi.setSystemTime(1_001_000)
    expect(u.admit()).toBe(true)
    expect(u.probing).toBe(true)
    for (let i = 0; i < 5; i++) expect(u.admit()).toBe(false)
    u.connectSucceeded()
    expect(u.failures).toBe(0)
    for (let i = 0; i < 5; i++) expect(u.admit()).toBe(true)
    // Healthy again: it takes ejectAfter failures to eject it anew.
    u.connectFailed(3, 1000)
    expect(u.admit()).toBe(true)
  })

  it('ejects again at once when the probe fails to connect', () => {
    const u = make()
    for (let i = 0; i < 3; i++) u.connectFailed(3, 1000)
    vi.setSystemTime(1_001_000)
    expect(u.admit()).toBe(true)
    u.connectFailed(3, 1000)
    expect(u.probing).toBe(false)
    expect(u.admit()).toBe(false)
    vi.setSystemTime(1_001_999)
    expect(u.admit()).toBe(false)
    vi.setSystemTime(1_002_000)
    expect(u.admit()).toBe(true)
  })

  it('lets the next probe go when one ends telling neither (probing = false)', () => {
    const u = make()
    for (let i = 0; i < 3; i++) u.connectFailed(3, 1000)
    vi.setSystemTime(1_001_000)
    expect(u.admit()).toBe(true)
    expect(u.admit()).toBe(false)
    u.probing = false
    expect(u.admit()).toBe(true)
    // Still at the threshold: the next failure ejects at once.
    u.connectFailed(3, 1000)
    expect(u.admit()).toBe(false)
  })
})

describe('LogLimiter', () => {
  it('passes one line per interval and tells how many were held back before it', () => {
    const l = new LogLimiter(1000)
    expect(l.take(0)).toBe(0)
    expect(l.take(1)).toBe(-1)
    expect(l.take(999)).toBe(-1)
    expect(l.take(1000)).toBe(2)
    expect(l.take(1500)).toBe(-1)
    expect(l.take(5000)).toBe(1)
    expect(l.take(6000)).toBe(0)
  })
})
