/**
 * The control engine: the one writer of state. Every command is decided in one queue, from the current
 * state, by the pure core (decide.ts: changes and effects); the changes are made durable (store.ts) and
 * only then published: to long-polling proxies, to /v1/events, to webhooks. Effects (smoke checks) run
 * outside the queue and come back as commands, so no change waits for one. Because the If-Match check
 * and the write happen in the same queue turn, two writes with the same If-Match cannot both succeed.
 */

import type { Logger } from 'pino'
import type { AnalysisBook } from './analysis.ts'
import type { AuditPage, AuditQuery } from './audit-query.ts'
import {
  type ControlStore,
  type Fence,
  NotLeaderError,
  type RemoteEntry,
  StaleStateError,
} from './control-store.ts'
import {
  type Actor,
  type AuditExtra,
  applyChanges,
  bump,
  type Change,
  type Command,
  type Decision,
  decide,
  type Effect,
  nextCtx,
  type PendingSmoke,
  routeOf,
  without,
} from './decide.ts'
import { ApiError, storageFailed } from './errors.ts'
import type { EventHub } from './events.ts'
import type { Notifier } from './notify.ts'
import type { ProxyRegistry } from './proxies.ts'
import type { Ctx, Plan, RolloutEvent } from './rollout.ts'
import { runSmoke, type SmokeResult, type SmokeRunner } from './smoke.ts'
import {
  type AuditDraft,
  type AuditEntry,
  type ControlState,
  type RouteRecord,
  StoreWriteError,
} from './store.ts'
import { type RouteView, routeView } from './views.ts'

export type { Actor, Audit, AuditExtra, Change } from './decide.ts'

/**
 * How often a command is decided when other replicas' writes keep coming first (etcd): once is not
 * enough next to a replica that writes without pause, since every write moves `meta`. A stale If-Match
 * is 412 at the first decision after the change that made it stale.
 */
const DECIDE_TRIES = 5

export interface EngineDeps {
  readonly store: ControlStore
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
  /** Told after changes other replicas wrote were published (main.ts: the clock looks at them). */
  readonly remoteChanged?: () => void
  /** Who leads (control/leader.ts); absent: this control is the only one and always leads. */
  readonly lead?: Lead
}

/** What the engine asks of the leader election: the clock's writes are fenced with it. */
export interface Lead {
  leading(): boolean
  /** The fence of the lead held now (null: none, or a single control that needs none). */
  fence(): Fence | null
}

export class Engine {
  private readonly d: EngineDeps
  private readonly smoke: SmokeRunner
  readonly now: () => number
  private tail: Promise<unknown> = Promise.resolve()
  /** Per route, the raise waiting for its smoke check (decide.ts owns what it means). */
  #smokes: Readonly<Record<string, PendingSmoke>> = {}
  #nextSmoke = 1
  /** By smoke check id: the route's view once its result is decided, or why it was dropped. */
  readonly #decided = new Map<number, Promise<RouteView>>()

  constructor(deps: EngineDeps) {
    this.d = deps
    this.smoke = deps.smoke ?? runSmoke
    this.now = deps.now ?? Date.now
    // Changes other replicas wrote reach this replica's proxies and /v1/events as its own do.
    deps.store.remote = (entries, revision) => this.#remote(entries, revision)
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

  /** The route's newest versioned change (its audit entry), or null. */
  /** Wait until the state holds every change etcd had when called (a no-op on the state dir). */
  async catchUp(): Promise<void> {
    try {
      await this.d.store.current?.()
    } catch (err) {
      if (!(err instanceof StoreWriteError)) throw err
      throw storageFailed(err.message)
    }
  }

  lastChange(name: string): AuditEntry | null {
    return this.d.store.lastChange(name)
  }

  routes(): RouteView[] {
    const now = this.now()
    return Object.values(this.state.routes)
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((r) => this.view(r, now))
  }

  route(name: string): RouteRecord {
    return routeOf(this.state, name)
  }

  /** The time and revision of a change decided outside decide.ts (a proxy's registration, link.ts). */
  next(now = this.now()): Ctx {
    return nextCtx(this.state, now)
  }

  /** `r` with `patch` as a versioned change at `ctx` (decide.ts `bump`). */
  bump(r: RouteRecord, patch: Partial<RouteRecord>, ctx: Ctx): RouteRecord {
    return bump(r, patch, ctx)
  }

  /**
   * Write changes durably, then publish them: one revision for all versioned changes of one decision,
   * one audit entry each (decide.ts `applyChanges`), all at `ctx`'s revision and time.
   */
  async commit(changes: readonly Change[], ctx: Ctx, fenced = false): Promise<AuditEntry[]> {
    const { now, revision } = ctx
    const { state: next, drafts } = applyChanges(this.state, changes, ctx)
    const versioned = drafts.length > 0
    let entries: AuditEntry[]
    try {
      let fence: Fence | null = null
      if (fenced && this.d.lead !== undefined) {
        if (!this.d.lead.leading()) throw new NotLeaderError('this replica does not lead')
        fence = this.d.lead.fence()
      }
      entries = await this.d.store.commit(next, drafts, now, fence)
    } catch (err) {
      // Deposed between its decision and its write: nothing was written, the new leader decides.
      if (err instanceof NotLeaderError) throw err
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

  setWeight(
    name: string,
    canary: number,
    ifMatch: string | undefined,
    who: Actor,
    why: string | null,
  ): Promise<RouteView> {
    return this.#answer({ type: 'set-weight', route: name, canary, ifMatch, who, why })
  }

  /** The share of the route's requests the proxies mirror to its shadow. Rollouts do not hold it up. */
  setShadow(
    name: string,
    percent: number,
    ifMatch: string | undefined,
    who: Actor,
    why: string | null,
  ): Promise<RouteView> {
    return this.#answer({ type: 'set-shadow', route: name, percent, ifMatch, who, why })
  }

  startRollout(name: string, plan: Plan, who: Actor, why: string | null): Promise<RouteView> {
    return this.#answer({ type: 'start', route: name, plan, who, why })
  }

  /** `promote-shadow` (decide.ts): the shadow becomes the canary at weight 0 and `plan` starts on it. */
  promoteShadow(name: string, plan: Plan, who: Actor, why: string | null): Promise<RouteView> {
    return this.#answer({ type: 'promote-shadow', route: name, plan, who, why })
  }

  /** promote / pause / resume / abort. Abort with no rollout still sets canary 0 (it is the rollback lever). */
  act(name: string, event: RolloutEvent, who: Actor, why: string | null): Promise<RouteView> {
    if (event.type === 'abort') return this.#answer({ type: 'abort', route: name, who, why })
    return this.#answer({ type: 'event', route: name, event, who, why })
  }

  /**
   * Roll back: abort the rollout, or with none set canary 0 (the rollback lever). Runs inside the queue
   * (the clock calls it there); `extra` goes into the audit entry (evidence, harm counts).
   */
  async abortInQueue(r: RouteRecord, who: Actor, why: string | null, extra?: AuditExtra): Promise<void> {
    await this.run({ type: 'abort', route: r.name, who, why, extra }, this.now(), true)
  }

  /** Feed the route's rollout one event, inside the queue (the clock uses it), decided at `now`. */
  async transition(
    r: RouteRecord,
    event: RolloutEvent,
    who: Actor,
    why: string | null,
    now = this.now(),
    extra?: AuditExtra,
  ): Promise<void> {
    await this.run({ type: 'event', route: r.name, event, who, why, extra }, now, true)
  }

  /**
   * Decide `command` inside the queue: commit its changes, then start its effects. A smoke check
   * starts here and runs outside the queue; its result is queued as a `smoke-result` command.
   * `fenced`: the clock's (or its smoke check's) command, written only while this replica leads.
   * Refused because another replica changed the state first (StaleStateError, etcd), an operator's
   * command is decided again on the state caught up, up to DECIDE_TRIES times in all; a fenced one
   * throws (the clock's next tick decides from the new state).
   */
  async run(command: Command, now = this.now(), fenced = false): Promise<Decision> {
    let d: Decision
    try {
      for (let tries = 1; ; tries++) {
        d = decide({ control: this.state, smokes: this.#smokes, nextSmoke: this.#nextSmoke }, command, now)
        try {
          if (d.changes.length > 0) await this.commit(d.changes, d.ctx, fenced)
          break
        } catch (err) {
          // The clock's commands are not decided again here: their preconditions (acks, the analysis
          // verdict, a fuse's report) were checked on the state that moved; the next tick checks anew.
          // A smoke check's result is: decide() itself drops one the new state made stale.
          const again = !fenced || command.type === 'smoke-result'
          if (!(err instanceof StaleStateError && tries < DECIDE_TRIES && again)) throw err
        }
      }
    } catch (err) {
      // A smoke result that could not be decided or saved (a full disk) is spent all the same: left
      // pending, the route's clock would wait for it for good; gone, the next step asks a new check.
      if (command.type === 'smoke-result' && this.#smokes[command.route]?.id === command.id)
        this.#smokes = without(this.#smokes, command.route)
      throw err
    }
    this.#smokes = d.smokes
    this.#nextSmoke = d.nextSmoke
    for (const e of d.effects) this.#effect(e, fenced)
    return d
  }

  /** Changes another replica wrote (etcd): published here as this replica's own are. */
  #remote(entries: readonly RemoteEntry[], revision: number): void {
    this.d.proxies.publish(revision)
    const now = this.now()
    for (const { record, ...entry } of entries) {
      const state = record === undefined || record === null ? null : this.view(record, now)
      this.d.events.publish('change', { ...entry, state }, entry.revision)
    }
    this.d.remoteChanged?.()
  }

  /**
   * Decide an operator's command in the queue and answer with the route's view; when it left a raise
   * waiting for its smoke check, wait (outside the queue) for the result to be decided and answer then.
   */
  async #answer(command: Command & { readonly route: string }): Promise<RouteView> {
    const out = await this.queue(async () => {
      const d = await this.run(command)
      const smoke = d.effects.find((e) => e.type === 'smoke')
      // Wrapped: the queue turn must not wait for the result, which is queued after it.
      return smoke === undefined
        ? { view: this.view(this.route(command.route)) }
        : { later: this.#decided.get(smoke.id)! }
    })
    return out.view ?? out.later!
  }

  #effect(e: Effect, fenced: boolean): void {
    if (e.type === 'smoke-dropped') {
      const smoke = e.failed === null ? 'passed' : 'failed'
      this.d.log.warn({ route: e.route, step: e.step, smoke, why: e.error.message }, 'smoke result dropped')
      return
    }
    const { route, id, step } = e
    const ran = this.smoke(e.check).catch((err: unknown): SmokeResult => ({ ok: false, reason: String(err) }))
    const done = ran.then((result) => {
      if (!result.ok) this.d.log.warn({ route, step, reason: result.reason }, 'smoke check failed')
      return this.queue(async () => {
        const d = await this.run(
          { type: 'smoke-result', route, id, step, failed: result.ok ? null : result.reason },
          this.now(),
          fenced,
        )
        const dropped = d.effects.find((x) => x.type === 'smoke-dropped' && x.id === id)
        if (dropped?.type === 'smoke-dropped') throw dropped.error
        return this.view(this.route(route))
      })
    })
    // A raise the clock decided has no caller waiting: a dropped result was logged, a failed write too.
    this.#decided.set(id, done)
    void done.catch(() => undefined).then(() => this.#decided.delete(id))
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
    // etcd: another writer changed the state since this control read it (a failed compare), as If-Match.
    if (err instanceof ApiError) return err
    if (err instanceof StoreWriteError) {
      this.d.log.error(
        { code: err.code },
        'state write failed and was undone; writes get 503 until it succeeds',
      )
      return storageFailed(err.message)
    }
    this.d.fatal(err)
    return new ApiError('storage_failed')
  }

  /** Resolves once every queued change is on disk, smoke checks running meanwhile and their results too. */
  async idle(): Promise<void> {
    await this.queue(() => Promise.resolve())
    while (this.#decided.size > 0) await Promise.allSettled([...this.#decided.values()])
  }
}
