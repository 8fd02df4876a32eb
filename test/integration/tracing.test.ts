import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { request } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import { startUpstream, type Upstream } from '../helpers/upstream.ts'
import { startVeer, type VeerProcess } from '../helpers/veer.ts'

interface OtlpSpan {
  traceId: string
  spanId: string
  parentSpanId?: string
  name: string
  kind: number
  attributes: {
    key: string
    value: { stringValue?: string; intValue?: string | number; boolValue?: boolean }
  }[]
  status?: { code?: number }
}

/** A real OTLP/HTTP (JSON) receiver on loopback that keeps every span it is sent. */
async function startCollector(): Promise<{
  url: string
  spans: OtlpSpan[]
  server: Server
  waitFor: (n: number) => Promise<void>
}> {
  const spans: OtlpSpan[] = []
  let wake: (() => void) | null = null
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (d) => (body += d))
    req.on('end', () => {
      const doc = JSON.parse(body) as { resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[] }
      for (const rs of doc.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans)
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
      wake?.()
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const waitFor = async (n: number) => {
    while (spans.length < n) await new Promise<void>((r) => (wake = r))
  }
  return { url, spans, server, waitFor }
}

let veer: VeerProcess | undefined
let upstream: Upstream | undefined
let collector: Awaited<ReturnType<typeof startCollector>> | undefined

afterEach(async () => {
  await veer?.stop()
  await upstream?.close()
  collector?.server.close()
  veer = upstream = collector = undefined
})

const attr = (span: OtlpSpan, key: string) => span.attributes.find((a) => a.key === key)?.value

describe('tracing', () => {
  it('exports a span per request with route, version and release, and carries W3C context to the upstream', async () => {
    collector = await startCollector()
    upstream = await startUpstream('stable')
    veer = await startVeer(['--stable', upstream.url], {
      OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
      OTEL_BSP_SCHEDULE_DELAY: '100',
    })
    const parentTrace = '4bf92f3577b34da6a3ce929d0e0e4736'
    const parentSpan = '00f067aa0ba902b7'
    const res = await request(`${veer.url}/orders/7`, {
      headers: { traceparent: `00-${parentTrace}-${parentSpan}-01`, tracestate: 'vendor=abc' },
    })
    await res.body.dump()
    expect(res.statusCode).toBe(200)

    const seen = upstream.seen[0]!.headers
    const [, traceId, spanId, flags] = String(seen.traceparent).split('-')
    expect(traceId).toBe(parentTrace)
    expect(spanId).not.toBe(parentSpan) // the proxy's own span is the upstream's parent
    expect(flags).toBe('01')
    expect(seen.tracestate).toBe('vendor=abc')

    await collector.waitFor(1)
    const span = collector.spans[0]!
    expect(span.traceId.toLowerCase()).toBe(parentTrace)
    expect(span.parentSpanId?.toLowerCase()).toBe(parentSpan)
    expect(span.spanId.toLowerCase()).toBe(spanId)
    expect(attr(span, 'veer.route')?.stringValue).toBe('default')
    expect(attr(span, 'veer.version')?.stringValue).toBe('stable')
    expect(attr(span, 'veer.release')?.stringValue).toBe('unknown')
    expect(Number(attr(span, 'http.response.status_code')?.intValue)).toBe(200)
  })

  it('gives the shadow copy its own CLIENT span, a child of the request span, and the shadow its traceparent', async () => {
    collector = await startCollector()
    upstream = await startUpstream('stable')
    const shadow = await startUpstream('shadow')
    try {
      veer = await startVeer(['--stable', upstream.url, '--shadow', shadow.url], {
        OTEL_TRACES_EXPORTER: 'otlp',
        OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
        OTEL_BSP_SCHEDULE_DELAY: '100',
      })
      const res = await request(`${veer.url}/orders/7`)
      await res.body.dump()
      await collector.waitFor(2)
      const server = collector.spans.find((x) => x.kind === 2)!
      const client = collector.spans.find((x) => x.kind === 3)!
      expect(client.name).toBe('shadow GET default')
      expect(client.traceId).toBe(server.traceId)
      expect(client.parentSpanId).toBe(server.spanId)
      expect(attr(client, 'veer.version')?.stringValue).toBe('shadow')
      expect(attr(client, 'veer.shadow.outcome')?.stringValue).toMatch(/^(match|mismatch)$/)
      const [, traceId, spanId] = String(shadow.seen[0]!.headers.traceparent).split('-')
      expect(traceId).toBe(client.traceId.toLowerCase())
      expect(spanId).toBe(client.spanId.toLowerCase())
      // The primary upstream still sees the request span as its parent.
      expect(String(upstream.seen[0]!.headers.traceparent).split('-')[2]).toBe(server.spanId.toLowerCase())
    } finally {
      await shadow.close()
    }
  })

  it('a canary failure answered by stable is one span: the retry, marked retried, with stable as the upstream', async () => {
    collector = await startCollector()
    upstream = await startUpstream('stable')
    const canary = await startUpstream('canary', (req, res) => {
      req.resume()
      res.writeHead(503).end()
    })
    try {
      veer = await startVeer(['--stable', upstream.url, '--canary', canary.url, '--canary-weight', '100'], {
        OTEL_TRACES_EXPORTER: 'otlp',
        OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
        OTEL_BSP_SCHEDULE_DELAY: '100',
      })
      const res = await request(`${veer.url}/orders/7`)
      expect(res.statusCode).toBe(200)
      await res.body.dump()
      await collector.waitFor(1)
      // The one span ends with the user's answer (not with the canary's failed attempt).
      const span = collector.spans[0]!
      expect(attr(span, 'veer.retried')?.boolValue).toBe(true)
      expect(attr(span, 'veer.version')?.stringValue).toBe('stable')
      expect(Number(attr(span, 'http.response.status_code')?.intValue)).toBe(200)
      expect(span.status?.code ?? 0).not.toBe(2) // not an error: the user got stable's answer
      // Both upstreams saw the request under the same span.
      const parent = (h: unknown) => String(h).split('-')[2]
      expect(parent(canary.seen[0]!.headers.traceparent)).toBe(span.spanId.toLowerCase())
      expect(parent(upstream.seen[0]!.headers.traceparent)).toBe(span.spanId.toLowerCase())
    } finally {
      await canary.close()
    }
  })

  it('passes the client traceparent through untouched when tracing is off', async () => {
    upstream = await startUpstream('stable')
    veer = await startVeer(['--stable', upstream.url], { OTEL_TRACES_EXPORTER: '' })
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
    const res = await request(veer.url, { headers: { traceparent } })
    await res.body.dump()
    expect(upstream.seen[0]!.headers.traceparent).toBe(traceparent)
    expect(veer.logs.some((l) => l.msg === 'tracing on')).toBe(false)
  })
})
