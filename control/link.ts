/**
 * The proxy side of the wire protocol (config/wire.ts), as control serves it: registration (a route
 * control does not know yet is adopted with the weight the proxy announced; from then on control is its
 * source of truth for that release pair, and a new pair is a release change: control/release.ts), the
 * weights a proxy follows, and acks/NACKs, which may let a rollout step count as applied.
 */
import type { Logger } from 'pino'
import type {
  AckRequest,
  AnnouncedRoute,
  RegisterRequest,
  RegisterResponse,
  ReleasePair,
  ReportRequest,
  RouteWeights,
  RouteWeightsDraft,
} from '../config/wire.ts'
import type { AnalysisBook } from './analysis.ts'
import type { Identity } from './auth.ts'
import type { RolloutClock } from './clock.ts'
import { findRoute } from './decide.ts'
import type { Change, Engine } from './engine.ts'
import { ApiError } from './errors.ts'
import type { EventHub } from './events.ts'
import type { ProxyEntry, ProxyRegistry } from './proxies.ts'
import {
  classify,
  describeUpstream,
  isHandoff,
  pairOf,
  sameUpstream,
  servedPair,
  servesShadow,
  supersede,
} from './release.ts'
import { advance, type Ctx, isActive } from './rollout.ts'
import type { StatsFeed } from './stats.ts'
import type { RouteRecord, UpstreamInfo } from './store.ts'

export interface LinkDeps {
  readonly engine: Engine
  readonly proxies: ProxyRegistry
  readonly events: EventHub
  readonly clock: RolloutClock
  readonly log: Logger
  /** Fed every report (absent in tests that judge otherwise). */
  readonly analysis?: AnalysisBook
  /** The `stats` events of /v1/events (absent: none). */
  readonly stats?: StatsFeed
}

export class ProxyLink {
  private readonly engine: Engine
  private readonly proxies: ProxyRegistry
  private readonly events: EventHub
  private readonly clock: RolloutClock
  private readonly log: Logger
  private readonly analysis: AnalysisBook | null
  private readonly stats: StatsFeed | null

  constructor(deps: LinkDeps) {
    this.engine = deps.engine
    this.proxies = deps.proxies
    this.events = deps.events
    this.clock = deps.clock
    this.log = deps.log
    this.analysis = deps.analysis ?? null
    this.stats = deps.stats ?? null
  }

  /** A proxy's per-second report: the judge's evidence, the harm account, and any fuse it tripped. */
  report(p: ProxyEntry, report: ReportRequest): void {
    const now = this.engine.now()
    p.lastReport = report
    p.lastReportAt = now
    p.lastSeen = now
    const routes = this.engine.state.routes
    let judge = false
    for (const [name, rep] of Object.entries(report.routes)) {
      const r = Object.hasOwn(routes, name) ? routes[name] : undefined
      if (r === undefined) continue
      // A proxy serving another release pair (a stale config) reports on other releases than the
      // route's: its outcomes and its fuse say nothing of this canary.
      if (!this.proxies.serves(p, r)) continue
      this.analysis?.feed(name, r.rollout, rep, p.id)
      this.stats?.add(name, rep)
      if (rep.fuse !== undefined) this.clock.fuse(name, rep.fuse, p.id)
      else if (isActive(r.rollout) && r.rollout.plan.analysis.enabled) judge = true
    }
    // New evidence is judged at once, not at the next tick: a bad canary is rolled back sooner.
    if (judge) this.clock.tick()
  }

  /**
   * A proxy registers: routes control does not know are adopted with their weight; a route announced
   * with a new release pair is a release change (control/release.ts says which pairs are).
   */
  register(req: RegisterRequest, who: Identity): Promise<RegisterResponse> {
    return this.engine.queue(async () => {
      const ctx = this.engine.next()
      const applied = req.appliedRevision <= this.engine.state.revision ? req.appliedRevision : 0
      this.proxies.register(req.id, req.routes, applied, who.name, ctx.now)
      const changes: Change[] = []
      for (const a of req.routes) {
        const r = findRoute(this.engine.state, a.name)
        if (r === undefined) {
          changes.push(adopt(a, req.id, who, ctx))
          continue
        }
        const kind = classify(a, r)
        if (kind === 'change') {
          changes.push(...this.releaseChange(r, a, req.id, who, ctx))
          continue
        }
        if (kind === 'stale') {
          this.log.warn(
            { proxy: req.id, route: a.name, announced: servedPair(a, r), serving: pairOf(r) },
            'proxy announced a release pair control has moved away from; it serves its own file for this route until its config catches up',
          )
          continue
        }
        // The same pair. A canary promoted from the shadow stays so while proxies announce that same
        // shadow (they serve it as the canary, whatever canary their file has). A different shadow, or
        // none, while the canary served stays the same (the config now names the promoted release as
        // its canary) ends the flag: a versioned, audited change. A rollout goes on: its canary is the
        // same release, served from the canary slot now.
        const fromShadow = servesShadow(a, r)
        const shadowUpstream = a.shadow ?? null
        if (fromShadow !== r.canaryFromShadow) {
          const why = `proxy ${req.id} announced ${shadowUpstream === null ? 'no shadow' : 'another shadow'}: the canary is its announced one again`
          changes.push({
            next: this.engine.bump(r, { shadowUpstream, canaryFromShadow: false }, ctx),
            previousWeight: r.canary,
            audit: {
              who,
              action: 'canary-from-shadow-end',
              from: { canaryFromShadow: true, canary: r.canaryUpstream },
              to: { canaryFromShadow: false, canary: r.canaryUpstream },
              why,
            },
            notices: [],
          })
        } else if (!sameUpstream(r.shadowUpstream, shadowUpstream)) {
          // A new shadow to mirror serves no user: bookkeeping, persisted but not versioned.
          changes.push({ next: { ...r, shadowUpstream }, previousWeight: r.canary, audit: null, notices: [] })
        }
      }
      if (changes.length > 0) await this.engine.commit(changes, ctx)
      this.events.publish('proxy', {
        kind: 'registered',
        id: req.id,
        routes: req.routes.map((r) => r.name),
        appliedRevision: applied,
      })
      this.log.info({ proxy: req.id, who: who.name, routes: req.routes.length }, 'proxy registered')
      this.clock.tick()
      return this.weightsFor(req.id)
    })
  }

  /**
   * A new release pair for `r`: the canary weight goes to the file's (0 without a canary), a rollout of
   * the old canary is aborted (its own audit entry first, same revision), the promoted-shadow flag ends,
   * and the change is audited as `release-change` (a hand-off when the new stable was the canary).
   */
  private releaseChange(r: RouteRecord, a: AnnouncedRoute, proxy: string, who: Identity, ctx: Ctx): Change[] {
    const from = pairOf(r)
    const to: ReleasePair = { stable: a.stable, canary: a.canary }
    const canary = to.canary === null ? 0 : a.canaryWeight
    const handoff = isHandoff(from, to)
    const changes: Change[] = []
    const why = releaseWhy(from, to, { from: r.canary, to: canary }, proxy, handoff)
    let rollout = r.rollout
    if (isActive(rollout)) {
      const reason = `release changed (${why})`
      const out = advance(rollout, { type: 'abort', reason }, ctx)
      if (!out.ok) throw new Error('abort of a running rollout was refused')
      rollout = out.rollout
      changes.push({
        next: this.engine.bump(r, { rollout }, ctx),
        previousWeight: r.canary,
        audit: {
          who,
          action: 'rollout-abort',
          from: { canary: r.canary, step: r.rollout!.step + 1, phase: r.rollout!.phase },
          to: { canary, step: r.rollout!.step + 1, phase: 'aborted' },
          why: reason,
          extra: { proxy },
        },
        notices: [],
      })
    }
    const next = this.engine.bump(
      r,
      {
        stable: to.stable,
        canaryUpstream: to.canary,
        shadowUpstream: a.shadow ?? null,
        canaryFromShadow: false,
        canary,
        rollout,
        superseded: supersede(r.superseded, from, to),
      },
      ctx,
    )
    changes.push({
      next,
      previousWeight: r.canary,
      audit: {
        who,
        action: 'release-change',
        from: { ...from, weight: r.canary },
        to: { ...to, weight: canary, ...(handoff && { handoff: true }) },
        why,
        extra: { proxy },
      },
      notices: ['release-changed'],
    })
    this.log.info(
      { route: r.name, proxy, from, to, canary, handoff },
      handoff ? 'release hand-off' : 'release changed',
    )
    return changes
  }

  /**
   * What a proxy follows: the revision and the weights of the routes it announced, each with the release
   * pair it is for (a proxy whose file serves another pair keeps its file's weight for that route).
   */
  weightsFor(id: string): RegisterResponse {
    const p = this.proxies.get(id)
    const routes: Record<string, RouteWeights> = {}
    for (const a of p?.routes ?? []) {
      const r = findRoute(this.engine.state, a.name)
      const pair = r === undefined ? null : pairOf(r)
      if (r === undefined || pair === null) continue
      const weights: RouteWeightsDraft = { version: r.version, pair, canary: r.canary }
      // No shadow percent yet: the proxy keeps its file's (and older proxies see the message they know).
      if (r.shadow !== null) weights.shadow = r.shadow
      // Only to a proxy that announced the promoted shadow: one with another shadow must not serve that
      // release to users, and every proxy that announces a shadow is assumed to know the flag.
      if (servesShadow(a, r)) weights.canaryFromShadow = true
      // The route's last change was an automatic rollback: the proxies count it (veer_rollbacks_total).
      const last = this.engine.lastChange(r.name)
      if (last?.rollback !== undefined && last.revision === r.revision)
        weights.rollback = { reason: last.rollback }
      routes[a.name] = weights
    }
    return { revision: this.engine.state.revision, routes }
  }

  /** A proxy acknowledges (or refuses) a revision; a rollout step may now count as applied. */
  ack(p: ProxyEntry, a: AckRequest): void {
    if (a.revision > this.engine.state.revision)
      throw new ApiError(
        'invalid_body',
        `revision ${a.revision} is ahead of control's revision ${this.engine.state.revision}`,
      )
    p.lastSeen = this.engine.now()
    if (a.error === null) {
      p.appliedRevision = Math.max(p.appliedRevision, a.revision)
      p.lastError = null
    } else {
      p.lastError = a.error.slice(0, 1000)
      this.log.warn({ proxy: p.id, revision: a.revision, error: p.lastError }, 'proxy refused a revision')
    }
    this.proxies.acked(p)
    this.events.publish('proxy', {
      kind: a.error === null ? 'ack' : 'nack',
      id: p.id,
      revision: a.revision,
      error: a.error,
    })
    this.clock.tick()
  }
}

/** A route control did not know: adopted with the weight the proxy's file gives it. */
function adopt(a: AnnouncedRoute, proxy: string, who: Identity, ctx: Ctx): Change {
  const { now, revision } = ctx
  const canary = a.canary === null ? 0 : a.canaryWeight
  const next: RouteRecord = {
    name: a.name,
    version: 1,
    revision,
    canary,
    shadow: null,
    stable: a.stable,
    canaryUpstream: a.canary,
    shadowUpstream: a.shadow ?? null,
    canaryFromShadow: false,
    superseded: [],
    rollout: null,
    createdAt: now,
    updatedAt: now,
  }
  const audit = {
    who,
    action: 'route-register',
    from: null,
    to: { canary },
    why: `announced by proxy ${proxy}`,
    extra: { proxy },
  }
  return { next, previousWeight: canary, audit, notices: [] }
}

/** `hand-off: v2 … is now the stable; stable v1 (…) → v2 (…), canary v2 (…) → v3 (…); canary weight 100% → 0%; announced by proxy X`. */
function releaseWhy(
  from: ReleasePair | null,
  to: ReleasePair,
  weights: { from: number; to: number },
  proxy: string,
  handoff: boolean,
): string {
  const side = (name: string, a: UpstreamInfo | null, b: UpstreamInfo | null) =>
    sameUpstream(a, b) ? [] : [`${name} ${describeUpstream(a)} → ${describeUpstream(b)}`]
  const sides = [
    ...side('stable', from?.stable ?? null, to.stable),
    ...side('canary', from?.canary ?? null, to.canary),
  ].join(', ')
  const lead = handoff
    ? `hand-off: ${to.stable.release}, the canary at ${weights.from}%, is now the stable`
    : 'new release pair'
  return `${lead}; ${sides}; canary weight ${weights.from}% → ${weights.to}%; announced by proxy ${proxy}`
}
