/**
 * Upstream connection pools, one per origin and pool settings. They outlive config snapshots: a weight
 * change or reload builds a new route table that reuses the same pools, so no connection is dropped.
 * Each upstream also carries its passive-health state (consecutive connect failures, ejection).
 *
 * The URL scheme picks the protocol: `http://` HTTP/1.1, `https://` TLS with ALPN h2 then http/1.1
 * (verified against the system CAs or the upstream's `ca`), `h2c://` cleartext HTTP/2. An HTTP/2 pool
 * multiplexes up to `streams` requests on each of its `connections`; on GOAWAY the connection's streams
 * finish and a new connection takes the next ones. `http://` and `https://` go through undici's Pool;
 * `h2c://` through node:http2 sessions (h2-client.ts), which cost less CPU per call than undici's.
 */

import type { TLSSocket } from 'node:tls'
import type { TimeoutsConfig, UpstreamConfig } from '../../config/types.ts'
import { VIA_HOP } from '../listen/headers.ts'
import { H2Pool, type UpstreamDispatcher } from './h2-client.ts'
import { buildConnector, Pool } from './undici-pool.ts'

export interface PoolSettings {
  readonly connections: number
  readonly maxPending: number
  /** Concurrent requests on one HTTP/2 connection. */
  readonly streams: number
  readonly timeouts: TimeoutsConfig
}

/** Where an upstream is and how it is verified: the config's upstream fields that make a pool. */
export type UpstreamTarget = Pick<UpstreamConfig, 'url' | 'ca' | 'serverName'>

export type UpstreamProtocol = 'http/1.1' | 'h2' | 'tls'

export class Upstream {
  /** As the config writes it (`h2c://` included): in logs, metrics and fuse reports. */
  readonly origin: string
  /** Host header value when the route does not preserve the client's. */
  readonly host: string
  /** `tls`: h2 or http/1.1, as the upstream's ALPN answer picks per connection. */
  readonly protocol: UpstreamProtocol
  /**
   * veer's Via hop on this upstream's answers, with the version they come in (RFC 9110 7.6.3): `2 veer`
   * from h2c://, `1.1 veer` from http://; from https:// as the latest connection's ALPN answer picked.
   */
  via: string
  readonly pool: UpstreamDispatcher
  readonly limit: number
  inflight = 0
  failures = 0
  /** 0 while healthy; else the Date.now() until which the upstream gets no traffic. */
  ejectedUntil = 0
  /** A half-open probe is in flight (see `admit`): droppable traffic waits for its outcome. */
  probing = false

  /** `ca`: the PEM text of `target.ca`, read by `readUpstreamTrust`. */
  constructor(target: UpstreamTarget, settings: PoolSettings, ca: string | undefined) {
    const url = new URL(target.url)
    this.origin = target.url
    this.host = url.host
    const h2c = url.protocol === 'h2c:'
    this.protocol = h2c ? 'h2' : url.protocol === 'https:' ? 'tls' : 'http/1.1'
    this.via = VIA_HOP[h2c ? '2' : '1.1']
    this.limit =
      settings.connections * (this.protocol === 'http/1.1' ? 1 : settings.streams) + settings.maxPending
    const t = settings.timeouts
    if (h2c) {
      this.pool = new H2Pool(url.host, {
        connections: settings.connections,
        streams: settings.streams,
        connectTimeout: t.connect,
        headersTimeout: t.headers,
        bodyTimeout: t.body,
        idleTimeout: t.idle,
      })
      return
    }
    const options: Pool.Options = {
      connections: settings.connections,
      pipelining: 1,
      connectTimeout: t.connect,
      headersTimeout: t.headers,
      bodyTimeout: t.body,
      keepAliveTimeout: t.idle,
      keepAliveMaxTimeout: Math.max(t.idle, 600_000),
      allowH2: this.protocol !== 'http/1.1',
      ...(this.protocol === 'http/1.1' ? {} : { h2Options: { maxConcurrentStreams: settings.streams } }),
      ...(this.protocol === 'tls'
        ? {
            connect: this.#alpnConnector({
              allowH2: true,
              preferH2: true,
              rejectUnauthorized: true,
              timeout: t.connect,
              ...(ca === undefined ? {} : { ca }),
              ...(target.serverName === undefined ? {} : { servername: target.serverName }),
            }),
          }
        : {}),
    }
    this.pool = new Pool(target.url, options)
  }

  /** undici's TLS connector, noting each connection's ALPN answer for the Via hop. */
  #alpnConnector(options: buildConnector.BuildOptions): buildConnector.connector {
    const connect = buildConnector(options)
    return (opts, callback) =>
      connect(opts, (...args) => {
        // A failed connect calls back with the error alone.
        const socket = args[1] as TLSSocket | null | undefined
        if (socket) this.via = VIA_HOP[socket.alpnProtocol === 'h2' ? '2' : '1.1']
        callback(...args)
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

function keyOf(target: UpstreamTarget, s: PoolSettings, ca: string | undefined): string {
  const t = s.timeouts
  return `${target.url} ${s.connections} ${s.maxPending} ${s.streams} ${t.connect} ${t.headers} ${t.body} ${t.idle} ${target.serverName ?? ''} ${ca ?? ''}`
}

export class UpstreamPools {
  readonly #byKey = new Map<string, Upstream>()
  #trust: ReadonlyMap<string, string> = new Map()

  /** The CA files' texts for the next compiles (`readUpstreamTrust`); pools made before keep theirs. */
  useTrust(trust: ReadonlyMap<string, string>): void {
    this.#trust = trust
  }

  get(target: UpstreamTarget, settings: PoolSettings): Upstream {
    const ca = target.ca === undefined ? undefined : this.#trust.get(target.ca)
    if (target.ca !== undefined && ca === undefined)
      throw new Error(`${target.ca} was not read before compile`)
    const key = keyOf(target, settings, ca)
    let upstream = this.#byKey.get(key)
    if (!upstream) {
      upstream = new Upstream(target, settings, ca)
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
