/**
 * The control process's own metrics (GET /metrics, read role): the automatic rollbacks it made. The
 * proxies count their fuse trips under the same name, so a dashboard sums both.
 */
import client from 'prom-client'

export class ControlMetrics {
  readonly registry = new client.Registry()
  readonly rollbacks: client.Counter<'route' | 'reason'>

  constructor() {
    this.rollbacks = new client.Counter({
      name: 'veer_rollbacks_total',
      help: 'Automatic rollbacks of a route by reason (the failed check: errors, outcome, latency-p95, latency-p99; or fuse)',
      labelNames: ['route', 'reason'],
      registers: [this.registry],
    })
  }
}
