/**
 * The control process's own metrics (GET /metrics, read role): the automatic rollbacks it made (the
 * proxies count their fuse trips under the same name, so a dashboard sums both), and the state dir's
 * size and free space, read when scraped, so a filling disk is seen before writes get 503.
 */
import { stat, statfs } from 'node:fs/promises'
import { join } from 'node:path'
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

  /** Gauges of `dir`: the bytes state.json and audit.log take, and the bytes free for them. */
  watchStateDir(dir: string): void {
    new client.Gauge({
      name: 'veer_control_state_bytes',
      help: 'Bytes the state dir files take (state.json and audit.log)',
      registers: [this.registry],
      async collect() {
        let total = 0
        for (const name of ['state.json', 'audit.log'])
          total += await stat(join(dir, name)).then(
            (s) => s.size,
            () => 0,
          )
        this.set(total)
      },
    })
    new client.Gauge({
      name: 'veer_control_state_free_bytes',
      help: 'Bytes free for an unprivileged writer on the state dir filesystem',
      registers: [this.registry],
      async collect() {
        const fs = await statfs(dir).catch(() => null)
        if (fs !== null) this.set(fs.bavail * fs.bsize)
      },
    })
  }
}
