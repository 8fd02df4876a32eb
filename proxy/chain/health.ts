/**
 * Passive health, the one place: an upstream is ejected after `ejectAfter` consecutive connect
 * failures for `ejectForMs`, then tried again (split/pick.ts skips it meanwhile; a shadow lets one
 * probe through, see `Upstream.admit`). Every attempt tells it: a primary request, a fallback, a
 * WebSocket upgrade (a 101 is a connection made) and a shadow copy.
 */
import type { ProxyErrorCode } from '../errors.ts'
import { isConnectFailure } from '../errors.ts'
import type { Upstream } from '../upstream/pools.ts'
import type { Exchange } from './exchange.ts'
import type { ChainHandler } from './handler.ts'

export class PassiveHealth implements ChainHandler {
  readonly ejectAfter: number
  readonly ejectForMs: number

  constructor(ejectAfter: number, ejectForMs: number) {
    this.ejectAfter = ejectAfter
    this.ejectForMs = ejectForMs
    Object.freeze(this)
  }

  /**
   * What one attempt says of its upstream. `err` null: it answered, so a connection was made. A connect
   * failure counts towards ejection. `cut`: the proxy ended it (the client left, a shadow body went past
   * its limit), which tells neither; any other failure came after a connection, which clears the streak.
   */
  observe(upstream: Upstream, err: Error | null, code: ProxyErrorCode | null, cut: boolean): void {
    if (err !== null && isConnectFailure(code!, err)) upstream.connectFailed(this.ejectAfter, this.ejectForMs)
    else if (cut) upstream.probing = false
    else if (upstream.failures !== 0 || upstream.probing) upstream.connectSucceeded()
  }

  onHead(ex: Exchange): boolean {
    this.observe(ex.backend.upstream, null, null, false)
    return true
  }

  onError(ex: Exchange, err: Error, code: ProxyErrorCode): boolean {
    this.observe(ex.backend.upstream, err, code, false)
    return true
  }
}
