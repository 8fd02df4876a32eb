/**
 * The outcome of every attempt, recorded once when it ends: the version's metrics, its analysis window
 * (errors, business failures, harm and rescues), the canary's fuse, and the access line.
 */
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import { ERROR, FAILED, HARMED, SAVED } from '../analysis/window.ts'
import { pathOf } from '../listen/headers.ts'
import { type LineSink, requestLine } from '../log.ts'
import type { CompiledRoute } from '../routes/table.ts'
import type { Exchange } from './exchange.ts'
import { GRPC_CODE_FIELD, GRPC_CODES } from './grpc.ts'
import type { ChainHandler, UpstreamFields } from './handler.ts'

const RETRIED_EXTRA = ',"retried":"stable"'

/** Called when a route's fuse trips (main.ts zeroes the canary and tells control). */
export type FuseTrip = (route: string, canary: { url: string; release: string }, reason: string) => void

export interface OutcomeSettings {
  /** Where access lines go; null when they are off (log.access false, or level above info). */
  readonly sink: LineSink | null
  /** log.accessSample: share of successful requests that get a line (failures always do). */
  readonly sample: number
  readonly log: Logger
  readonly onFuse: FuseTrip
}

export class Outcome implements ChainHandler {
  readonly #sink: LineSink | null
  readonly #sample: number
  readonly #log: Logger
  readonly #onFuse: FuseTrip

  constructor(s: OutcomeSettings) {
    this.#sink = s.sink
    this.#sample = s.sample
    this.#log = s.log
    this.#onFuse = s.onFuse
    Object.freeze(this)
  }

  onHead(ex: Exchange, _status: number, fields: UpstreamFields): boolean {
    const outcome = ex.route.outcomeHeader
    if (outcome !== null && fields[outcome] === 'fail') ex.outcomeFailed = true
    return true
  }

  onDone(ex: Exchange): void {
    const end = performance.now()
    const seconds = (end - ex.start) / 1000
    const status = ex.outcomeStatus
    const backend = ex.backend
    const state = backend.state
    const grpc = ex.grpc
    state.metrics.record(status, seconds, grpc)
    // A client that left before any answer says nothing about the upstream: no error, no success.
    const unjudged = ex.error === 'client_closed' && status === 0
    const route = ex.route
    const error =
      !unjudged &&
      (status === 0 || route.errorStatus[status] === 1 || (grpc > 0 && route.grpcErrors[grpc] === 1))
    let flags = error ? ERROR : 0
    if (ex.outcomeFailed) flags |= FAILED
    if (backend.version === 'canary' && !unjudged && !ex.forced) {
      if (!error) state.streak = 0
      else {
        if (!ex.retried) flags |= HARMED
        // `>=`: errors of requests still in flight on the old table may pass N before the swap.
        if (route.fuseAfter !== 0 && ++state.streak >= route.fuseAfter && route.fuse === null) {
          state.streak = 0
          this.#trip(route, status, ex.error, grpc)
        }
      }
    }
    // Counted in the slot it ends in, so a slot that has passed is final when control/link.ts reports it.
    // A rescue stays out of stable's window (it would add the canary's failing requests to stable's
    // sample); it counts for the canary it rescued, as saved or, when stable failed too, harmed.
    if (ex.rescue === null) state.window.record(end, seconds * 1000, flags)
    else if (!unjudged) ex.rescue.state.window.mark(end, error ? HARMED : SAVED)
    const sink = this.#sink
    if (sink !== null && (ex.error !== null || this.#sample >= 1 || Math.random() < this.#sample)) {
      const failed = ex.error === null ? ex.protocol : `${ex.protocol},"error":"${ex.error}"`
      const called = grpc < 0 ? failed : failed + GRPC_CODE_FIELD[grpc]
      const extra = ex.retried ? called + RETRIED_EXTRA : called
      sink.write(requestLine('access', backend.lineFields, ex.method, pathOf(ex.url), status, seconds, extra))
    }
  }

  #trip(route: CompiledRoute, status: number, error: string | null, grpc: number): void {
    const last =
      grpc > 0 ? `grpc-status ${GRPC_CODES[grpc]}` : status === 0 ? (error ?? 'no answer') : String(status)
    this.#log.warn({ route: route.name, after: route.fuseAfter, last }, 'canary fuse tripped')
    this.#onFuse(
      route.name,
      route.config.canary!,
      `${route.fuseAfter} consecutive canary errors (last: ${last})`,
    )
  }
}
