/**
 * The proxies connected over the wire protocol (config/wire.ts): what each serves, the revision it has
 * applied, when it was last heard from, and its pending long-poll watches. Kept in memory: after a
 * control restart proxies register again (their watch gets 404 unknown_proxy, or a refused connection).
 * With several replicas (etcd) every replica also holds the proxies of the others, as their records in
 * etcd say (control/proxy-book.ts): each replica writes only its own record of each of its proxies, and
 * says whether it is live. A proxy that moved has a record from each replica it talked to until the
 * old one forgets it; one stands for it (`best`): a live one first, then the one with the newest
 * applied revision (a proxy's applied revision only grows), then the newest registration.
 */
import type { AnnouncedRoute, ReportRequest } from '../config/wire.ts'
import { pairOf, type Releases, samePair, servedPair } from './release.ts'
import type { ProxyRecord } from './state-schema.ts'

export interface ProxyEntry {
  readonly id: string
  /** Name of the token it authenticated with. */
  who: string
  routes: readonly AnnouncedRoute[]
  appliedRevision: number
  /** The NACK of the last revision it refused, or null. */
  lastError: string | null
  registeredAt: number
  lastSeen: number
  lastReportAt: number | null
  lastReport: ReportRequest | null
  watching: number
  /** The replica it talks to, from its etcd record; null: this one. */
  replica: string | null
  /** Another replica's proxy: live as that replica last said. This one's: live as last written. */
  live: boolean
}

export interface ProxyView {
  id: string
  who: string
  routes: string[]
  appliedRevision: number
  lastError: string | null
  registeredAt: string
  lastSeen: string
  lastReportAt: string | null
  live: boolean
  watching: boolean
  /** etcd: the control replica it talks to (null: the one answering). */
  replica: string | null
}

interface Watcher {
  readonly after: number
  readonly resolve: (revision: number | null) => void
  readonly timer: NodeJS.Timeout
}

/** Proxies not heard from for this long are forgotten (after being shown as not live). */
const FORGET_MS = 10 * 60_000

export class ProxyRegistry {
  /** This replica's own proxies. */
  private readonly proxies = new Map<string, ProxyEntry>()
  /** Other replicas' records, by proxy id, then by replica. */
  private readonly records = new Map<string, Map<string, ProxyEntry>>()
  private readonly watchers = new Set<Watcher>()
  readonly liveMs: number
  /**
   * Told of every change of one of this replica's proxies that its etcd record must show (registered,
   * acked, refused, live or not), and of one forgotten (`null` record). Null: no etcd.
   */
  changed: ((p: ProxyEntry) => void) | null = null
  forgotten: ((id: string) => void) | null = null
  /** False until every other replica's record has been read (etcd): the clock counts no step before. */
  ready = true

  constructor(liveMs: number) {
    this.liveMs = liveMs
  }

  register(
    id: string,
    routes: readonly AnnouncedRoute[],
    applied: number,
    who: string,
    now: number,
  ): ProxyEntry {
    // Updated in place: a watch still pending on this proxy counts down the same entry.
    const old = this.proxies.get(id)
    if (old !== undefined) {
      old.who = who
      old.routes = routes
      old.appliedRevision = applied
      old.lastError = null
      old.registeredAt = now
      old.lastSeen = now
      old.live = true
      this.changed?.(old)
      return old
    }
    const entry: ProxyEntry = {
      id,
      who,
      routes,
      appliedRevision: applied,
      lastError: null,
      registeredAt: now,
      lastSeen: now,
      lastReportAt: null,
      lastReport: null,
      watching: 0,
      replica: null,
      live: true,
    }
    this.proxies.set(id, entry)
    this.changed?.(entry)
    this.forget(now)
    return entry
  }

  /** This replica's own proxies (not the others' records). */
  own(): ProxyEntry[] {
    return [...this.proxies.values()]
  }

  /** One of this replica's proxies acked or refused a revision (link.ts changed its entry). */
  acked(p: ProxyEntry): void {
    if (p.replica === null) this.changed?.(p)
  }

  /** Another replica's record of a proxy (etcd), new or changed. */
  takeRecord(rec: ProxyRecord, now: number): void {
    let by = this.records.get(rec.id)
    if (by === undefined) this.records.set(rec.id, (by = new Map()))
    const p = by.get(rec.replica)
    if (p === undefined) {
      by.set(rec.replica, {
        id: rec.id,
        who: rec.who,
        routes: rec.routes,
        appliedRevision: rec.appliedRevision,
        lastError: rec.lastError,
        registeredAt: rec.registeredAt,
        lastSeen: now,
        lastReportAt: null,
        lastReport: null,
        watching: 0,
        replica: rec.replica,
        live: rec.live,
      })
      return
    }
    p.who = rec.who
    p.routes = rec.routes
    p.appliedRevision = rec.appliedRevision
    p.lastError = rec.lastError
    p.registeredAt = rec.registeredAt
    p.lastSeen = now
    p.live = rec.live
  }

  /** Another replica's record of a proxy went (forgotten there, or its lease ran out); whether it was here. */
  dropRecord(id: string, replica: string): boolean {
    const by = this.records.get(id)
    if (by?.delete(replica) !== true) return false
    if (by.size === 0) this.records.delete(id)
    return true
  }

  /** Replica `replica`'s record of proxy `id` (a report it forwarded goes to it). */
  record(id: string, replica: string): ProxyEntry | undefined {
    return this.records.get(id)?.get(replica)
  }

  /** [proxy id, replica] of every other replica's record. */
  recordKeys(): [string, string][] {
    const out: [string, string][] = []
    for (const [id, by] of this.records) for (const replica of by.keys()) out.push([id, replica])
    return out
  }

  /**
   * The entry that stands for proxy `id`: live first, then the newest applied revision, then the newest
   * registration. A report forwarded by another replica goes to it.
   */
  best(id: string, now: number): ProxyEntry | undefined {
    let best = this.proxies.get(id)
    const by = this.records.get(id)
    if (by !== undefined)
      for (const p of by.values()) if (best === undefined || this.#better(p, best, now)) best = p
    return best
  }

  #better(p: ProxyEntry, than: ProxyEntry, now: number): boolean {
    const live = this.isLive(p, now)
    if (live !== this.isLive(than, now)) return live
    if (p.appliedRevision !== than.appliedRevision) return p.appliedRevision > than.appliedRevision
    // Moved with the same revision applied: the newer registration (replicas' clocks decide only this).
    return p.registeredAt > than.registeredAt
  }

  /** One entry per proxy (best()), this replica's and the others'. */
  private *all(now: number): Generator<ProxyEntry> {
    for (const p of this.proxies.values()) yield this.records.has(p.id) ? this.best(p.id, now)! : p
    for (const id of this.records.keys()) if (!this.proxies.has(id)) yield this.best(id, now)!
  }

  /** This replica's proxies whose liveness changed since their records last said: written again. */
  sweep(now: number): void {
    for (const p of this.proxies.values()) {
      const live = this.isLive(p, now)
      if (live === p.live) continue
      p.live = live
      this.changed?.(p)
    }
    this.forget(now)
  }

  get(id: string): ProxyEntry | undefined {
    return this.proxies.get(id)
  }

  isLive(p: ProxyEntry, now: number): boolean {
    if (p.replica !== null) return p.live
    return p.watching > 0 || now - p.lastSeen <= this.liveMs
  }

  /**
   * Whether `p` serves route `r`'s release pair: it announced the route with the stable and canary
   * control holds. One that announces another pair (a stale config) serves the route by its own file.
   */
  serves(p: ProxyEntry, r: Releases & { readonly name: string }): boolean {
    const a = p.routes.find((x) => x.name === r.name)
    const pair = pairOf(r)
    return a !== undefined && pair !== null && samePair(servedPair(a, r), pair)
  }

  /**
   * Live proxies serving route `r`'s release pair, and how many of them have applied `revision` or
   * later; `stale` are live proxies announcing the route with another pair. They do not hold up a step
   * (their traffic is not this canary's), and the views show them.
   */
  sync(
    r: Releases & { readonly name: string },
    revision: number,
    now: number,
  ): { live: number; applied: number; lagging: string[]; stale: string[] } {
    let live = 0
    let applied = 0
    const lagging: string[] = []
    const stale: string[] = []
    for (const p of this.all(now)) {
      if (!this.isLive(p, now) || !p.routes.some((x) => x.name === r.name)) continue
      if (!this.serves(p, r)) {
        stale.push(p.id)
        continue
      }
      live++
      if (p.appliedRevision >= revision) applied++
      else lagging.push(p.id)
    }
    return { live, applied, lagging, stale }
  }

  /** For the metrics: proxies known, live, and live with `revision` (control's current) applied. */
  counts(revision: number, now: number): { known: number; live: number; inSync: number } {
    let known = 0
    let live = 0
    let inSync = 0
    for (const p of this.all(now)) {
      known++
      if (!this.isLive(p, now)) continue
      live++
      if (p.appliedRevision >= revision) inSync++
    }
    return { known, live, inSync }
  }

  /** Resolves with the current revision once it is above `after`, or null after `waitMs`. */
  watch(
    p: ProxyEntry,
    after: number,
    current: number,
    waitMs: number,
    closed: Promise<void>,
  ): Promise<number | null> {
    if (current > after) return Promise.resolve(current)
    p.watching++
    return new Promise((resolve) => {
      const finish = (revision: number | null) => {
        if (!this.watchers.delete(w)) return
        clearTimeout(w.timer)
        p.watching = Math.max(0, p.watching - 1)
        p.lastSeen = Date.now()
        resolve(revision)
      }
      const w: Watcher = { after, resolve: finish, timer: setTimeout(() => finish(null), waitMs) }
      this.watchers.add(w)
      void closed.then(() => finish(null))
    })
  }

  /** A new revision: answer every watch waiting for something newer than it had. */
  publish(revision: number): void {
    for (const w of [...this.watchers]) if (revision > w.after) w.resolve(revision)
  }

  /** Answer every pending watch now (shutdown): the proxies ask again and find control gone. */
  closeAll(): void {
    for (const w of [...this.watchers]) w.resolve(null)
  }

  list(now: number): ProxyView[] {
    return [...this.all(now)].map((p) => ({
      id: p.id,
      who: p.who,
      routes: p.routes.map((r) => r.name),
      appliedRevision: p.appliedRevision,
      lastError: p.lastError,
      registeredAt: new Date(p.registeredAt).toISOString(),
      lastSeen: new Date(p.lastSeen).toISOString(),
      lastReportAt: p.lastReportAt === null ? null : new Date(p.lastReportAt).toISOString(),
      live: this.isLive(p, now),
      watching: p.watching > 0,
      replica: p.replica,
    }))
  }

  /** Reports of live proxies for a route: the judge's input. */
  reports(route: string, now: number): ReportRequest['routes'][string][] {
    const out: ReportRequest['routes'][string][] = []
    for (const p of this.all(now)) {
      const r = p.lastReport?.routes[route]
      if (r !== undefined && this.isLive(p, now)) out.push(r)
    }
    return out
  }

  /** This replica's proxies not heard from for FORGET_MS (another's go when their record does). */
  private forget(now: number): void {
    for (const [id, p] of this.proxies)
      if (p.watching === 0 && now - p.lastSeen > FORGET_MS) {
        this.proxies.delete(id)
        this.forgotten?.(id)
      }
  }
}
