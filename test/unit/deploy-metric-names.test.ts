/**
 * Every metric the alert rules and the Grafana dashboard use exists: a real `veer proxy --control`
 * and a real `veer control` are scraped (the proxy's admin /metrics, control's GET /metrics) and each
 * `veer_…` name of deploy/prometheus/veer-rules.yml and deploy/grafana/veer-dashboard.json must be in
 * one of the answers.
 */
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type ControlProcess, startLinkedBed, TOKENS } from '../helpers/control.ts'
import { dashboardExprs, exposedNames, rules, veerNames } from '../helpers/metric-names.ts'
import { startUpstream, type Upstream } from '../helpers/upstream.ts'
import type { VeerProcess } from '../helpers/veer.ts'

let control: ControlProcess
let proxy: VeerProcess
let upstreams: Upstream[] = []
let exposed: Set<string>

beforeAll(async () => {
  upstreams = [await startUpstream('stable'), await startUpstream('canary')]
  ;({ control, proxy } = await startLinkedBed(upstreams[0]!, upstreams[1]!))
  // One request, so the per-request series are there too.
  await (await request(`${proxy.url}/`)).body.dump()
  const proxyText = await (await request(`${proxy.adminUrl}/metrics`)).body.text()
  const controlText = (await control.api('GET', '/metrics', { token: TOKENS.read })).text
  exposed = new Set([...exposedNames(proxyText), ...exposedNames(controlText)])
})

afterAll(async () => {
  await Promise.all([control?.stop('SIGKILL'), proxy?.stop('SIGKILL')])
  await Promise.all(upstreams.map((u) => u.close()))
})

describe('metric names of the deploy files', () => {
  it('the scrapes expose the metrics of both sides', () => {
    for (const name of ['veer_requests_total', 'veer_route_weight', 'veer_control_rollout_phase'])
      expect(exposed).toContain(name)
  })

  it('every metric the alert rules use exists', () => {
    const used = veerNames(rules().map((r) => r.expr))
    expect(used.size).toBeGreaterThan(3)
    expect([...used].filter((n) => !exposed.has(n))).toEqual([])
  })

  it('every metric the Grafana dashboard uses exists', () => {
    const used = veerNames(dashboardExprs())
    expect(used.size).toBeGreaterThan(3)
    expect([...used].filter((n) => !exposed.has(n))).toEqual([])
  })
})
