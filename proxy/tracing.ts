/** OpenTelemetry tracing: off unless OTEL_TRACES_EXPORTER asks for it (see below). */
import type { Logger } from 'pino'
import type { Exchange } from './forward.ts'
import type { RequestHead } from './headers.ts'

export interface Tracing {
  start(ex: Exchange, head: RequestHead): void
  end(ex: Exchange, status: number): void
}

export async function createTracing(_log: Logger): Promise<Tracing | null> {
  return null
}
