/**
 * The smoke check runs outside the engine's queue (in process, real store in a temp dir, a smoke runner
 * the test answers): changes decided while it runs go first, and its result is then dropped, logged.
 */
import pino from 'pino'
import { describe, expect, it } from 'vitest'
import type { Plan } from '../../control/rollout.ts'
import type { SmokeResult } from '../../control/smoke.ts'
import { StoreWriteError } from '../../control/store.ts'
import { engineBed } from '../helpers/engine.ts'

const operator = { name: 'alice', role: 'operator' as const }

async function bed() {
  const lines: Record<string, unknown>[] = []
  const log = pino({ level: 'info' }, { write: (l: string) => lines.push(JSON.parse(l)) })
  /** Smoke checks asked for and not answered yet. */
  const asked: ((r: SmokeResult) => void)[] = []
  let wake: (() => void) | null = null
  const { store, engine, clock, link, proxies, events } = await engineBed({
    log,
    judge: () => ({ result: 'pass', reason: '' }),
    smoke: () =>
      new Promise((resolve) => {
        asked.push(resolve)
        wake?.()
      }),
  })
  const smokeAsked = () =>
    asked.length > 0 ? Promise.resolve() : new Promise<void>((resolve) => (wake = resolve))
  const answer = (r: SmokeResult) => asked.shift()!(r)
  const dropped = () => lines.filter((l) => l.msg === 'smoke result dropped')
  const done = async () => {
    events.close()
    await store.close()
  }
  return { engine, store, link, clock, proxies, smokeAsked, answer, dropped, done }
}

const plan: Plan = {
  mode: 'canary',
  steps: [
    { weight: 10, pause: 0 },
    { weight: 50, pause: null },
  ],
  analysis: { enabled: false },
  smoke: { url: 'http://c/smoke', requests: 1, expectStatus: [200], timeoutMs: 1000 },
}

describe('smoke checks outside the queue', () => {
  it('an abort during the check at start wins: the start is refused, nothing started', async () => {
    const b = await bed()
    const starting = b.engine.startRollout('shop', plan, operator, null)
    await b.smokeAsked()
    const aborted = await b.engine.act('shop', { type: 'abort', reason: 'no' }, operator, null)
    expect([aborted.weights.canary, aborted.rollout]).toEqual([0, null])
    b.answer({ ok: true })
    await expect(starting).rejects.toMatchObject({ code: 'no_rollout' })
    expect(b.engine.route('shop')).toMatchObject({ canary: 0, rollout: null })
    expect(b.dropped()).toHaveLength(1)
    expect(b.store.audit({ limit: 10, route: 'shop' }).entries.map((e) => e.action)).toEqual([
      'route-register',
    ])
    await b.done()
  })

  it('a pause during the clock’s check before step 2 wins; a failed result then aborts nothing', async () => {
    const b = await bed()
    const starting = b.engine.startRollout('shop', plan, operator, null)
    await b.smokeAsked()
    b.answer({ ok: true })
    expect((await starting).weights.canary).toBe(10)
    b.link.ack(b.proxies.get('p')!, { revision: b.engine.state.revision, error: null })
    await b.smokeAsked()
    const paused = await b.engine.act('shop', { type: 'pause', reason: 'hold on' }, operator, null)
    expect(paused).toMatchObject({ weights: { canary: 10 }, rollout: { phase: 'paused', step: 1 } })
    b.answer({ ok: false, reason: 'status 500' })
    await b.engine.idle()
    expect(b.dropped()).toMatchObject([{ route: 'shop', step: 2, smoke: 'failed' }])
    expect(b.engine.route('shop')).toMatchObject({ canary: 10, rollout: { phase: 'paused', step: 0 } })
    await b.done()
  })

  it('a check whose result cannot be saved (a full disk) is spent: the next tick asks a new one', async () => {
    const b = await bed()
    const starting = b.engine.startRollout('shop', plan, operator, null)
    await b.smokeAsked()
    b.answer({ ok: true })
    await starting
    b.link.ack(b.proxies.get('p')!, { revision: b.engine.state.revision, error: null })
    await b.smokeAsked()
    // The raise to step 2 fails to save once, as on a full disk.
    const commit = b.store.commit.bind(b.store)
    b.store.commit = async () => {
      b.store.commit = commit
      throw new StoreWriteError(Object.assign(new Error('no space'), { code: 'ENOSPC' }))
    }
    b.answer({ ok: true })
    await b.engine.idle()
    expect(b.engine.route('shop')).toMatchObject({ canary: 10, rollout: { step: 0 } })
    b.clock.tick()
    await b.smokeAsked()
    b.answer({ ok: true })
    await b.engine.idle()
    expect(b.engine.route('shop')).toMatchObject({ canary: 50, rollout: { step: 1 } })
    await b.done()
  })

  it('an operator promote waits for its own check and answers with the raise', async () => {
    const b = await bed()
    const plan2: Plan = { ...plan, steps: [{ weight: 10, pause: null }, ...plan.steps.slice(1)] }
    const starting = b.engine.startRollout('shop', plan2, operator, null)
    await b.smokeAsked()
    b.answer({ ok: true })
    await starting
    const promoting = b.engine.act('shop', { type: 'promote', full: false }, operator, null)
    await b.smokeAsked()
    // The queue is free meanwhile.
    expect(await b.engine.queue(async () => 'ran')).toBe('ran')
    b.answer({ ok: true })
    expect(await promoting).toMatchObject({ weights: { canary: 50 }, rollout: { step: 2 } })
    expect(b.dropped()).toHaveLength(0)
    await b.done()
  })
})
