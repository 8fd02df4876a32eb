/**
 * The engine's analysis seam (control/judge.ts), in process with a real store in a temp dir: a `fail`
 * verdict rolls back at once and the audit says which check failed; `inconclusive` at the end of a
 * pause holds the rollout paused; with analysis disabled the judge is never asked.
 */
import pino from 'pino'
import { describe, expect, it } from 'vitest'
import type { Judge, Verdict } from '../../control/judge.ts'
import type { Plan } from '../../control/rollout.ts'
import { engineBed } from '../helpers/engine.ts'

const log = pino({ level: 'silent' })
const operator = { name: 'alice', role: 'operator' as const }

async function engineWith(judge: Judge) {
  const { engine, store, events, proxies, clock, link } = await engineBed({ log, judge })
  // The one proxy applies whatever control has, then the clock runs.
  const tick = async () => {
    await engine.idle()
    link.ack(proxies.get('p')!, { revision: engine.state.revision, error: null })
    clock.tick()
    await engine.idle()
    await engine.idle()
  }
  return { engine, store, events, tick }
}

const plan = (enabled: boolean, pause: number | null = 50): Plan => ({
  mode: 'canary',
  steps: [
    { weight: 10, pause },
    { weight: 100, pause: null },
  ],
  analysis: { enabled },
})

describe('analysis seam', () => {
  it('fail rolls back at once, audited as analysis with the failed check', async () => {
    let verdict: Verdict = { result: 'pass', reason: '' }
    const { engine, store, events, tick } = await engineWith(() => verdict)
    await engine.startRollout('shop', plan(true), operator, null)
    await tick()
    expect(engine.route('shop').rollout!.applied).toBe(true)
    verdict = { result: 'fail', reason: 'canary error rate 4.1% > 1% (812 requests)' }
    await tick()
    const r = engine.route('shop')
    expect([r.canary, r.rollout!.phase, r.rollout!.reason]).toEqual([0, 'aborted', verdict.reason])
    const last = store.audit({ limit: 1, route: 'shop' }).entries[0]!
    expect(last).toMatchObject({
      who: 'analysis',
      role: 'system',
      action: 'rollout-abort',
      why: `analysis failed: ${verdict.reason}`,
      to: { canary: 0 },
    })
    events.close()
    await store.close()
  })

  it('inconclusive at the end of a pause holds the rollout paused; resume runs the pause again, then goes on', async () => {
    let verdict: Verdict = { result: 'inconclusive', reason: 'only 12 canary requests' }
    const { engine, store, events, tick } = await engineWith(() => verdict)
    await engine.startRollout('shop', plan(true), operator, null)
    await tick()
    await new Promise((r) => setTimeout(r, 80))
    await tick()
    let r = engine.route('shop')
    expect([r.canary, r.rollout!.phase, r.rollout!.reason]).toEqual([
      10,
      'paused',
      'analysis inconclusive: only 12 canary requests',
    ])
    verdict = { result: 'pass', reason: '' }
    const resumed = await engine.act('shop', { type: 'resume' }, operator, null)
    // The step's whole 50 ms again: the held step had none left.
    expect(resumed.rollout).toMatchObject({ phase: 'progressing', step: 1, state: 'pausing' })
    expect(resumed.rollout!.pauseLeftMs).toBeGreaterThan(0)
    await new Promise((res) => setTimeout(res, 80))
    await tick()
    r = engine.route('shop')
    expect([r.canary, r.rollout!.step]).toEqual([100, 1])
    events.close()
    await store.close()
  })

  it('with analysis disabled the judge is never asked', async () => {
    let asked = 0
    const { engine, store, events, tick } = await engineWith(() => {
      asked++
      return { result: 'fail', reason: 'x' }
    })
    await engine.startRollout('shop', plan(false, 0), operator, null)
    for (let i = 0; i < 3; i++) await tick()
    expect(asked).toBe(0)
    expect(engine.route('shop').rollout!.step).toBe(1)
    events.close()
    await store.close()
  })
})
