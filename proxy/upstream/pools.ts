/**
 * Upstream connection pools, one per origin and pool settings. They outlive config snapshots: a weight
 * change or reload builds a new route table that reuses the same pools, so no connection is dropped.
 * Each upstream also carries its passive-health state (consecutive connect failures, ejection).
 */
import { Pool } from 'undici'
import type { TimeoutsConfig } from '../../config/types.ts'

export interface PoolSettings {
  readonly connections: number
  readonly maxPending: number
  readonly timeouts: TimeoutsConfig
}

export class Upstream {
  readonly origin: string
  /** Host header value when the route does not preserve the client's. */
  readonly host: string
  readonly pool: Pool
  readonly limit: number
  inflight = 0
  failures = 0
  /** 0 while healthy; else the Date.now() until which the upstream gets no traffic. */
  ejectedUntil = 0
  /** A half-open probe is in flight (see `admit`): droppable traffic waits for its outcome. */
  probing = false

  constructor(origin: string, settings: PoolSettings) {
    this.origin = origin
    this.host = new URL(origin).host
    this.limit = settings.connections + settings.maxPending
    const t = settings.timeouts
    this.pool = new Pool(origin, {
      connections: settings.connections,
      pipelining: 1,
      connectTimeout: t.connect,
      headersTimeout: t.headers,
      bodyTimeout: t.body,
      keepAliveTimeout: t.idle,
      keepAliveMaxTimeout: Math.max(t.idle, 600_000),
    })
  }

  isEjected(): boolean {
    if (this.ejectedUntil === 0) return false
    if (Date.now() < this.ejectedUntil) return true
    this.ejectedUntil = 0 // half-open: the next request tries it again
    this.failures = 0
    return false
  }

  /**
   * `isEjected` for traffic that may be dropped instead (shadow copies): false while ejected; once the
   * ejection runs out, true for one request, the probe, and false for the rest until it ends. The
   * failure count stays at the threshold meanwhile, so a failed probe ejects again at once, and a
   * connection made (`connectSucceeded`) clears it. `probing = false` ends a probe that told neither.
   */
  admit(): boolean {
    if (this.ejectedUntil !== 0) {
      if (Date.now() < this.ejectedUntil) return false
      this.ejectedUntil = 0
      this.probing = true
      return true
    }
    return !this.probing
  }

  connectFailed(ejectAfter: number, ejectForMs: number): void {
    if (++this.failures >= ejectAfter) this.ejectedUntil = Date.now() + ejectForMs
    this.probing = false
  }

  connectSucceeded(): void {
    this.failures = 0
    this.probing = false
  }
}

function keyOf(origin: string, s: PoolSettings): string {
  const t = s.timeouts
  return `${origin} ${s.connections} ${s.maxPending} ${t.connect} ${t.headers} ${t.body} ${t.idle}`
}

export class UpstreamPools {
  readonly #byKey = new Map<string, Upstream>()

  get(origin: string, settings: PoolSettings): Upstream {
    const key = keyOf(origin, settings)
    let upstream = this.#byKey.get(key)
    if (!upstream) {
      upstream = new Upstream(origin, settings)
      this.#byKey.set(key, upstream)
    }
    return upstream
  }

  /** After a snapshot swap: close (gracefully, letting in-flight requests finish) pools no route uses. */
  retainOnly(inUse: ReadonlySet<Upstream>): void {
    for (const [key, upstream] of this.#byKey) {
      if (!inUse.has(upstream)) {
        this.#byKey.delete(key)
        upstream.pool.close().catch(() => {})
      }
    }
  }

  get size(): number {
    return this.#byKey.size
  }

  async closeAll(): Promise<void> {
    const all = [...this.#byKey.values()]
    this.#byKey.clear()
    await Promise.allSettled(all.map((u) => u.pool.close()))
  }

  destroyAll(): void {
    for (const u of this.#byKey.values()) u.pool.destroy().catch(() => {})
    this.#byKey.clear()
  }
}
