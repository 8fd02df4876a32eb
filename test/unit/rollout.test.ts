/**
 * The rollout state machine (control/rollout.ts): every state against every event, a table of exact
 * outcomes; then random event sequences under fake timers, checking the invariants after each step.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  advance,
  blueGreenSteps,
  describe as describeRollout,
  type Plan,
  type Rollout,
  type RolloutEvent,
  start,
  weightOf,
} from '../../control/rollout.ts'

const T0 = 1_000_000
const plan: Plan = {
  mode: 'canary',
  steps: [
    { weight: 5, pause: 30_000 },
    { weight: 25, pause: null },
    { weight: 50, pause: 0 },
    { weight: 100, pause: null },
  ],
  analysis: { enabled: true },
}

/** States to start from, each built only through the machine's own transitions. */
function states(): Record<string, Rollout> {
  const must = (r: ReturnType<typeof advance>): Rollout => {
    if (!r.ok) throw new Error(r.message)
    return r.rollout
  }
  const fresh = start(plan, 'r1', { now: T0, revision: 10 }).rollout
  const pausing = must(advance(fresh, { type: 'applied' }, { now: T0 + 1000, revision: 11 }))
  const promoteStep = must(
    advance(pausing, { type: 'promote', full: false }, { now: T0 + 2000, revision: 11 }),
  )
  const atPromote = must(advance(promoteStep, { type: 'applied' }, { now: T0 + 2500, revision: 12 }))
  const lastStep = must(
    advance(
      must(advance(atPromote, { type: 'promote', full: false }, { now: T0 + 3000, revision: 12 })),
      { type: 'promote', full: false },
      { now: T0 + 3000, revision: 13 },
    ),
  )
  return {
    'waiting-for-proxies (timed step)': fresh,
    'pausing (10 s of 30 s gone)': pausing,
    'waiting-for-proxies (promote step)': promoteStep,
    'waiting-for-promote': atPromote,
    'paused before applied': must(
      advance(fresh, { type: 'pause', reason: null }, { now: T0 + 500, revision: 11 }),
    ),
    'paused while pausing': must(
      advance(pausing, { type: 'pause', reason: 'look' }, { now: T0 + 11_000, revision: 11 }),
    ),
    'paused at promote step': must(
      advance(atPromote, { type: 'pause', reason: null }, { now: T0 + 2600, revision: 13 }),
    ),
    'last step': lastStep,
    completed: must(advance(fresh, { type: 'promote', full: true }, { now: T0 + 500, revision: 11 })),
    aborted: must(advance(fresh, { type: 'abort', reason: 'bad' }, { now: T0 + 500, revision: 11 })),
  }
}

const EVENTS: Record<string, RolloutEvent> = {
  promote: { type: 'promote', full: false },
  'promote --full': { type: 'promote', full: true },
  pause: { type: 'pause', reason: 'why' },
  resume: { type: 'resume' },
  abort: { type: 'abort', reason: 'why' },
  applied: { type: 'applied' },
  tick: { type: 'tick' },
}

/** Expected: `error code` or `phase step weight change [notices] state pauseLeftMs`. */
const TABLE: Record<string, Record<string, string>> = {
  'waiting-for-proxies (timed step)': {
    promote: 'progressing 2 25 versioned [promoted,step] waiting-for-proxies -',
    'promote --full': 'completed 1 100 versioned [promoted,completed] completed -',
    pause: 'paused 1 5 versioned [paused] paused 30000',
    resume: 'error not_paused',
    abort: 'aborted 1 0 versioned [rolled-back] aborted -',
    applied: 'progressing 1 5 progress [] pausing 30000',
    tick: 'progressing 1 5 none [] waiting-for-proxies 30000',
  },
  'pausing (10 s of 30 s gone)': {
    promote: 'progressing 2 25 versioned [promoted,step] waiting-for-proxies -',
    'promote --full': 'completed 1 100 versioned [promoted,completed] completed -',
    pause: 'paused 1 5 versioned [paused] paused 20000',
    resume: 'error not_paused',
    abort: 'aborted 1 0 versioned [rolled-back] aborted -',
    applied: 'progressing 1 5 none [] pausing 20000',
    tick: 'progressing 1 5 none [] pausing 20000',
  },
  'waiting-for-proxies (promote step)': {
    promote: 'progressing 3 50 versioned [promoted,step] waiting-for-proxies 0',
    'promote --full': 'completed 2 100 versioned [promoted,completed] completed -',
    pause: 'paused 2 25 versioned [paused] paused -',
    resume: 'error not_paused',
    abort: 'aborted 2 0 versioned [rolled-back] aborted -',
    applied: 'progressing 2 25 progress [] waiting-for-promote -',
    tick: 'progressing 2 25 none [] waiting-for-proxies -',
  },
  'waiting-for-promote': {
    promote: 'progressing 3 50 versioned [promoted,step] waiting-for-proxies 0',
    'promote --full': 'completed 2 100 versioned [promoted,completed] completed -',
    pause: 'paused 2 25 versioned [paused] paused -',
    resume: 'error not_paused',
    abort: 'aborted 2 0 versioned [rolled-back] aborted -',
    applied: 'progressing 2 25 none [] waiting-for-promote -',
    tick: 'progressing 2 25 none [] waiting-for-promote -',
  },
  'paused before applied': {
    promote: 'progressing 2 25 versioned [promoted,step] waiting-for-proxies -',
    'promote --full': 'completed 1 100 versioned [promoted,completed] completed -',
    pause: 'error already_paused',
    resume: 'progressing 1 5 versioned [resumed] waiting-for-proxies 30000',
    abort: 'aborted 1 0 versioned [rolled-back] aborted -',
    applied: 'paused 1 5 progress [] paused 30000',
    tick: 'paused 1 5 none [] paused 30000',
  },
  'paused while pausing': {
    promote: 'progressing 2 25 versioned [promoted,step] waiting-for-proxies -',
    'promote --full': 'completed 1 100 versioned [promoted,completed] completed -',
    pause: 'error already_paused',
    resume: 'progressing 1 5 versioned [resumed] pausing 20000',
    abort: 'aborted 1 0 versioned [rolled-back] aborted -',
    applied: 'paused 1 5 none [] paused 20000',
    tick: 'paused 1 5 none [] paused 20000',
  },
  'paused at promote step': {
    promote: 'progressing 3 50 versioned [promoted,step] waiting-for-proxies 0',
    'promote --full': 'completed 2 100 versioned [promoted,completed] completed -',
    pause: 'error already_paused',
    resume: 'progressing 2 25 versioned [resumed] waiting-for-promote -',
    abort: 'aborted 2 0 versioned [rolled-back] aborted -',
    applied: 'paused 2 25 none [] paused -',
    tick: 'paused 2 25 none [] paused -',
  },
  'last step': {
    promote: 'completed 4 100 versioned [promoted,completed] completed -',
    'promote --full': 'completed 4 100 versioned [promoted,completed] completed -',
    pause: 'paused 4 100 versioned [paused] paused -',
    resume: 'error not_paused',
    abort: 'aborted 4 0 versioned [rolled-back] aborted -',
    applied: 'progressing 4 100 progress [] waiting-for-promote -',
    tick: 'progressing 4 100 none [] waiting-for-proxies -',
  },
  completed: {
    promote: 'error no_rollout',
    'promote --full': 'error no_rollout',
    pause: 'error no_rollout',
    resume: 'error no_rollout',
    abort: 'error no_rollout',
    applied: 'completed 1 100 none [] completed -',
    tick: 'completed 1 100 none [] completed -',
  },
  aborted: {
    promote: 'error no_rollout',
    'promote --full': 'error no_rollout',
    pause: 'error no_rollout',
    resume: 'error no_rollout',
    abort: 'error no_rollout',
    applied: 'aborted 1 0 none [] aborted -',
    tick: 'aborted 1 0 none [] aborted -',
  },
}

describe('rollout state machine: every state × every event', () => {
  const built = states()
  const NOW = T0 + 11_000 // 10 s into the pause that started at T0 + 1000
  for (const [stateName, row] of Object.entries(TABLE)) {
    for (const [eventName, expected] of Object.entries(row)) {
      it(`${stateName} + ${eventName} → ${expected}`, () => {
        const from = built[stateName]!
        const out = advance(from, EVENTS[eventName]!, { now: NOW, revision: 99 })
        if (!out.ok) {
          expect(`error ${out.code}`).toBe(expected)
          return
        }
        const view = describeRollout(out.rollout, NOW)
        const got = `${out.rollout.phase} ${out.rollout.step + 1} ${out.weight} ${out.change} [${out.notices.join(',')}] ${view.state} ${view.pauseLeftMs ?? '-'}`
        expect(got).toBe(expected)
        if (out.change === 'none') expect(out.rollout).toBe(from)
        if (out.change === 'versioned')
          expect(
            out.rollout.stepRevision === 99 || out.rollout.phase === 'paused' || out.notices[0] === 'resumed',
          ).toBe(true)
      })
    }
  }

  it('covers every state and every event', () => {
    expect(Object.keys(TABLE).sort()).toEqual(Object.keys(built).sort())
    for (const row of Object.values(TABLE))
      expect(Object.keys(row).sort()).toEqual(Object.keys(EVENTS).sort())
  })
})

describe('rollout timing', () => {
  it('extend gives the running pause more time from now and counts it; a new step starts at none', () => {
    const must = (r: ReturnType<typeof advance>): Rollout => {
      if (!r.ok) throw new Error(r.message)
      return r.rollout
    }
    const applied = must(
      advance(
        start(plan, 'r', { now: T0, revision: 1 }).rollout,
        { type: 'applied' },
        { now: T0, revision: 1 },
      ),
    )
    const once = advance(applied, { type: 'extend', ms: 5000 }, { now: T0 + 30_000, revision: 2 })
    expect(once.ok && [once.change, once.rollout.deadline, once.rollout.extensions]).toEqual([
      'versioned',
      T0 + 35_000,
      1,
    ])
    const twice = must(advance(must(once), { type: 'extend', ms: 5000 }, { now: T0 + 35_000, revision: 3 }))
    expect(twice.extensions).toBe(2)
    expect(must(advance(twice, { type: 'tick' }, { now: T0 + 40_000, revision: 4 })).extensions).toBe(0)
    // Nothing to extend while no pause runs (not applied yet, or paused).
    const fresh = start(plan, 'r', { now: T0, revision: 1 }).rollout
    expect(advance(fresh, { type: 'extend', ms: 5000 }, { now: T0, revision: 2 })).toMatchObject({
      change: 'none',
    })
  })

  it('a step held at the end of its pause (inconclusive) gets its whole pause again on resume', () => {
    const must = (r: ReturnType<typeof advance>): Rollout => {
      if (!r.ok) throw new Error(r.message)
      return r.rollout
    }
    const fresh = start(plan, 'r', { now: T0, revision: 1 }).rollout
    const applied = must(advance(fresh, { type: 'applied' }, { now: T0, revision: 1 }))
    // The pause ran out; the clock pauses the rollout instead of moving on (too little traffic).
    const held = must(
      advance(applied, { type: 'pause', reason: 'inconclusive' }, { now: T0 + 31_000, revision: 2 }),
    )
    expect(held.leftMs).toBe(0)
    const resumed = must(advance(held, { type: 'resume' }, { now: T0 + 90_000, revision: 3 }))
    expect(resumed).toMatchObject({ phase: 'progressing', step: 0, deadline: T0 + 90_000 + 30_000 })
    expect(describeRollout(resumed, T0 + 90_000)).toEqual({ state: 'pausing', pauseLeftMs: 30_000 })
    // Paused with time left, a resume keeps only what was left.
    const part = must(advance(applied, { type: 'pause', reason: null }, { now: T0 + 20_000, revision: 2 }))
    const back = must(advance(part, { type: 'resume' }, { now: T0 + 50_000, revision: 3 }))
    expect(back.deadline).toBe(T0 + 50_000 + 10_000)
  })

  it('a timed step advances on the first tick at or after its deadline, and only then', () => {
    const fresh = start(plan, 'r', { now: T0, revision: 1 }).rollout
    const applied = advance(fresh, { type: 'applied' }, { now: T0 + 100, revision: 1 })
    if (!applied.ok) throw new Error()
    expect(applied.rollout.deadline).toBe(T0 + 100 + 30_000)
    const early = advance(applied.rollout, { type: 'tick' }, { now: T0 + 30_099, revision: 2 })
    expect(early.ok && early.change).toBe('none')
    const due = advance(applied.rollout, { type: 'tick' }, { now: T0 + 30_100, revision: 2 })
    if (!due.ok) throw new Error()
    expect([due.rollout.step, due.weight, due.rollout.stepRevision, due.notices]).toEqual([
      1,
      25,
      2,
      ['step'],
    ])
  })

  it('a zero pause ends on the next tick after the step is applied; the last pause completes at 100%', () => {
    const p: Plan = {
      ...plan,
      steps: [
        { weight: 10, pause: 0 },
        { weight: 40, pause: 0 },
      ],
    }
    let r = start(p, 'r', { now: T0, revision: 1 }).rollout
    const step = (e: RolloutEvent, rev: number) => {
      const o = advance(r, e, { now: T0, revision: rev })
      if (!o.ok) throw new Error(o.message)
      r = o.rollout
      return o
    }
    step({ type: 'applied' }, 1)
    expect(step({ type: 'tick' }, 2).weight).toBe(40)
    step({ type: 'applied' }, 2)
    const last = step({ type: 'tick' }, 3)
    expect([last.rollout.phase, last.weight, last.notices]).toEqual(['completed', 100, ['completed']])
  })

  it('pause keeps the time left, resume restarts the clock with it', () => {
    let r = start(plan, 'r', { now: T0, revision: 1 }).rollout
    const go = (e: RolloutEvent, now: number) => {
      const o = advance(r, e, { now, revision: 2 })
      if (!o.ok) throw new Error(o.message)
      r = o.rollout
    }
    go({ type: 'applied' }, T0)
    go({ type: 'pause', reason: null }, T0 + 12_000)
    expect(r.leftMs).toBe(18_000)
    go({ type: 'resume' }, T0 + 500_000)
    expect(r.deadline).toBe(T0 + 500_000 + 18_000)
    expect(describeRollout(r, T0 + 510_000).pauseLeftMs).toBe(8000)
  })

  it('blue-green: preview at 0% (override traffic only), then 100% in one step, held for promote or abort', () => {
    const bg: Plan = { mode: 'blue-green', steps: blueGreenSteps(null), analysis: { enabled: false } }
    const s = start(bg, 'bg', { now: T0, revision: 1 })
    expect(s.weight).toBe(0)
    const switched = advance(s.rollout, { type: 'promote', full: false }, { now: T0, revision: 2 })
    if (!switched.ok) throw new Error()
    expect([switched.weight, switched.rollout.phase]).toEqual([100, 'progressing'])
    const back = advance(switched.rollout, { type: 'abort', reason: 'switch back' }, { now: T0, revision: 3 })
    expect(back.ok && back.weight).toBe(0)
  })
})

describe('rollout invariants over random event sequences (fake timers)', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('holds for 2,000 sequences of 25 events', () => {
    vi.useFakeTimers()
    vi.setSystemTime(T0)
    let seed = 12345
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff
      return seed % n
    }
    const kinds = Object.values(EVENTS)
    for (let run = 0; run < 2000; run++) {
      const steps = Array.from({ length: 1 + rand(5) }, () => ({
        weight: 0,
        pause: rand(3) === 0 ? null : rand(5) * 1000,
      }))
      let w = 0
      for (const s of steps) s.weight = w = Math.min(100, w + rand(40))
      const p: Plan = { mode: 'canary', steps, analysis: { enabled: true } }
      let revision = 1
      let r = start(p, 'r', { now: Date.now(), revision }).rollout
      let lastWeight = weightOf(r)
      for (let i = 0; i < 25; i++) {
        vi.advanceTimersByTime(rand(3000))
        const now = Date.now()
        const out = advance(r, kinds[rand(kinds.length)]!, { now, revision: revision + 1 })
        if (!out.ok) continue
        if (out.change === 'versioned') revision++
        r = out.rollout
        // Invariants: the step exists; the weight is the step's (or 0/100 at the end) and never goes
        // down except by abort; a deadline runs only while progressing on an applied timed step; the
        // time left never exceeds the step's pause.
        expect(r.step).toBeGreaterThanOrEqual(0)
        expect(r.step).toBeLessThan(p.steps.length)
        const weight = weightOf(r)
        if (r.phase !== 'aborted') expect(weight).toBeGreaterThanOrEqual(lastWeight)
        lastWeight = weight
        const pause = p.steps[r.step]!.pause
        const running = r.phase === 'progressing' && r.applied && pause !== null
        expect(r.deadline !== null).toBe(running)
        if (r.deadline !== null) expect(r.deadline - now).toBeLessThanOrEqual(pause!)
        if (r.leftMs !== null) expect(r.leftMs).toBeLessThanOrEqual(pause ?? -1)
        if (r.phase === 'completed') expect(weight).toBe(100)
      }
    }
  })
})
