/**
 * analysis.fallback: a canary attempt that fails (an error status, or no answer) before any of it
 * reached the user is sent again to stable, which answers instead. Only requests that may be sent twice:
 * an idempotent method, or one carrying the route's idempotency key; a body only when its length is
 * known and small (it is read and kept first). A tester who forced the canary gets its failure.
 *
 * A body that is not kept (its length unknown, as a gRPC call's over HTTP/2, or past maxBodyBytes) is
 * streamed to the canary, and its request is retried only when the canary could not be connected: then
 * no byte of it was read, and stable gets the same unread stream (no size limit, streams included).
 * A gRPC call is retried only so, whatever its method: a call that reached the canary may have had
 * effects, so its grpc-status (UNAVAILABLE included) and any failure after connecting are the answer.
 */
import { isConnectFailure, type ProxyErrorCode } from '../errors.ts'
import type { RequestHead } from '../listen/headers.ts'
import type { Fallback as FallbackConfig } from '../routes/table.ts'
import { type Exchange, untouched } from './exchange.ts'
import { grpcCodeFor } from './grpc.ts'
import type { Chain, ChainHandler } from './handler.ts'

export class Fallback implements ChainHandler {
  onRequest(ex: Exchange, head: RequestHead, chain: Chain, next: number): boolean {
    const route = ex.route
    const fallback = route.fallback!
    if (ex.backend === route.stable || ex.forced) return true
    if (!head.grpc && !retryable(fallback, ex.method, head)) return true
    if (!head.hasBody) {
      ex.fallback = true
      return true
    }
    // A mirrored body is teed as it streams, so a route that mirrors retries only bodiless requests.
    if (route.shadow !== null && route.shadow.threshold !== 0) return true
    ex.fallback = true
    const length = Number(head.get('content-length'))
    // Not kept: retried only if the canary cannot be connected (`connectOnly`).
    if (head.grpc || !(length <= fallback.maxBodyBytes)) return true
    keepBody(ex, head, chain, next, length)
    return false
  }

  onHead(ex: Exchange, status: number): boolean {
    return !(ex.fallback && !connectOnly(ex) && ex.route.errorStatus[status] === 1 && retry(ex))
  }

  onError(ex: Exchange, err: Error, code: ProxyErrorCode): boolean {
    if (!ex.fallback || ex.answered) return true
    // Checked here, not assumed: the failed attempt must have read none of a streamed body.
    if (connectOnly(ex) && !(isConnectFailure(code, err) && unread(ex))) return true
    return !retry(ex, code)
  }
}

/** A gRPC call, or a body streamed unkept: retried only when the canary could not be connected. */
function connectOnly(ex: Exchange): boolean {
  return ex.head.grpc || (ex.body !== null && !(ex.body instanceof Buffer))
}

function unread(ex: Exchange): boolean {
  const body = ex.body
  return body === null || Buffer.isBuffer(body) || untouched(body)
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
function retry(failed: Exchange, code: ProxyErrorCode | null = null): boolean {
  const route = failed.route
  const stable = route.stable
  const upstream = stable.upstream
  if (failed.gone || upstream.isEjected() || upstream.inflight >= upstream.limit) return false
  if (!route.preserveHost) failed.head.replaceHost(upstream.host)
  // Counted before the failed attempt finishes, so the proxy never looks idle between the two.
  const ex = failed.again(stable)
  ex.rescue = failed.backend
  failed.retried = true
  // A gRPC attempt's status is the one the proxy would have answered, as when nothing rescues it.
  if (code !== null && failed.head.grpc) failed.grpc = grpcCodeFor(code)
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
