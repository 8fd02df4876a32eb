/**
 * Prometheus evaluations run outside the engine's write queue (in process: real store, engine and
 * clock; a "Prometheus" on loopback that takes the query and never answers): an abort decided while a
 * query hangs is not held up by it, and the answer that never came leaves the rollout where it was.
 */
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import pino from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { AnalysisBook } from '../../control/analysis.ts'
import { PrometheusBook, queryPrometheus } from '../../control/prometheus.ts'
import type { Plan } from '../../control/rollout.ts'
import { engineBed } from '../helpers/engine.ts'

const operator = { name: 'alice', role: 'operator' as const }
let cleanup: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const c of cleanup) await c()
  cleanup = []
})

/** An HTTP server that holds every request unanswered; `asked` resolves on the first. */
async function silentPrometheus() {
  const held: ServerResponse[] = []
  const sockets = new Set<Socket>()
  let wake: (() => void) | null = null
  const asked = new Promise<void>((resolve) => (wake = resolve))
  const server = createServer((req, res) => {
    req.resume()
    held.push(res)
    wake?.()
  })
  server.on('connection', (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  cleanup.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  )
  return { url, asked, held }
}

describe('Prometheus checks outside the queue', () => {
  it('an abort while a query hangs is decided at once; the rollout is aborted, the query still open', async () => {
    const prom = await silentPrometheus()
    const evaluated: string[] = []
    const book = new AnalysisBook(new PrometheusBook({ evaluated: (r) => evaluated.push(r) }))
    const log = pino({ level: 'silent' })
    const { engine, clock, store, events } = await engineBed({ log, judge: (i) => book.verdict(i) })
    cleanup.push(async () => {
      events.close()
      await store.close()
    })
    const plan: Plan = {
      mode: 'canary',
      steps: [
        { weight: 10, pause: 0 },
        { weight: 100, pause: null },
      ],
      analysis: {
        enabled: true,
        prometheus: {
          url: prom.url,
          intervalMs: 100,
          timeoutMs: 60_000,
          checks: [{ name: 'errors', query: 'sum(x{release="{{canary}}"})', max: 0.1, forMs: 0 }],
        },
      },
    }
    await engine.startRollout('shop', plan, operator, null)
    clock.tick()
    await prom.asked
    const t0 = performance.now()
    const aborted = await engine.act('shop', { type: 'abort', reason: 'stop' }, operator, 'stop')
    const ms = performance.now() - t0
    expect(aborted.rollout).toMatchObject({ phase: 'aborted' })
    expect(aborted.weights.canary).toBe(0)
    // Far below the query's 60 s timeout: nothing in the queue waited for it.
    expect(ms).toBeLessThan(2000)
    expect(prom.held).toHaveLength(1)
    expect(prom.held[0]!.writableEnded).toBe(false)
    expect(evaluated).toEqual([])
    // The book shows the check not evaluated yet: waiting, not a pass.
    expect(book.view('shop', engine.route('shop').rollout)?.prometheus).toMatchObject({
      result: 'wait',
      evaluations: 0,
      checks: [],
    })
    const view = engine.view(engine.route('shop')).rollout!
    expect(view.plan.analysis.prometheus).toMatchObject({ url: prom.url, timeout: '1m', interval: '100ms' })
  })
})

describe('a Prometheus answer', () => {
  it('is not read past 1 MiB: a query matching many series is inconclusive, its reason says why', async () => {
    const { url, asked, held } = await silentPrometheus()
    const sample = queryPrometheus(url, 'x', 5000)
    await asked
    // A vector of many series, sent until the reader stops (the connection is then cut).
    const res = held[0]!
    res.writeHead(200, { 'content-type': 'application/json' })
    res.write('{"status":"success","data":{"resultType":"vector","result":[')
    const series = `${'{"metric":{"a":"b"},"value":[1,"0"]},'.repeat(1000)}`
    let sent = 0
    const more = () => {
      while (!res.destroyed && sent < 8 * 1024 * 1024 && res.write(series)) sent += series.length
      if (!res.destroyed && sent < 8 * 1024 * 1024) res.once('drain', more)
    }
    more()
    expect(await sample).toEqual({
      ok: false,
      reason: expect.stringContaining('answered more than 1 MiB: the query matches too many series'),
    })
  })
})
