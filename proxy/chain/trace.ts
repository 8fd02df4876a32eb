/**
 * Tracing in the chain (only when tracing is on: see ../tracing.ts): a SERVER span per request, whose
 * traceparent the upstream receives, a CLIENT child for its shadow copy, ended with the user's answer.
 */
import type { RequestHead } from '../listen/headers.ts'
import type { Tracing } from '../tracing.ts'
import type { Exchange } from './exchange.ts'
import type { ChainHandler } from './handler.ts'

export class Trace implements ChainHandler {
  readonly #tracing: Tracing

  constructor(tracing: Tracing) {
    this.#tracing = tracing
    Object.freeze(this)
  }

  onRequest(ex: Exchange, head: RequestHead): boolean {
    this.#tracing.start(ex, head)
    if (ex.mirror !== null) this.#tracing.startShadow(ex, ex.mirror)
    return true
  }

  onDone(ex: Exchange): void {
    // A failed canary attempt that fell back handed its span to the stable attempt (fallback.ts).
    if (ex.span !== null) this.#tracing.end(ex, ex.outcomeStatus)
  }
}
