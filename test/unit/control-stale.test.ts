/**
 * A write refused because another replica wrote first (StaleStateError, as etcd's failed compare
 * gives): an operator's command is decided again on the new state, the clock's (fenced) one is not —
 * its preconditions were checked on the state that moved, and the next tick checks them again.
 */
import pino from 'pino'
import { describe, expect, it } from 'vitest'
import { StaleStateError } from '../../control/control-store.ts'
import { engineBed } from '../helpers/engine.ts'

const log = pino({ level: 'silent' })
const operator = { name: 'alice', role: 'operator' as const }
const system = { name: 'analysis', role: 'system' as const }

/** The bed's store, refusing its next `n` commits as stale; how many commits it was asked for. */
async function staleBed(n: number) {
  const bed = await engineBed({ log, judge: () => ({ result: 'pass', reason: '' }) })
  const commit = bed.store.commit.bind(bed.store)
  const asked = { commits: 0, refuse: n }
  bed.store.commit = async (...args: Parameters<typeof commit>) => {
    asked.commits++
    if (asked.refuse-- > 0) throw new StaleStateError()
    return commit(...args)
  }
  return { ...bed, asked }
}

describe('a write lost to another replica', () => {
  it("an operator's command is decided again and goes through", async () => {
    const { engine, asked, store, events } = await staleBed(1)
    const view = await engine.setWeight('shop', 20, undefined, operator, 'more')
    expect(view.weights.canary).toBe(20)
    expect(asked.commits).toBe(2)
    events.close()
    await store.close()
  })

  it("the clock's fenced command is not decided again: it throws, and nothing changed", async () => {
    const { engine, asked, store, events } = await staleBed(0)
    await engine.setWeight('shop', 20, undefined, operator, 'more')
    asked.commits = 0
    asked.refuse = 1
    const before = engine.state.revision
    await expect(
      engine.queue(() => engine.abortInQueue(engine.state.routes.shop!, system, 'harm')),
    ).rejects.toBeInstanceOf(StaleStateError)
    expect(asked.commits).toBe(1)
    expect([engine.state.revision, engine.route('shop').canary]).toEqual([before, 20])
    // Not stuck: the same command, decided anew, goes through.
    await engine.queue(() => engine.abortInQueue(engine.state.routes.shop!, system, 'harm'))
    expect(engine.route('shop').canary).toBe(0)
    events.close()
    await store.close()
  })
})
