/**
 * Shadow mirroring in the chain: a sampled request gets a copy for the route's shadow (shadow/mirror.ts
 * decides, tees the body and compares), sent right after the primary so the primary is never second in
 * line, and fed the primary's answer as it streams to the client.
 */
import { pathOf, type RequestHead } from '../listen/headers.ts'
import { type LineSink, requestLine } from '../log.ts'
import { type Mirror, type MirrorHost, startMirror } from '../shadow/mirror.ts'
import type { Exchange } from './exchange.ts'
import { GRPC_CODE_FIELD } from './grpc.ts'
import type { ChainHandler, UpstreamFields } from './handler.ts'
import type { PassiveHealth } from './health.ts'

export class MirrorTee implements ChainHandler, MirrorHost {
  readonly health: PassiveHealth
  /** Where shadow lines go (as access lines: null when those are off). */
  readonly #sink: LineSink | null
  readonly #sample: number

  constructor(health: PassiveHealth, sink: LineSink | null, sample: number) {
    this.health = health
    this.#sink = sink
    this.#sample = sample
    Object.freeze(this)
  }

  onRequest(ex: Exchange, head: RequestHead): boolean {
    const m = startMirror(this, ex.route.shadow!, ex, head.headers, head.hasBody)
    if (m !== null) {
      ex.mirror = m
      if (m.primaryBody !== null) ex.body = m.primaryBody
    }
    return true
  }

  onSent(ex: Exchange): void {
    ex.mirror?.send()
  }

  onHead(ex: Exchange, status: number, fields: UpstreamFields): boolean {
    ex.mirror?.primaryStart(status, fields)
    return true
  }

  onData(ex: Exchange, chunk: Buffer): void {
    ex.mirror?.primaryData(chunk)
  }

  onDone(ex: Exchange): void {
    ex.mirror?.primaryEnd(ex.error === null)
  }

  shadowFinished(m: Mirror, status: number, outcome: string, seconds: number): void {
    if (m.span !== null) m.tracing?.endShadow(m, status, outcome)
    const sink = this.#sink
    if (sink === null || (this.#sample < 1 && outcome !== 'error' && Math.random() >= this.#sample)) return
    const g = m.grpc ? m.shadow.grpc : -1
    const extra = g < 0 ? `,"outcome":"${outcome}"` : `,"outcome":"${outcome}"${GRPC_CODE_FIELD[g]}`
    sink.write(requestLine('shadow', m.target.lineFields, m.method, pathOf(m.path), status, seconds, extra))
  }
}
