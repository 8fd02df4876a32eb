/**
 * analysis.fallback: a canary attempt that fails (an error status, or no answer) before any of it
 * reached the user is sent again to stable, which answers instead. Only requests that may be sent twice:
 * an idempotent method, or one carrying the route's idempotency key; a body only when its length is
 * known and small (it is read and kept first). A tester who forced the canary gets its failure.
 */
import type { ProxyErrorCode } from '../errors.ts'
import type { RequestHead } from '../listen/headers.ts'
import type { Fallback as FallbackConfig } from '../routes/table.ts'
import type { Exchange } from './exchange.ts'
import type { Chain, ChainHandler } from './handler.ts'

export class Fallback implements ChainHandler {
  onRequest(ex: Exchange, head: RequestHead, chain: Chain, next: number): boolean {
    const route = ex.route
    const fallback = route.fallback!
    if (ex.backend === route.stable || ex.forced || !retryable(fallback, ex.method, head)) return true
    if (!head.hasBody) {
      ex.fallback = true
      return true
    }
    // A mirrored body is teed as it streams, so a route that mirrors retries only bodiless requests.
    if (route.shadow !== null && route.shadow.threshold !== 0) return true
    const length = Number(head.get('content-length'))
    if (!(length <= fallback.maxBodyBytes)) return true
    ex.fallback = true
    keepBody(ex, head, chain, next, length)
    return false
  }

  onHead(ex: Exchange, status: number): boolean {
    return !(ex.fallback && ex.route.errorStatus[status] === 1 && retry(ex))
  }

  onError(ex: Exchange, _err: Error, _code: ProxyErrorCode): boolean {
    return !(ex.fallback && !ex.answered && retry(ex))
  }
}

/** Read the (small, known-length) body, keep it for the retry, then send the request on. */
function keepBody(ex: Exchange, head: RequestHead, chain: Chain, next: number, length: number): void {
  const req = ex.body as NodeJS.ReadableStream
  const chunks: Buffer[] = []
  let size = 0
  req.on('data', (chunk: Buffer) => {
    size += chunk.length
    if (size <= length) chunks.push(chunk)
  })
  req.on('end', () => {
    if (ex.done) return
    ex.body = Buffer.concat(chunks, Math.min(size, length))
    chain.request(ex, head, next)
  })
}

/** A failed canary attempt may be sent again to stable: idempotent, or keyed. */
function retryable(fallback: FallbackConfig, method: string, head: RequestHead): boolean {
  if (fallback.methods.has(method)) return true
  return fallback.idempotencyKey !== null && head.get(fallback.idempotencyKey) !== undefined
}

/**
 * Send the failed attempt's request to stable, which answers the user instead. False when that cannot
 * be done (the client left, stable is ejected or full): the failure is answered.
 */
function retry(failed: Exchange): boolean {
  const route = failed.route
  const stable = route.stable
  const upstream = stable.upstream
  if (failed.gone || upstream.isEjected() || upstream.inflight >= upstream.limit) return false
  if (!route.preserveHost) failed.head.replaceHost(upstream.host)
  // Counted before the failed attempt finishes, so the proxy never looks idle between the two.
  const ex = failed.again(stable)
  ex.rescue = failed.backend
  failed.retried = true
  // The trace follows the user's answer: the span moves to this attempt (the trace marks it retried).
  ex.span = failed.span
  failed.span = null
  // The shadow is compared with what the user gets; the failed attempt had no answer to compare.
  const mirror = failed.mirror
  if (mirror !== null) {
    failed.mirror = null
    mirror.primaryEnd(false)
  }
  failed.finish()
  ex.chain.send(ex)
  return true
}
