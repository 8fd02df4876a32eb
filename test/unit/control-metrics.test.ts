/**
 * Control's metrics in process (a real store in a temp dir): decisions and rollbacks are counted from
 * what the store made durable, the rollout and proxy gauges are read from the state at the scrape, and
 * a rollback reaches the proxies with the weights (RouteWeights.rollback), which a proxy counts once.
 */
import pino from 'pino'
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import type { Verdict } from '../../control/judge.ts'
import { ControlMetrics } from '../../control/metrics.ts'
import { RollbackLedger } from '../../proxy/control/rollbacks.ts'
import { engineBed } from '../helpers/engine.ts'
import { parseMetrics as parse } from '../helpers/metrics.ts'
import { paired } from '../helpers/pairs.ts'

const log = pino({ level: 'silent' })
const operator = { name: 'alice', role: 'operator' as const }

describe('control metrics', () => {
  it('counts decisions by kind and rollbacks by reason, and shows phase, step, weight and proxies', async () => {
    let verdict: Verdict = { result: 'pass', reason: '' }
    const bed = await engineBed({ log, judge: () => verdict })
    const { engine, store, proxies, clock, link } = bed
    const metrics = new ControlMetrics()
    store.observer = metrics
    metrics.watchRoutes(() => engine.state, proxies, engine.now)
    const scrape = async () => parse(await metrics.registry.metrics())

    let m = await scrape()
    expect(m.get('veer_control_rollout_phase{route="shop",phase="none"}')).toBe(1)
    expect(m.get('veer_control_rollout_phase{route="shop",phase="progressing"}')).toBe(0)
    expect(m.get('veer_control_rollout_step{route="shop"}')).toBe(0)
    // The proxy applied the registration's revision: it is live and in sync.
    expect(m.get('veer_control_proxies_known')).toBe(1)
    expect(m.get('veer_control_proxies_live')).toBe(1)

    await engine.startRollout(
      'shop',
      {
        mode: 'canary',
        steps: [
          { weight: 10, pause: null },
          { weight: 100, pause: null },
        ],
        analysis: { enabled: true },
      },
      operator,
      null,
    )
    m = await scrape()
    expect(m.get('veer_control_decisions_total{kind="rollout-start"}')).toBe(1)
    expect(m.get('veer_control_rollout_phase{route="shop",phase="progressing"}')).toBe(1)
    expect(m.get('veer_control_rollout_phase{route="shop",phase="none"}')).toBe(0)
    expect(m.get('veer_control_rollout_step{route="shop"}')).toBe(1)
    expect(m.get('veer_control_rollout_steps{route="shop"}')).toBe(2)
    expect(m.get('veer_control_canary_weight{route="shop"}')).toBe(10)
    // The proxy has not acked the rollout's revision yet.
    expect(m.get('veer_control_proxies_in_sync')).toBe(0)
    expect(m.get('veer_control_audit_write_seconds_count')).toBeGreaterThanOrEqual(1)
    expect(link.weightsFor('p').routes.shop!.rollback).toBeUndefined()

    link.ack(proxies.get('p')!, { revision: engine.state.revision, error: null })
    verdict = { result: 'fail', reason: 'canary latency p95 worse', check: 'latency-p95' }
    clock.tick()
    await engine.idle()
    await engine.idle()
    m = await scrape()
    expect(m.get('veer_rollbacks_total{route="shop",reason="latency-p95"}')).toBe(1)
    expect(m.get('veer_control_decisions_total{kind="rollout-abort"}')).toBe(1)
    expect(m.get('veer_control_rollout_phase{route="shop",phase="aborted"}')).toBe(1)
    expect(m.get('veer_control_canary_weight{route="shop"}')).toBe(0)
    expect(m.get('veer_control_proxies_in_sync')).toBe(0)
    expect(store.audit({ limit: 1, route: 'shop' }).entries[0]).toMatchObject({ rollback: 'latency-p95' })
    // The proxies are told why, for as long as the rollback is the route's last change.
    const sent = link.weightsFor('p').routes.shop!
    expect(sent.rollback).toEqual({ reason: 'latency-p95' })
    await engine.setWeight('shop', 5, undefined, operator, null)
    expect(link.weightsFor('p').routes.shop!.rollback).toBeUndefined()
    m = await scrape()
    expect(m.get('veer_control_decisions_total{kind="set-weight"}')).toBe(1)

    bed.events.close()
    await store.close()
  })
})

describe('the proxy counts control rollbacks once', () => {
  const result = validateConfig({
    routes: [
      {
        name: 'shop',
        stable: { url: 'http://127.0.0.1:1', release: 'v1' },
        canary: { url: 'http://127.0.0.1:2', release: 'v2' },
      },
    ],
  })
  if (!result.ok) throw new Error(JSON.stringify(result.issues))
  const config = result.config
  const unfused = () => false
  const rolledBack = (version: number, reason = 'errors') =>
    paired(config, { shop: { version, canary: 0, rollback: { reason } } })

  it('per route version, across re-deliveries, after the first weights this process took', () => {
    const ledger = new RollbackLedger(null)
    // The first answer (a fresh proxy): an old rollback is noted, not counted.
    expect(ledger.take(config, rolledBack(3), unfused)).toEqual([])
    expect(ledger.take(config, paired(config, { shop: { version: 4, canary: 10 } }), unfused)).toEqual([])
    expect(ledger.take(config, rolledBack(5), unfused)).toEqual([{ route: 'shop', reason: 'errors' }])
    // The same weights again (a reconnect, another route's change): counted already.
    expect(ledger.take(config, rolledBack(5), unfused)).toEqual([])
    expect(ledger.take(config, rolledBack(7, 'fuse'), unfused)).toEqual([{ route: 'shop', reason: 'fuse' }])
  })

  it('not from the last-known-good file, not when its own fuse counted it, not for another release pair', () => {
    const ledger = new RollbackLedger(rolledBack(3))
    expect(ledger.take(config, rolledBack(3), unfused)).toEqual([])
    expect(ledger.take(config, rolledBack(4, 'fuse'), () => true)).toEqual([])
    const other = {
      shop: { ...rolledBack(5).shop!, pair: { stable: { url: 'http://x', release: 'v0' }, canary: null } },
    }
    expect(ledger.take(config, other, unfused)).toEqual([])
    expect(ledger.take(config, rolledBack(6), unfused)).toEqual([{ route: 'shop', reason: 'errors' }])
  })
})
