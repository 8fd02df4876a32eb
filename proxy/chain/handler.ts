/**
 * A route's handler chain: the small handlers a proxied request passes through, composed once per
 * snapshot (routes/compile.ts), as undici composes interceptors. A route without a feature has no
 * handler for it, and a hook no handler has is `null`: the request pays for what the route uses.
 *
 * Order, outermost first: health → outcome → fallback → mirror → trace → the upstream client (`send`).
 * The request goes down the list (`onRequest`), the answer's events come back through it (`onHead`,
 * `onData`, `onError`, `onDone`) in the same order, so health sees every attempt first and a handler
 * that takes an answer over (the fallback retrying on stable) keeps it from those after it.
 * Per-request state lives on the exchange; handlers are stateless and shared by the routes of a table.
 */
import type { ProxyErrorCode } from '../errors.ts'
import type { RequestHead } from '../listen/headers.ts'
import type { Exchange } from './exchange.ts'

export type UpstreamFields = Record<string, string | string[] | undefined>

export interface ChainHandler {
  /**
   * Before the request is sent. False: this handler sends it later itself, with `chain.request(ex,
   * head, next)` (the fallback reads a small body first).
   */
  onRequest?(ex: Exchange, head: RequestHead, chain: Chain, next: number): boolean
  /** The request was handed to the upstream client. */
  onSent?(ex: Exchange): void
  /** The upstream's final answer head. False: this handler took the answer over; it is not written. */
  onHead?(ex: Exchange, status: number, fields: UpstreamFields): boolean
  onData?(ex: Exchange, chunk: Buffer): void
  /** The attempt failed before its answer was whole. False: this handler took the failure over. */
  onError?(ex: Exchange, err: Error, code: ProxyErrorCode): boolean
  /** The attempt ended, whichever way: once per exchange. */
  onDone?(ex: Exchange): void
}

type Hook = keyof ChainHandler

function having(handlers: readonly ChainHandler[], hook: Hook): readonly ChainHandler[] | null {
  const list = handlers.filter((h) => h[hook] !== undefined)
  return list.length === 0 ? null : Object.freeze(list)
}

export class Chain {
  readonly handlers: readonly ChainHandler[]
  readonly #request: readonly ChainHandler[] | null
  readonly #sent: readonly ChainHandler[] | null
  readonly #head: readonly ChainHandler[] | null
  readonly #data: readonly ChainHandler[] | null
  readonly #error: readonly ChainHandler[] | null
  readonly #done: readonly ChainHandler[] | null

  constructor(handlers: readonly ChainHandler[]) {
    this.handlers = Object.freeze([...handlers])
    this.#request = having(handlers, 'onRequest')
    this.#sent = having(handlers, 'onSent')
    this.#head = having(handlers, 'onHead')
    this.#data = having(handlers, 'onData')
    this.#error = having(handlers, 'onError')
    this.#done = having(handlers, 'onDone')
    Object.freeze(this)
  }

  // Indexed loops, here and below: a for-of allocates an iterator and a result per step wherever V8 runs
  // the caller unoptimised (bench/alloc.ts charged ~190 B/request to them).

  /** Run the request hooks from `from`, then send the request upstream. */
  request(ex: Exchange, head: RequestHead, from = 0): void {
    const list = this.#request
    if (list !== null) {
      for (let i = from; i < list.length; i++) if (!list[i]!.onRequest!(ex, head, this, i + 1)) return
    }
    this.send(ex)
  }

  /** The upstream client: dispatch the exchange on its backend's pool (no request hook runs). */
  send(ex: Exchange): void {
    ex.backend.upstream.pool.dispatch(ex.dispatchOptions(), ex)
    const list = this.#sent
    if (list !== null) for (let i = 0; i < list.length; i++) list[i]!.onSent!(ex)
  }

  head(ex: Exchange, status: number, fields: UpstreamFields): boolean {
    const list = this.#head
    if (list !== null)
      for (let i = 0; i < list.length; i++) if (!list[i]!.onHead!(ex, status, fields)) return false
    return true
  }

  data(ex: Exchange, chunk: Buffer): void {
    const list = this.#data
    if (list !== null) for (let i = 0; i < list.length; i++) list[i]!.onData!(ex, chunk)
  }

  error(ex: Exchange, err: Error, code: ProxyErrorCode): boolean {
    const list = this.#error
    if (list !== null)
      for (let i = 0; i < list.length; i++) if (!list[i]!.onError!(ex, err, code)) return false
    return true
  }

  done(ex: Exchange): void {
    const list = this.#done
    if (list !== null) for (let i = 0; i < list.length; i++) list[i]!.onDone!(ex)
  }
}
