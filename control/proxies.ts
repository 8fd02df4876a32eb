/**
 * The proxies connected over the wire protocol (config/wire.ts): what each serves, the revision it has
 * applied, when it was last heard from, and its pending long-poll watches. Kept in memory only: after a
 * control restart proxies register again (their watch gets 404 unknown_proxy, or a refused connection).
 */
import type { AnnouncedRoute, ReportRequest } from '../config/wire.ts'
import { pairOf, type Releases, samePair, servedPair } from './release.ts'

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
}

interface Watcher {
  readonly after: number
  readonly resolve: (revision: number | null) => void
  readonly timer: NodeJS.Timeout
}

/** Proxies not heard from for this long are forgotten (after being shown as not live). */
const FORGET_MS = 10 * 60_000

export class ProxyRegistry {
  private readonly proxies = new Map<string, ProxyEntry>()
  private readonly watchers = new Set<Watcher>()
  readonly liveMs: number

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
    }
    this.proxies.set(id, entry)
    this.forget(now)
    return entry
  }

  get(id: string): ProxyEntry | undefined {
    return this.proxies.get(id)
  }

  isLive(p: ProxyEntry, now: number): boolean {
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
    for (const p of this.proxies.values()) {
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
    let live = 0
    let inSync = 0
    for (const p of this.proxies.values()) {
      if (!this.isLive(p, now)) continue
      live++
      if (p.appliedRevision >= revision) inSync++
    }
    return { known: this.proxies.size, live, inSync }
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
    return [...this.proxies.values()].map((p) => ({
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
    }))
  }

  /** Reports of live proxies for a route: the judge's input. */
  reports(route: string, now: number): ReportRequest['routes'][string][] {
    const out: ReportRequest['routes'][string][] = []
    for (const p of this.proxies.values()) {
      const r = p.lastReport?.routes[route]
      if (r !== undefined && this.isLive(p, now)) out.push(r)
    }
    return out
  }

  private forget(now: number): void {
    for (const [id, p] of this.proxies)
      if (p.watching === 0 && now - p.lastSeen > FORGET_MS) this.proxies.delete(id)
  }
}
