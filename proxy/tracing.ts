/**
 * OpenTelemetry tracing, on only when the standard environment asks for it (OTEL_TRACES_EXPORTER=otlp or
 * console). Off, nothing is loaded and the request path takes one `null` check. On, each proxied request
 * gets a SERVER span (child of the client's `traceparent`, if any) carrying veer.route, veer.version and
 * veer.release, and the upstream receives that span's W3C `traceparent`/`tracestate`. A mirrored
 * request's shadow copy gets a CLIENT child span (veer.version shadow, the shadow's outcome), and the
 * shadow upstream that span's traceparent.
 */
import type { Logger } from 'pino'
import type { Exchange } from './chain/exchange.ts'
import type { RequestHead } from './listen/headers.ts'
import type { Mirror } from './shadow/mirror.ts'

export interface Tracing {
  start(ex: Exchange, head: RequestHead): void
  end(ex: Exchange, status: number): void
  /** A span for the shadow copy of a traced request; the shadow upstream gets its traceparent. */
  startShadow(ex: Exchange, m: Mirror): void
  endShadow(m: Mirror, status: number, outcome: string): void
  shutdown(): Promise<void>
}

export async function createTracing(
  log: Logger,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Tracing | null> {
  const exporterName = (env.OTEL_TRACES_EXPORTER ?? '').trim().toLowerCase()
  if (exporterName === '' || exporterName === 'none' || env.OTEL_SDK_DISABLED === 'true') return null
  if (exporterName !== 'otlp' && exporterName !== 'console') {
    log.warn(
      { OTEL_TRACES_EXPORTER: exporterName },
      'unsupported trace exporter (use otlp or console); tracing stays off',
    )
    return null
  }
  const { propagation, trace } = await import('@opentelemetry/api')
  const { OtelTracing } = await import('./otel-tracing.ts')
  const sdk = await import('@opentelemetry/sdk-trace')
  const { resourceFromAttributes } = await import('@opentelemetry/resources')
  const { W3CTraceContextPropagator } = await import('@opentelemetry/core')
  const exporter =
    exporterName === 'console'
      ? new sdk.ConsoleSpanExporter()
      : new (await import('@opentelemetry/exporter-trace-otlp-http')).OTLPTraceExporter()
  const delay = Number(env.OTEL_BSP_SCHEDULE_DELAY ?? 5000)
  const provider = new sdk.TracerProvider({
    resource: resourceFromAttributes({ 'service.name': env.OTEL_SERVICE_NAME ?? 'veer' }),
    sampler: samplerFromEnv(sdk, env),
    spanProcessors: [
      new sdk.BatchSpanProcessor({ exporter, scheduledDelayMillis: Number.isFinite(delay) ? delay : 5000 }),
    ],
  })
  trace.setGlobalTracerProvider(provider)
  propagation.setGlobalPropagator(new W3CTraceContextPropagator())
  log.info(
    { exporter: exporterName, sampler: env.OTEL_TRACES_SAMPLER ?? 'parentbased_always_on' },
    'tracing on',
  )
  return new OtelTracing(provider.getTracer('veer'), () => provider.shutdown())
}

type Sdk = typeof import('@opentelemetry/sdk-trace')

function samplerFromEnv(sdk: Sdk, env: NodeJS.ProcessEnv) {
  const ratio = Number(env.OTEL_TRACES_SAMPLER_ARG ?? 1)
  const r = Number.isFinite(ratio) && ratio >= 0 && ratio <= 1 ? ratio : 1
  switch ((env.OTEL_TRACES_SAMPLER ?? 'parentbased_always_on').toLowerCase()) {
    case 'always_on':
      return new sdk.AlwaysOnSampler()
    case 'always_off':
      return new sdk.AlwaysOffSampler()
    case 'traceidratio':
      return new sdk.TraceIdRatioBasedSampler(r)
    case 'parentbased_always_off':
      return new sdk.ParentBasedSampler({ root: new sdk.AlwaysOffSampler() })
    case 'parentbased_traceidratio':
      return new sdk.ParentBasedSampler({ root: new sdk.TraceIdRatioBasedSampler(r) })
    default:
      return new sdk.ParentBasedSampler({ root: new sdk.AlwaysOnSampler() })
  }
}
