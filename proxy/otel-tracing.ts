/**
 * The spans of tracing.ts, in a module of their own: @opentelemetry/api (51 modules, 0.7 MiB of anonymous
 * memory at start) is loaded only when tracing is on (README "Memory").
 */
import {
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api'
import type { Exchange } from './chain/exchange.ts'
import { pathOf, type RequestHead } from './listen/headers.ts'
import type { Mirror } from './shadow/mirror.ts'
import type { Tracing } from './tracing.ts'

type Carrier = { traceparent?: string; tracestate?: string }
const getter = {
  keys: (c: Carrier) => Object.keys(c),
  get: (c: Carrier, key: string) => c[key as keyof Carrier],
}

export class OtelTracing implements Tracing {
  readonly #tracer: Tracer
  readonly shutdown: () => Promise<void>

  constructor(tracer: Tracer, shutdown: () => Promise<void>) {
    this.#tracer = tracer
    this.shutdown = shutdown
  }

  start(ex: Exchange, head: RequestHead): void {
    // Most requests are not sampled: they pay for a span id and a traceparent, nothing more (no
    // attribute objects, no propagation carrier objects, no context allocation when there is no parent).
    let parent = ROOT_CONTEXT
    if (head.traceparentAt !== -1) {
      const incoming: Carrier = { traceparent: head.headers[head.traceparentAt + 1] }
      if (head.tracestateAt !== -1) incoming.tracestate = head.headers[head.tracestateAt + 1]
      parent = propagation.extract(ROOT_CONTEXT, incoming, getter)
    }
    const span = this.#tracer.startSpan(`${ex.method} ${ex.route.name}`, SERVER, parent)
    if (span.isRecording()) {
      const b = ex.backend
      span.setAttributes({
        'veer.route': ex.route.name,
        'veer.version': b.version,
        'veer.release': b.release,
        'http.request.method': ex.method,
        'url.path': pathOf(ex.url),
        'server.address': b.upstream.host,
      })
    }
    // W3C trace context (https://www.w3.org/TR/trace-context/#traceparent-header), written directly.
    const sc = span.spanContext()
    const flags = sc.traceFlags & 1 ? '01' : '00'
    replace(head, 'traceparent', head.traceparentAt, `00-${sc.traceId}-${sc.spanId}-${flags}`)
    const state = sc.traceState?.serialize()
    if (state !== undefined || head.tracestateAt !== -1) replace(head, 'tracestate', head.tracestateAt, state)
    ex.span = span
  }

  startShadow(ex: Exchange, m: Mirror): void {
    const primary = ex.span as Span | null
    // Unsampled requests get no shadow span either (nor any cost beyond this check).
    if (primary === null || !primary.isRecording()) return
    // A CLIENT child of the request's span: sampled with it, in the same trace, marked as the shadow.
    const parent = trace.setSpan(ROOT_CONTEXT, primary)
    const span = this.#tracer.startSpan(`shadow ${m.method} ${m.route}`, CLIENT, parent)
    span.setAttributes({
      'veer.route': m.route,
      'veer.version': 'shadow',
      'veer.release': m.target.config.release,
      'http.request.method': m.method,
      'url.path': pathOf(m.path),
      'server.address': m.target.upstream.host,
    })
    const sc = span.spanContext()
    const value = `00-${sc.traceId}-${sc.spanId}-${sc.traceFlags & 1 ? '01' : '00'}`
    const h = m.headers
    const at = h.indexOf('traceparent')
    if (at !== -1 && at % 2 === 0) h[at + 1] = value
    else h.push('traceparent', value)
    m.span = span
    m.tracing = this
  }

  endShadow(m: Mirror, status: number, outcome: string): void {
    const span = m.span as Span | null
    if (span === null) return
    if (status !== 0) span.setAttribute('http.response.status_code', status)
    span.setAttribute('veer.shadow.outcome', outcome)
    if (outcome === 'error') span.setStatus({ code: SpanStatusCode.ERROR, message: 'shadow failed' })
    span.end()
  }

  end(ex: Exchange, status: number): void {
    const span = ex.span as Span | null
    if (span === null || !span.isRecording()) return
    const rescued = ex.rescue
    if (rescued !== null) {
      // The canary failed and stable answered the user (analysis fallback): the span tells both.
      span.setAttributes({
        'veer.retried': true,
        'veer.retried_from': rescued.release,
        'veer.version': ex.backend.version,
        'veer.release': ex.backend.release,
      })
    }
    if (status !== 0) span.setAttribute('http.response.status_code', status)
    if (ex.error !== null) span.setAttribute('veer.error', ex.error)
    if (status === 0 || status >= 500)
      span.setStatus({ code: SpanStatusCode.ERROR, message: ex.error ?? String(status) })
    span.end()
  }
}

const SERVER = { kind: SpanKind.SERVER }
const CLIENT = { kind: SpanKind.CLIENT }

function replace(head: RequestHead, name: string, at: number, value: string | undefined): void {
  if (value === undefined) {
    if (at !== -1) head.headers.splice(at, 2)
    return
  }
  if (at !== -1) head.headers[at + 1] = value
  else head.headers.push(name, value)
}
