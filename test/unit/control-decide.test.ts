/**
 * The pure core (control/decide.ts) driven by seeded random command sequences — weights, shadow
 * percents, starts, promote-shadow, promote/pause/resume/abort, proxy acks and clock ticks, and smoke
 * results coming back in any order, some stale — against its invariants after every decision: weights
 * in 0..100, at most one rollout in progress per route and its weight the route's, every versioned
 * change audited exactly once, the revision up by exactly one per decision that changed anything, and
 * no raise under a smoke-checked plan without its check's passing result.
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { describe, expect, it } from 'vitest'
import { type Actor, applyChanges, type Command, type DecideState, decide } from '../../control/decide.ts'
import { Engine } from '../../control/engine.ts'
import { ApiError } from '../../control/errors.ts'
import { EventHub } from '../../control/events.ts'
import { Notifier } from '../../control/notify.ts'
import { ProxyRegistry } from '../../control/proxies.ts'
import { isActive, type Plan, type RolloutEvent } from '../../control/rollout.ts'
import { type ControlState, emptyState, type RouteRecord, Store } from '../../control/store.ts'
import { rng } from '../helpers/rng.ts'

const who: Actor = { name: 'alice', role: 'operator' }
const ROUTES = ['a', 'b', 'c']

function route(name: string, canary: boolean, shadow: boolean): RouteRecord {
  return {
    name,
    version: 1,
    revision: 1,
    canary: 0,
    shadow: null,
    stable: { url: 'http://s', release: 'v1' },
    canaryUpstream: canary ? { url: 'http://c', release: 'v2' } : null,
    shadowUpstream: shadow ? { url: 'http://sh', release: 'v3' } : null,
    canaryFromShadow: false,
    superseded: [],
    rollout: null,
    createdAt: 0,
    updatedAt: 0,
  }
}

function initial(): ControlState {
  const routes = { a: route('a', true, true), b: route('b', false, true), c: route('c', true, false) }
  return { ...emptyState(), revision: 1, routes }
}

type Random = () => number

const int = (rand: Random, lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1))
const pick = <T>(rand: Random, xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!

function randomPlan(rand: Random): Plan {
  const steps = Array.from({ length: int(rand, 1, 3) }, () => ({
    weight: rand() < 0.2 ? 0 : int(rand, 1, 100),
    pause: rand() < 0.3 ? null : int(rand, 0, 3000),
  }))
  return {
    mode: 'canary',
    steps,
    analysis: { enabled: false },
    ...(rand() < 0.5 && {
      smoke: { url: 'http://p/smoke', requests: 1, expectStatus: [200], timeoutMs: 1000 },
    }),
  }
}

function randomEvent(rand: Random): RolloutEvent {
  return pick<() => RolloutEvent>(rand, [
    () => ({ type: 'promote', full: rand() < 0.3 }),
    () => ({ type: 'pause', reason: 'hold' }),
    () => ({ type: 'resume' }),
    () => ({ type: 'applied' }),
    () => ({ type: 'tick' }),
    () => ({ type: 'tick' }),
    () => ({ type: 'extend', ms: int(rand, 0, 2000) }),
    () => ({ type: 'abort', reason: 'bad' }),
  ])()
}

function randomCommand(rand: Random, s: DecideState, smokes: { route: string; id: number; step: number }[]) {
  const name = pick(rand, ROUTES)
  const base = { route: name, who, why: null }
  const version = s.control.routes[name]!.version
  const ifMatch = rand() < 0.2 ? `"${rand() < 0.5 ? version : version + 1}"` : undefined
  const kind = rand()
  if (kind < 0.1) return { ...base, type: 'set-weight', canary: int(rand, 0, 100), ifMatch } as const
  if (kind < 0.15) return { ...base, type: 'set-shadow', percent: int(rand, 0, 100), ifMatch } as const
  if (kind < 0.3) return { ...base, type: 'start', plan: randomPlan(rand) } as const
  if (kind < 0.35) return { ...base, type: 'promote-shadow', plan: randomPlan(rand) } as const
  if (kind < 0.45) return { ...base, type: 'abort' } as const
  if (kind < 0.75 || smokes.length === 0) return { ...base, type: 'event', event: randomEvent(rand) } as const
  // A smoke result, in any order: most for a check still out, some repeated or made up (stale).
  const out = rand() < 0.9 ? smokes.splice(Math.floor(rand() * smokes.length), 1)[0]! : pick(rand, smokes)
  const failed = rand() < 0.3 ? 'status 500' : null
  return { type: 'smoke-result', route: out.route, id: out.id, step: out.step, failed } as const
}

function checkInvariants(before: ControlState, command: Command, d: ReturnType<typeof decide>): ControlState {
  const { state: after, drafts } = applyChanges(before, d.changes, d.ctx)
  // The revision moves by exactly one when anything versioned changed, and every entry carries it.
  const versioned = d.changes.filter((c) => c.audit !== null).length
  expect(drafts).toHaveLength(versioned)
  expect(after.revision).toBe(versioned > 0 ? before.revision + 1 : before.revision)
  for (const e of drafts) expect(e.revision).toBe(before.revision + 1)
  for (const name of ROUTES) {
    const was = before.routes[name]!
    const now = after.routes[name]!
    // Every versioned change of a route is audited exactly once: one entry per version step.
    const entries = drafts.filter((e) => e.route === name).length
    expect(now.version - was.version).toBe(entries)
    if (entries > 0) expect([now.revision, now.updatedAt]).toEqual([d.ctx.revision, d.ctx.now])
    else
      expect([now.canary, now.shadow, now.revision, now.rollout?.phase]).toEqual([
        was.canary,
        was.shadow,
        was.revision,
        was.rollout?.phase,
      ])
    expect(now.canary).toBeGreaterThanOrEqual(0)
    expect(now.canary).toBeLessThanOrEqual(100)
    if (now.shadow !== null) expect(now.shadow >= 0 && now.shadow <= 100).toBe(true)
    // One rollout per route: a new one only where none was in progress; one in progress sets the weight.
    if (now.rollout !== null && now.rollout.id !== was.rollout?.id) {
      expect(isActive(was.rollout)).toBe(false)
      expect(['start', 'promote-shadow', 'smoke-result']).toContain(command.type)
    }
    if (isActive(now.rollout)) expect(now.canary).toBe(now.rollout.plan.steps[now.rollout.step]!.weight)
    // No raise by a smoke-checked rollout (one in progress, or one started now) but on its check's
    // passing result.
    const wasId = was.rollout?.id
    const by = isActive(was.rollout) ? was.rollout : now.rollout?.id !== wasId ? now.rollout : null
    if (now.canary > was.canary && by?.plan.smoke !== undefined) {
      expect(command.type).toBe('smoke-result')
      expect(command.type === 'smoke-result' && command.failed).toBe(null)
    }
  }
  return after
}

describe('decide (pure core) under random command sequences', () => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it(`seed ${seed}: invariants hold after every decision`, () => {
      const rand = rng(seed)
      let s: DecideState = { control: initial(), smokes: {}, nextSmoke: 1 }
      let now = 1_000_000
      const out: { route: string; id: number; step: number }[] = []
      const seen = { decided: 0, refused: 0, dropped: 0, raisedAfterSmoke: 0, rollouts: new Set<string>() }
      for (let i = 0; i < 400; i++) {
        now += int(rand, 0, 1500)
        const command = randomCommand(rand, s, out)
        let d: ReturnType<typeof decide>
        try {
          d = decide(s, command, now)
        } catch (err) {
          // A refusal is an ApiError and decides nothing (the state is a value: it cannot have changed).
          expect(err).toBeInstanceOf(ApiError)
          seen.refused++
          continue
        }
        seen.decided++
        const control = checkInvariants(s.control, command, d)
        for (const e of d.effects) {
          if (e.type === 'smoke') out.push({ route: e.route, id: e.id, step: e.step })
          else seen.dropped++
        }
        if (command.type === 'smoke-result' && d.changes.length > 0) seen.raisedAfterSmoke++
        for (const r of Object.values(control.routes)) if (r.rollout) seen.rollouts.add(r.rollout.id)
        // At most one raise waits per route, and only for a rollout in progress or a start.
        for (const [name, p] of Object.entries(d.smokes)) {
          expect(p.at.name).toBe(name)
          if (p.command.type === 'event') expect(isActive(control.routes[name]!.rollout)).toBe(true)
        }
        s = { control, smokes: d.smokes, nextSmoke: d.nextSmoke }
      }
      // The sequence reached the interesting parts: rollouts, smoke results applied and dropped.
      expect(seen.rollouts.size).toBeGreaterThan(3)
      expect(seen.raisedAfterSmoke).toBeGreaterThan(0)
      expect(seen.dropped).toBeGreaterThan(0)
      expect(seen.refused).toBeGreaterThan(0)
    })
  }
})

describe('one clock', () => {
  it('the engine takes every time from its `now`: the route, the rollout and the audit entry agree', async () => {
    const log = pino({ level: 'silent' })
    const store = await Store.open(mkdtempSync(join(tmpdir(), 'veer-decide-')), log)
    await store.commit(initial(), [])
    const t = Date.UTC(2030, 0, 2, 3, 4, 5)
    const engine = new Engine({
      store,
      proxies: new ProxyRegistry(10_000),
      events: new EventHub(),
      notifier: new Notifier([], log),
      log,
      fatal: (err) => {
        throw err
      },
      now: () => t,
    })
    const plan: Plan = { mode: 'canary', steps: [{ weight: 5, pause: null }], analysis: { enabled: false } }
    await engine.startRollout('a', plan, who, null)
    const r = engine.route('a')
    expect([r.updatedAt, r.rollout!.startedAt]).toEqual([t, t])
    expect(store.audit({ limit: 1, route: 'a' }).entries[0]).toMatchObject({
      action: 'rollout-start',
      time: new Date(t).toISOString(),
      revision: 2,
    })
    await store.close()
  })
})
