/**
 * The proxy side of the wire protocol (config/wire.ts), as control serves it: registration (a route
 * control does not know yet is adopted with the weight the proxy announced; from then on control is its
 * source of truth), the weights a proxy follows, and acks/NACKs, which may let a rollout step count as
 * applied.
 */
import type { Logger } from 'pino'
import type {
  AckRequest,
  RegisterRequest,
  RegisterResponse,
  ReportRequest,
  RouteWeights,
} from '../config/wire.ts'
import type { AnalysisBook } from './analysis.ts'
import type { Identity } from './auth.ts'
import type { RolloutClock } from './clock.ts'
import type { Change, Engine } from './engine.ts'
import { ApiError } from './errors.ts'
import type { EventHub } from './events.ts'
import type { ProxyEntry, ProxyRegistry } from './proxies.ts'
import { isActive } from './rollout.ts'
import type { RouteRecord, UpstreamInfo } from './store.ts'

export interface LinkDeps {
  readonly engine: Engine
  readonly proxies: ProxyRegistry
  readonly events: EventHub
  readonly clock: RolloutClock
  readonly log: Logger
  /** Fed every report (absent in tests that judge otherwise). */
  readonly analysis?: AnalysisBook
}

export class ProxyLink {
  private readonly engine: Engine
  private readonly proxies: ProxyRegistry
  private readonly events: EventHub
  private readonly clock: RolloutClock
  private readonly log: Logger
  private readonly analysis: AnalysisBook | null

  constructor(deps: LinkDeps) {
    this.engine = deps.engine
    this.proxies = deps.proxies
    this.events = deps.events
    this.clock = deps.clock
    this.log = deps.log
    this.analysis = deps.analysis ?? null
  }

  /** A proxy's per-second report: the judge's evidence, the harm account, and any fuse it tripped. */
  report(p: ProxyEntry, report: ReportRequest): void {
    const now = Date.now()
    p.lastReport = report
    p.lastReportAt = now
    p.lastSeen = now
    const routes = this.engine.state.routes
    let judge = false
    for (const [name, rep] of Object.entries(report.routes)) {
      const r = Object.hasOwn(routes, name) ? routes[name] : undefined
      if (r === undefined) continue
      this.analysis?.feed(name, r.rollout, rep, p.id)
      if (rep.fuse !== undefined) this.clock.fuse(name, rep.fuse, p.id)
      else if (isActive(r.rollout) && r.rollout.plan.analysis.enabled) judge = true
    }
    // New evidence is judged at once, not at the next tick: a bad canary is rolled back sooner.
    if (judge) this.clock.tick()
  }

  /** A proxy registers: routes it announces that control does not know are adopted with their weight. */
  register(req: RegisterRequest, who: Identity): Promise<RegisterResponse> {
    return this.engine.queue(async () => {
      const now = Date.now()
      const applied = req.appliedRevision <= this.engine.state.revision ? req.appliedRevision : 0
      this.proxies.register(req.id, req.routes, applied, who.name, now)
      const revision = this.engine.state.revision + 1
      const changes: Change[] = []
      const aborts: { name: string; why: string }[] = []
      for (const a of req.routes) {
        const stable: UpstreamInfo = a.stable
        const canaryUpstream: UpstreamInfo | null = a.canary
        const shadowUpstream: UpstreamInfo | null = a.shadow ?? null
        const r = this.engine.state.routes[a.name]
        if (r === undefined) {
          const canary = canaryUpstream === null ? 0 : a.canaryWeight
          const next: RouteRecord = {
            name: a.name,
            version: 1,
            revision,
            canary,
            shadow: null,
            stable,
            canaryUpstream,
            shadowUpstream,
            canaryFromShadow: false,
            rollout: null,
            createdAt: now,
            updatedAt: now,
          }
          const audit = {
            who: who.name,
            role: who.role,
            action: 'route-register',
            route: a.name,
            from: null,
            to: { canary },
            why: `announced by proxy ${req.id}`,
          }
          changes.push({ next, previousWeight: canary, audit, notices: [] })
        } else {
          // A canary promoted from the shadow stays so while proxies announce that same shadow (they
          // serve it as the canary, whatever canary their file has). A different shadow, or none, means
          // the configs moved on: the release put into canary or stable, or a new release to mirror (not
          // to serve unvetted). The flag then ends and the announced canary counts again, as it does for
          // any route; a weight above 0 with none is NACKed by the proxies, which holds a rollout step.
          const fromShadow =
            r.canaryFromShadow && shadowUpstream !== null && same(r.shadowUpstream, shadowUpstream)
          const canary = fromShadow ? shadowUpstream : canaryUpstream
          const patch = { stable, canaryUpstream: canary, shadowUpstream, canaryFromShadow: fromShadow }
          if (fromShadow !== r.canaryFromShadow) {
            // The proxies serve another canary from now on: a versioned, audited change of the route.
            const why = `proxy ${req.id} announced ${shadowUpstream === null ? 'no shadow' : 'another shadow'}: the canary is its announced one again`
            changes.push({
              next: this.engine.bump(r, patch, revision, now),
              previousWeight: r.canary,
              audit: {
                who: who.name,
                role: who.role,
                action: 'canary-from-shadow-end',
                route: a.name,
                from: { canaryFromShadow: true, canary: r.canaryUpstream },
                to: { canaryFromShadow: false, canary },
                why,
              },
              notices: [],
            })
            if (isActive(r.rollout)) aborts.push({ name: a.name, why })
          } else if (
            !same(r.stable, stable) ||
            !same(r.canaryUpstream, canary) ||
            !same(r.shadowUpstream, shadowUpstream)
          ) {
            changes.push({ next: { ...r, ...patch }, previousWeight: r.canary, audit: null, notices: [] })
          }
        }
      }
      if (changes.length > 0) await this.engine.commit(changes, revision)
      // A rollout judged on the promoted shadow does not go on with another release as its canary.
      for (const { name, why } of aborts)
        await this.engine.abortInQueue(this.engine.state.routes[name]!, who, why)
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

  /** What a proxy follows: the revision and the weights of the routes it announced. */
  weightsFor(id: string): RegisterResponse {
    const p = this.proxies.get(id)
    const routes: Record<string, RouteWeights> = {}
    for (const a of p?.routes ?? []) {
      const r = this.engine.state.routes[a.name]
      if (r === undefined) continue
      const weights: { version: number; canary: number; shadow?: number; canaryFromShadow?: true } = {
        version: r.version,
        canary: r.canary,
      }
      // No shadow percent yet: the proxy keeps its file's (and older proxies see the message they know).
      if (r.shadow !== null) weights.shadow = r.shadow
      // Only to a proxy that announced the promoted shadow: one with another shadow must not serve that
      // release to users, and every proxy that announces a shadow is assumed to know the flag.
      if (r.canaryFromShadow && a.shadow && same(a.shadow, r.shadowUpstream)) weights.canaryFromShadow = true
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
    p.lastSeen = Date.now()
    if (a.error === null) {
      p.appliedRevision = Math.max(p.appliedRevision, a.revision)
      p.lastError = null
    } else {
      p.lastError = a.error.slice(0, 1000)
      this.log.warn({ proxy: p.id, revision: a.revision, error: p.lastError }, 'proxy refused a revision')
    }
    this.events.publish('proxy', {
      kind: a.error === null ? 'ack' : 'nack',
      id: p.id,
      revision: a.revision,
      error: a.error,
    })
    this.clock.tick()
  }
}

function same(a: UpstreamInfo | null, b: UpstreamInfo | null): boolean {
  return a === b || (a !== null && b !== null && a.url === b.url && a.release === b.release)
}
