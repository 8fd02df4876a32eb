// The access line, one per request: how it was written before 2026-12-05 (a pino child logger per
// route and version, into pino's asynchronous SonicBoom destination) against now (requestLine() from
// parts serialised once, into a LineSink). Both write to /dev/null, so the figures are the proxy's own
// work per line (serialising, buffering and its share of the write calls), not the disk's.
import { openSync } from 'node:fs'
import pino from 'pino'
import { test } from 'vitest'
import { jsonFields, LineSink, requestLine } from '../../proxy/log.ts'
import { BATCH, nsPerOp, sink } from './report.ts'

const devNull = () => openSync('/dev/null', 'w')
const fixed = { route: 'checkout', version: 'canary', release: 'v2.14.0', upstream: 'http://10.0.3.17:8080' }
const paths = Array.from({ length: 64 }, (_, i) => `/api/orders/${(i * 2654435761) >>> 0}/items`)

const sonic = pino.destination({ dest: devNull(), sync: false, minLength: 2048, maxWrite: 4096 })
const child = pino(
  { base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime, messageKey: 'msg' },
  sonic,
).child(fixed)

const lineSink = new LineSink(devNull())
const fields = jsonFields({ pid: process.pid, ...fixed })

test('access line', async ({ bench }) => {
  await nsPerOp(
    bench,
    bench('before: pino child.info → SonicBoom', () => {
      for (let i = 0; i < BATCH; i++) {
        child.info(
          {
            method: 'GET',
            path: paths[i & 63],
            status: 200,
            error: undefined,
            duration_ms: Math.round((i % 997) * 1.7 * 1e3) / 1000,
            retried: undefined,
          },
          'access',
        )
      }
    }),
    bench('now: requestLine → LineSink', () => {
      for (let i = 0; i < BATCH; i++) {
        lineSink.write(
          requestLine('access', fields, 'GET', paths[i & 63]!, 200, ((i % 997) * 1.7) / 1000, ''),
        )
      }
    }),
    bench('requestLine alone (no sink)', () => {
      for (let i = 0; i < BATCH; i++) {
        sink.o = requestLine('access', fields, 'GET', paths[i & 63]!, 200, ((i % 997) * 1.7) / 1000, '')
      }
    }),
  )
})
