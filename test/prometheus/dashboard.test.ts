/**
 * Every query of the Grafana dashboard (deploy/grafana/veer-dashboard.json) run against a real
 * Prometheus scraping a real proxy and a real control, with traffic: stable, a canary that fails one
 * request in five, a shadow that differs on one in three, and a rollout in progress. Each query must be
 * accepted and, but for the few that only show something after a failure that did not happen here,
 * give data — a renamed metric, a wrong label or a typo in PromQL fails the test.
 */
import { readFileSync } from 'node:fs'
import { Agent, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type ControlProcess, startLinkedBed, TOKENS, until } from '../helpers/control.ts'
import { type Prometheus, startPrometheus } from '../helpers/prometheus.ts'
import { startUpstream, type Upstream } from '../helpers/upstream.ts'
import type { VeerProcess } from '../helpers/veer.ts'

interface Panel {
  title: string
  targets?: { expr: string }[]
  panels?: Panel[]
}

const dashboard = JSON.parse(
  readFileSync(new URL('../../deploy/grafana/veer-dashboard.json', import.meta.url), 'utf8'),
) as { panels: Panel[]; templating: { list: { name: string; definition?: string }[] } }

/** Every panel's queries, rows' nested panels included. */
function queries(panels: readonly Panel[]): { title: string; expr: string }[] {
  return panels.flatMap((p) => [
    ...(p.targets ?? []).map((t) => ({ title: p.title, expr: t.expr })),
    ...queries(p.panels ?? []),
  ])
}

/** What Grafana substitutes: the route picked, and $__rate_interval (4 scrape intervals of 500 ms). */
const substitute = (expr: string) => expr.replaceAll('$route', 'shop').replaceAll('$__rate_interval', '2s')

/** Panels that show data only after something went wrong, which this bed does not make happen. */
const AFTER_A_FAILURE = new Set(['sum by (code) (increase(veer_control_storage_errors_total[2s]))'])

let control: ControlProcess
let proxy: VeerProcess
let prom: Prometheus
const upstreams: Upstream[] = []
const agent = new Agent({ connections: 4 })
let stop = false
let load: Promise<void> = Promise.resolve()

beforeAll(async () => {
  let n = 0
  let s = 0
  upstreams.push(
    await startUpstream('v1', (req, res) => {
      req.resume()
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
    }),
    await startUpstream('v2', (req, res) => {
      req.resume()
      res.writeHead(++n % 5 === 0 ? 500 : 200, { 'content-type': 'application/json' }).end('{"ok":true}')
    }),
    await startUpstream('v3', (req, res) => {
      req.resume()
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(++s % 3 === 0 ? '{"ok":false}' : '{"ok":true}')
    }),
  )
  const [stable, canary, shadow] = upstreams as [Upstream, Upstream, Upstream]
  ;({ control, proxy } = await startLinkedBed(
    stable,
    canary,
    {},
    {},
    {
      shadow: { url: shadow.url, release: 'v3' },
    },
  ))
  // A rollout in progress (analysis off: the failing canary must stay), so phase and step have values.
  const started = await control.api('POST', '/v1/routes/shop/rollout', {
    body: { steps: [{ weight: 40, pause: '1h' }, { weight: 100 }], analysis: { enabled: false } },
  })
  expect(started.status, started.text).toBe(200)
  prom = await startPrometheus({
    scrape: [
      { job: 'veer', targets: [proxy.adminUrl] },
      { job: 'veer-control', targets: [control.url], bearer: TOKENS.read },
    ],
  })
  const worker = async () => {
    while (!stop) {
      const res = await request(`${proxy.url}/cart`, { dispatcher: agent })
      await res.body.dump()
    }
  }
  load = Promise.all([worker(), worker()]).then(() => {})
}, 60_000)

afterAll(async () => {
  stop = true
  await load
  await prom?.stop()
  await Promise.all([proxy?.stop('SIGKILL'), control?.stop('SIGKILL')])
  await Promise.all(upstreams.map((u) => u.close()))
  await agent.close()
})

describe('the Grafana dashboard against a real Prometheus', () => {
  const all = queries(dashboard.panels).map((q) => ({ ...q, sent: substitute(q.expr) }))

  it('has queries, each with only the variables Grafana fills in', () => {
    expect(all.length).toBeGreaterThan(10)
    for (const q of all) expect(q.sent, q.title).not.toMatch(/\$/)
  })

  it('gives data for every panel query (but those that wait for a failure), and Prometheus accepts all', async () => {
    const empty = async () => {
      const out: string[] = []
      for (const q of all) {
        const data = await prom.query(q.sent)
        if (data.result.length === 0 && !AFTER_A_FAILURE.has(q.sent)) out.push(`${q.title}: ${q.sent}`)
      }
      return out
    }
    // Rates need two scrapes with traffic in them; wait for the positive: every panel has data.
    let left: string[] = []
    await until(async () => (left = await empty()).length === 0, 30_000, 250).catch(() => {})
    expect(left).toEqual([])
  })

  it("fills the route variable's values from its label query", async () => {
    const route = dashboard.templating.list.find((v) => v.name === 'route')!
    expect(route.definition).toBe('label_values(veer_requests_total, route)')
    const data = await prom.query('group by (route) (veer_requests_total)')
    expect(data.result.map((r: { metric: { route: string } }) => r.metric.route)).toEqual(['shop'])
  })
})
