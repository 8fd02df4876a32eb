/**
 * The control engine: the one writer of state. Every change runs in one queue, is computed from the
 * current state as a whole new value (pure rollout.ts transitions), made durable (store.ts) and only
 * then published: to long-polling proxies, to /v1/events, to webhooks. Because the If-Match check and
 * the write happen in the same queue turn, two writes with the same If-Match cannot both succeed.
 */

import type { Logger } from 'pino'
import type { AnalysisBook } from './analysis.ts'
import type { AuditPage, AuditQuery } from './audit-query.ts'
import { ApiError } from './errors.ts'
import type { EventHub } from './events.ts'
import type { Notifier } from './notify.ts'
import type { ProxyRegistry } from './proxies.ts'
import {
  advance,
  type Ctx,
  isActive,
  type Notice,
  type Plan,
  type Rollout,
  type RolloutEvent,
  type SmokeCheck,
  start,
} from './rollout.ts'
import { runSmoke, type SmokeResult, type SmokeRunner } from './smoke.ts'
import {
  type AuditDraft,
  type AuditEntry,
  type ControlState,
  type RouteRecord,
  type Store,
  StoreWriteError,
} from './store.ts'
import { type RouteView, routeView } from './views.ts'

/** What an automatic rollback adds to its audit entry: the verdict's evidence, harm counts, the fuse. */
export type AuditExtra = Pick<AuditEntry, 'evidence' | 'harm' | 'fuse'>

/** A versioned change's audit entry as decided; commit() makes it an entry (role, route, revision, time). */
export interface Audit {
  readonly who: Actor
  readonly action: string
  readonly from: unknown
  readonly to: unknown
  readonly why: string | null
  /** An automatic rollback's evidence, or the proxy whose registration made the change. */
  readonly extra?: AuditExtra & Pick<AuditEntry, 'proxy'>
}

export interface Actor {
  readonly name: string
  readonly role: string
}

const SMOKE: Actor = { name: 'smoke', role: 'system' }

export interface Change {
  readonly next: RouteRecord
  readonly previousWeight: number
  /** Null for bookkeeping that is persisted but not versioned (a pause started, upstream info). */
  readonly audit: Audit | null
  readonly notices: readonly Notice[]
  /** A rollout step became applied (its pause starts): published as an `applied` event. */
  readonly applied?: boolean
}

export interface EngineDeps {
  readonly store: Store
  readonly proxies: ProxyRegistry
  readonly events: EventHub
  readonly notifier: Notifier
  readonly log: Logger
  /** Called when the state cannot be written: the process must stop (see main.ts). */
  readonly fatal: (err: unknown) => void
  /** The pre-step smoke check (smoke.ts); tests may replace it. */
  readonly smoke?: SmokeRunner
  /** Live verdicts and harm counts for the views (absent: views show none). */
  readonly analysis?: AnalysisBook
  /** Control's clock (epoch ms): every change, view and rollout deadline reads it. Default Date.now. */
  readonly now?: () => number
}

export class Engine {
  private readonly d: EngineDeps
  private readonly smoke: SmokeRunner
  readonly now: () => number
  private tail: Promise<unknown> = Promise.resolve()
  /**
   * Per route, the smoke check running outside the queue for a raise decided but not yet made. Any other
   * change of the route's rollout (an abort, a pause, a promote, an analysis verdict) removes it, and its
   * result is then dropped when it comes back.
   */
  readonly #smokes = new Map<string, object>()
  /** Smoke checks running, until their result is decided (`idle` waits for them). */
  readonly #running = new Set<Promise<unknown>>()

  constructor(deps: EngineDeps) {
    this.d = deps
    this.smoke = deps.smoke ?? runSmoke
    this.now = deps.now ?? Date.now
  }

  get state(): ControlState {
    return this.d.store.state
  }

  /** Run `fn` in the one queue of changes: it sees the state every earlier change left. */
  queue<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn)
    this.tail = run.catch(() => undefined)
    return run
  }

  view(r: RouteRecord, now = this.now()): RouteView {
    const analysis = this.d.analysis?.view(r.name, r.rollout) ?? null
    const last = this.d.store.lastChange(r.name)
    return routeView(r, this.d.proxies.sync(r, r.revision, now), now, analysis, last)
  }

  routes(): RouteView[] {
    const now = this.now()
    return Object.values(this.state.routes)
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((r) => this.view(r, now))
  }

  route(name: string): RouteRecord {
    const r = Object.hasOwn(this.state.routes, name) ? this.state.routes[name] : undefined
    if (r === undefined)
      throw new ApiError(
        'unknown_route',
        `no route named ${JSON.stringify(name)}; known: ${Object.keys(this.state.routes).sort().join(', ') || 'none yet (routes appear when a proxy registers them)'}`,
      )
    return r
  }

  /**
   * The time and revision of the change being decided: the one place the revision is bumped. Every
   * versioned change of one call shares it (`bump`), and `commit` gives it to their audit entries.
   */
  next(now = this.now()): Ctx {
    return { now, revision: this.state.revision + 1 }
  }

  /**
   * Write changes durably, then publish them: the one place audit entries are made, one for each
   * versioned change, all at `ctx`'s revision and time.
   */
  async commit(changes: readonly Change[], ctx: Ctx): Promise<AuditEntry[]> {
    const { now, revision } = ctx
    const routes = { ...this.state.routes }
    for (const c of changes) routes[c.next.name] = c.next
    const versioned = changes.some((c) => c.audit !== null)
    const next: ControlState = { ...this.state, revision: versioned ? revision : this.state.revision, routes }
    const drafts = changes.flatMap((c) => (c.audit === null ? [] : [draft(c.next.name, c.audit, revision)]))
    let entries: AuditEntry[]
    try {
      entries = await this.d.store.commit(next, drafts, now)
    } catch (err) {
      throw this.#storageFailed(err)
    }
    if (versioned) this.d.proxies.publish(revision)
    let i = 0
    for (const c of changes) {
      if (c.audit === null) {
        if (c.applied) this.d.events.publish('applied', this.view(c.next, now))
        continue
      }
      const entry = entries[i++]!
      this.d.events.publish('change', { ...entry, state: this.view(c.next, now) }, revision)
      const ro = c.next.rollout
      for (const event of c.notices) {
        this.d.notifier.send({
          event,
          route: c.next.name,
          rollout: ro?.id ?? null,
          step: ro ? ro.step + 1 : null,
          steps: ro ? ro.plan.steps.length : null,
          weight: c.next.canary,
          previousWeight: c.previousWeight,
          who: entry.who,
          why: entry.why,
          revision,
          time: entry.time,
        })
      }
    }
    return entries
  }

  /** `r` with `patch` as a versioned change at `ctx`: its version +1, the change's revision and time. */
  bump(r: RouteRecord, patch: Partial<RouteRecord>, ctx: Ctx): RouteRecord {
    return { ...r, ...patch, version: r.version + 1, revision: ctx.revision, updatedAt: ctx.now }
  }

  setWeight(
    name: string,
    canary: number,
    ifMatch: string | undefined,
    who: Actor,
    why: string | null,
  ): Promise<RouteView> {
    return this.queue(async () => {
      const r = this.route(name)
      checkIfMatch(r, ifMatch)
      if (isActive(r.rollout))
        throw new ApiError(
          'rollout_active',
          `route ${name} has a rollout in progress (step ${r.rollout.step + 1}/${r.rollout.plan.steps.length}); promote, abort or let it finish before setting a weight by hand`,
        )
      if (canary > 0 && r.canaryUpstream === null)
        throw new ApiError(
          'no_canary',
          `route ${name} has no canary upstream; add one to the proxies' config first`,
        )
      if (canary === r.canary) return this.view(r)
      return this.#setByHand(r, 'set-weight', { canary: r.canary }, { canary }, who, why)
    })
  }

  /** The share of the route's requests the proxies mirror to its shadow. Rollouts do not hold it up. */
  setShadow(
    name: string,
    percent: number,
    ifMatch: string | undefined,
    who: Actor,
    why: string | null,
  ): Promise<RouteView> {
    return this.queue(async () => {
      const r = this.route(name)
      checkIfMatch(r, ifMatch)
      if (r.shadowUpstream === null)
        throw new ApiError(
          'no_shadow',
          `route ${name} has no shadow upstream; add shadow.url to the route in the proxies' config first`,
        )
      if (r.canaryFromShadow)
        throw new ApiError(
          'no_shadow',
          `route ${name}'s shadow (${r.shadowUpstream.release}) serves as its canary since promote-shadow, so nothing is mirrored; to mirror again, put a new release in the proxies' shadow config`,
        )
      if (percent === r.shadow) return this.view(r)
      return this.#setByHand(r, 'set-shadow', { shadow: r.shadow }, { shadow: percent }, who, why)
    })
  }

  /** An operator's change of one setting (weight, shadow percent): a new version, audited from → to. */
  async #setByHand(
    r: RouteRecord,
    action: string,
    from: Partial<RouteRecord>,
    to: Partial<RouteRecord>,
    who: Actor,
    why: string | null,
  ): Promise<RouteView> {
    const ctx = this.next()
    const next = this.bump(r, to, ctx)
    await this.commit(
      [{ next, previousWeight: r.canary, audit: { who, action, from, to, why }, notices: [] }],
      ctx,
    )
    return this.view(next)
  }

  startRollout(name: string, plan: Plan, who: Actor, why: string | null): Promise<RouteView> {
    return this.#thenSmoke(name, () => {
      const r = this.route(name)
      checkNoRollout(r)
      return this.#start(r, plan, who, why, null)
    })
  }

  /**
   * `promote-shadow`: the route's shadow becomes its canary at weight 0, mirroring stops (shadow percent
   * 0), and `plan` starts on it as `startRollout` starts one: one revision, so proxies never see the
   * promotion without the plan's first step. The route remembers it (`canaryFromShadow`), so proxies
   * serve their configured shadow as the canary.
   */
  promoteShadow(name: string, plan: Plan, who: Actor, why: string | null): Promise<RouteView> {
    return this.#thenSmoke(name, () => {
      const r = this.route(name)
      if (r.shadowUpstream === null)
        throw new ApiError(
          'no_shadow',
          `route ${name} has no shadow upstream to promote; add shadow.url to the route in the proxies' config first`,
        )
      checkNoRollout(r)
      // The proxies serve the shadow as the canary only once they apply this revision: a smoke check
      // before step 1 would reach the canary they had before.
      if (plan.smoke !== undefined && plan.steps[0]!.weight > 0)
        throw new ApiError(
          'invalid_plan',
          `steps[0].weight is ${plan.steps[0]!.weight}, but with a smoke check a promote-shadow plan starts at weight 0 (e.g. {"weight": 0, "pause": "30s"}): before step 1 the proxies do not serve the shadow as the canary yet, so the check could not reach it`,
        )
      const canaryUpstream = r.shadowUpstream
      return this.#start(r, plan, who, why, {
        action: 'promote-shadow',
        patch: { canary: 0, shadow: 0, canaryUpstream, canaryFromShadow: true },
        from: {
          canary: r.canary,
          shadow: r.shadow,
          canaryUpstream: r.canaryUpstream,
          shadowUpstream: r.shadowUpstream,
          canaryFromShadow: r.canaryFromShadow,
        },
        to: { canary: 0, shadow: 0, canaryUpstream, canaryFromShadow: true },
      })
    })
  }

  /**
   * Start `plan` on `r` (the caller checked that no rollout runs): one commit of the start, of its abort
   * when the smoke check failed, and before both of `prelude` when given: a change of the same revision
   * and reason that the start builds on (promote-shadow's). With a smoke check due, nothing is committed
   * yet: the check runs outside the queue and the start is decided again when its result comes back.
   */
  async #start(
    r: RouteRecord,
    plan: Plan,
    who: Actor,
    why: string | null,
    prelude: { action: string; patch: Partial<RouteRecord>; from: unknown; to: unknown } | null,
    failed?: string | null,
  ): Promise<Later> {
    const name = r.name
    const base = prelude === null ? r : { ...r, ...prelude.patch }
    if (base.canaryUpstream === null && plan.steps.some((s) => s.weight > 0))
      throw new ApiError(
        'no_canary',
        `route ${name} has no canary upstream; add one to the proxies' config first`,
      )
    if (failed === undefined && needsSmoke(plan, base.canary, plan.steps[0]!.weight)) {
      const version = r.version
      return this.#smokeFirst(
        name,
        plan.smoke!,
        1,
        (now) => {
          if (isActive(now.rollout))
            return new ApiError(
              'rollout_active',
              `route ${name} had a rollout started (${now.rollout.id}) while the smoke check before step 1 ran; abort or promote it first`,
            )
          if (now.version !== version)
            return new ApiError(
              'version_mismatch',
              `route ${name} changed (version ${version} → ${now.version}) while the smoke check before step 1 ran, so the rollout was not started; GET it and start again`,
            )
          return null
        },
        (now, result) => this.#start(now, plan, who, why, prelude, result),
      )
    }
    const ctx = this.next()
    const changes: Change[] = []
    if (prelude !== null) {
      const { action, patch, from, to } = prelude
      const next = this.bump(r, patch, ctx)
      changes.push({ next, previousWeight: r.canary, audit: { who, action, from, to, why }, notices: [] })
      r = next
    }
    const out = start(plan, `${name}-${ctx.revision}`, ctx)
    const next = this.bump(r, { canary: out.weight, rollout: out.rollout }, ctx)
    const to = { canary: out.weight, step: 1, steps: plan.steps.length, mode: plan.mode }
    const audit = { who, action: 'rollout-start', from: { canary: r.canary }, to, why }
    changes.push({ next, previousWeight: r.canary, audit, notices: out.notices })
    if (failed !== null && failed !== undefined) {
      // Step 1 never reaches the proxies: the rollout is recorded as started and aborted at once.
      const reason = smokeWhy(1, failed)
      const abort = advance(out.rollout, { type: 'abort', reason }, ctx)
      if (!abort.ok) throw new Error('abort of a new rollout was refused')
      changes.push({
        next: this.bump(next, { canary: abort.weight, rollout: abort.rollout }, ctx),
        previousWeight: r.canary,
        audit: {
          who: SMOKE,
          action: 'rollout-abort',
          from: { canary: r.canary, step: 1, phase: 'progressing' },
          to: { canary: abort.weight, step: 1, phase: abort.rollout.phase },
          why: reason,
        },
        notices: abort.notices,
      })
    }
    await this.commit(changes, ctx)
    return null
  }

  /** promote / pause / resume / abort. Abort with no rollout still sets canary 0 (it is the rollback lever). */
  act(name: string, event: RolloutEvent, who: Actor, why: string | null): Promise<RouteView> {
    return this.#thenSmoke(name, async () => {
      const r = this.route(name)
      if (event.type === 'abort') {
        await this.abortInQueue(r, who, why)
        return null
      }
      return this.transition(r, event, who, why)
    })
  }

  /**
   * Run `decide` in the queue and answer with the route's view; when it left a raise waiting for its
   * smoke check, wait (outside the queue) for the result to be decided and answer with the view then.
   */
  async #thenSmoke(name: string, decide: () => Promise<Later>): Promise<RouteView> {
    const now = await this.queue(async () => {
      const later = await decide()
      return later === null ? { view: this.view(this.route(name)) } : later
    })
    return 'view' in now ? now.view : now.done
  }

  /**
   * The effect of a raise that needs the plan's smoke check: the check runs outside the queue, so no
   * other change (an abort above all) waits for it; its result comes back as a queued command. There
   * `stale` re-checks the route as it is then: an error (or another change of the rollout meanwhile)
   * drops the result, logged; else `apply` decides the raise again with the result. `done` resolves to
   * the route's view after that, or rejects with why the result was dropped.
   */
  #smokeFirst(
    route: string,
    check: SmokeCheck,
    step: number,
    stale: (r: RouteRecord) => ApiError | null,
    apply: (r: RouteRecord, failed: string | null) => Promise<Later>,
  ): Later {
    const ticket = {}
    this.#smokes.set(route, ticket)
    const ran = this.smoke(check).catch((err: unknown): SmokeResult => ({ ok: false, reason: String(err) }))
    const done = ran.then((result) =>
      this.queue(async () => {
        const current = this.#smokes.get(route) === ticket
        if (current) this.#smokes.delete(route)
        const r = this.route(route)
        const dropped =
          stale(r) ??
          (current
            ? null
            : new ApiError(
                isActive(r.rollout) ? 'version_mismatch' : 'no_rollout',
                `route ${route} changed while the smoke check before step ${step} ran (an abort, pause or promote came first), so its result was dropped; GET it and retry`,
              ))
        if (dropped !== null) {
          this.d.log.warn(
            { route, step, smoke: result.ok ? 'passed' : 'failed', why: dropped.message },
            'smoke result dropped',
          )
          throw dropped
        }
        if (!result.ok) this.d.log.warn({ route, reason: result.reason }, 'smoke check failed')
        await apply(r, result.ok ? null : result.reason)
        return this.view(this.route(route))
      }),
    )
    // A raise the clock decided has no caller waiting: a dropped result was logged, a failed write too.
    const settled = done.catch(() => undefined)
    this.#running.add(settled)
    void settled.then(() => this.#running.delete(settled))
    return { done }
  }

  /**
   * Roll back: abort the rollout, or with none set canary 0 (the rollback lever). Runs inside the queue
   * (act and the clock call it there); `extra` goes into the audit entry (evidence, harm counts).
   */
  async abortInQueue(r: RouteRecord, who: Actor, why: string | null, extra?: AuditExtra): Promise<void> {
    // Even with nothing to roll back, an abort wins over a start waiting for its smoke check.
    this.#smokes.delete(r.name)
    if (isActive(r.rollout)) {
      await this.transition(r, { type: 'abort', reason: why }, who, why, this.now(), extra)
      return
    }
    if (r.canary === 0) return
    const ctx = this.next()
    const next = this.bump(r, { canary: 0 }, ctx)
    const audit = { who, action: 'abort', from: { canary: r.canary }, to: { canary: 0 }, why, extra }
    await this.commit([{ next, previousWeight: r.canary, audit, notices: ['rolled-back'] }], ctx)
  }

  /**
   * Feed the route's rollout one event and commit what it returns (the clock and act() use it). A raise
   * that needs the smoke check is not committed: the check runs outside the queue (`#smokeFirst`) and
   * the event is fed again, with `failed` (null: passed), when its result comes back; the Later says
   * when. A raise decided while a check for this route runs waits for that one.
   */
  async transition(
    r: RouteRecord,
    event: RolloutEvent,
    who: Actor,
    why: string | null,
    now = this.now(),
    extra?: AuditExtra,
    failed?: string | null,
  ): Promise<Later> {
    if (r.rollout === null)
      throw new ApiError(
        'no_rollout',
        `route ${r.name} has no rollout; start one with POST /v1/routes/${r.name}/rollout`,
      )
    const ctx = this.next(now)
    let out = advance(r.rollout, event, ctx)
    if (!out.ok) throw new ApiError(out.code, `route ${r.name}: ${out.message}`)
    if (out.change === 'none') return null
    if (failed === undefined && needsSmoke(r.rollout.plan, r.canary, out.weight)) {
      // An operator's promote goes ahead of a step the clock decided; the clock's waits for the check.
      if (event.type === 'tick' && this.#smokes.has(r.name)) return null
      const decided = r.rollout
      const canary = r.canary
      return this.#smokeFirst(
        r.name,
        decided.plan.smoke!,
        out.rollout.step + 1,
        (now) => (sameStep(now, decided, canary) ? null : staleStep(now, decided)),
        (now, result) => this.transition(now, event, who, why, this.now(), extra, result),
      )
    }
    if (out.change === 'versioned' && failed === undefined) this.#smokes.delete(r.name)
    if (failed !== null && failed !== undefined) {
      // The raise never happens: the smoke check's failure aborts the rollout as `abort` does.
      why = smokeWhy(out.rollout.step + 1, failed)
      event = { type: 'abort', reason: why }
      who = SMOKE
      out = advance(r.rollout, event, ctx)
      if (!out.ok) throw new ApiError(out.code, `route ${r.name}: ${out.message}`)
    }
    if (out.change === 'progress') {
      await this.commit(
        [
          {
            next: { ...r, rollout: out.rollout },
            previousWeight: r.canary,
            audit: null,
            notices: [],
            applied: true,
          },
        ],
        ctx,
      )
      return null
    }
    const next = this.bump(r, { canary: out.weight, rollout: out.rollout }, ctx)
    const from = { canary: r.canary, step: r.rollout.step + 1, phase: r.rollout.phase }
    const to = { canary: out.weight, step: out.rollout.step + 1, phase: out.rollout.phase }
    const action =
      event.type === 'tick'
        ? out.rollout.phase === 'completed'
          ? 'rollout-complete'
          : 'rollout-step'
        : `rollout-${event.type}`
    const audit = { who, action, from, to, why, extra }
    await this.commit([{ next, previousWeight: r.canary, audit, notices: out.notices }], ctx)
    return null
  }

  audit(query: AuditQuery): AuditPage {
    return this.d.store.audit(query)
  }

  /** Append a refused attempt to the audit log (fsynced); control/denials.ts decides which. */
  deny(draft: AuditDraft): Promise<void> {
    return this.queue(async () => {
      try {
        await this.d.store.append([draft])
      } catch (err) {
        throw this.#storageFailed(err)
      }
    })
  }

  /**
   * A write that failed. Undone (StoreWriteError: a full disk, say): 503 with Retry-After, and control
   * goes on serving reads; the next write tries again. Not undone: the process must stop.
   */
  #storageFailed(err: unknown): ApiError {
    if (err instanceof StoreWriteError) {
      this.d.log.error(
        { code: err.code },
        'state write failed and was undone; writes get 503 until it succeeds',
      )
      return new ApiError('storage_failed', err.message, { 'retry-after': '5' })
    }
    this.d.fatal(err)
    return new ApiError('storage_failed')
  }

  /** Resolves once every queued change is on disk, smoke checks running meanwhile and their results too. */
  async idle(): Promise<void> {
    await this.queue(() => Promise.resolve())
    while (this.#running.size > 0) await Promise.allSettled([...this.#running])
  }
}

function checkNoRollout(r: RouteRecord): void {
  if (isActive(r.rollout))
    throw new ApiError(
      'rollout_active',
      `route ${r.name} already has a rollout in progress (${r.rollout.id}); abort or promote it first`,
    )
}

/** If-Match (RFC 9110 §13.1.1): `*`, or a list of entity tags of which one must be the route's version. */
function checkIfMatch(r: RouteRecord, header: string | undefined): void {
  if (header === undefined) return
  const tags = header.split(',').map((t) => t.trim())
  if (tags.includes('*')) return
  // Strong comparison: a weak tag (W/"3") never matches.
  if (tags.some((t) => t === `"${r.version}"` || t === String(r.version))) return
  throw new ApiError(
    'version_mismatch',
    `route ${r.name} is at version ${r.version}, If-Match said ${header}; GET it again and retry with the new ETag`,
  )
}

/** The audit entry of a versioned change of `route` (the store numbers and times it). */
function draft(route: string, a: Audit, revision: number): AuditDraft {
  const { who, action, from, to, why, extra } = a
  return { who: who.name, role: who.role, action, route, from, to, why, ...extra, revision }
}

/** A raise waiting for its smoke check: `done` resolves once its result is decided. Null: none. */
type Later = { readonly done: Promise<RouteView> } | null

/** A change that raises the canary weight (`from` → `to`) needs the plan's smoke check first. */
function needsSmoke(plan: Plan, from: number, to: number): boolean {
  return plan.smoke !== undefined && to > from
}

/** The rollout is where the raise was decided: same rollout, step, phase and weight. */
function sameStep(r: RouteRecord, decided: Rollout, canary: number): boolean {
  const ro = r.rollout
  return (
    ro !== null &&
    ro.id === decided.id &&
    ro.step === decided.step &&
    ro.phase === decided.phase &&
    r.canary === canary
  )
}

function staleStep(r: RouteRecord, decided: Rollout): ApiError {
  const ro = r.rollout
  const now = ro === null || ro.id !== decided.id ? 'another rollout' : `${ro.phase} at step ${ro.step + 1}`
  return new ApiError(
    isActive(ro) ? 'version_mismatch' : 'no_rollout',
    `route ${r.name}'s rollout changed while the smoke check ran (it is now ${now}), so its result was dropped; GET the route and retry`,
  )
}

function smokeWhy(step: number, reason: string): string {
  return `smoke check before step ${step} failed: ${reason}`
}
