/**
 * Prometheus as an analysis source, end to end on loopback: a real Prometheus (Debian's) scraping a
 * real `veer proxy`'s admin /metrics and the stable and canary upstreams' own /metrics, where each
 * exports the business metric `shop_checkouts_total{release,result}`; a real `veer control` judging
 * the rollout by the plan's PromQL checks. A canary whose checkouts fail (with HTTP 200, which the
 * proxies' own analysis cannot see) is rolled back by the check; a healthy one completes; with
 * Prometheus stopped mid-rollout the verdict is inconclusive and the rollout pauses, never passes.
 */
import { Agent, request } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import { type ControlProcess, startLinkedBed, TOKENS, until } from '../helpers/control.ts'
import { type Prometheus, startPrometheus } from '../helpers/prometheus.ts'
import { startUpstream, type Upstream } from '../helpers/upstream.ts'
import type { VeerProcess } from '../helpers/veer.ts'

let running: { stop(signal?: NodeJS.Signals): Promise<unknown> }[] = []
let upstreams: Upstream[] = []
let prometheus: Prometheus[] = []
const agent = new Agent({ connections: 8 })

afterEach(async () => {
  await Promise.all(prometheus.map((p) => p.stop()))
  await Promise.all(running.map((p) => p.stop('SIGKILL')))
  await Promise.all(upstreams.map((u) => u.close()))
  running = []
  upstreams = []
  prometheus = []
})

/**
 * An upstream of release `release` that counts each request as a checkout, failed one in `failEvery`
 * (0: never), always answering 200, and exports the counts on /metrics. Both result series exist from
 * the start, so a ratio of them is 0, not an empty vector.
 */
async function shop(release: string, failEvery = 0): Promise<Upstream> {
  const counts = { ok: 0, error: 0 }
  let n = 0
  const u = await startUpstream(release, (req, res) => {
    req.resume()
    if (req.url === '/metrics') {
      const lines = ['# TYPE shop_checkouts_total counter']
      for (const [result, v] of Object.entries(counts))
        lines.push(`shop_checkouts_total{release="${release}",result="${result}"} ${v}`)
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(`${lines.join('\n')}\n`)
      return
    }
    n++
    if (failEvery > 0 && n % failEvery === 0) counts.error++
    else counts.ok++
    res.writeHead(200).end(release)
  })
  upstreams.push(u)
  return u
}

async function bed(stable: Upstream, canary: Upstream, env: Record<string, string> = {}) {
  const started = await startLinkedBed(stable, canary, {}, env)
  running.push(started.control, started.proxy)
  const prom = await startPrometheus({
    scrape: [
      { job: 'veer', targets: [started.proxy.adminUrl] },
      { job: 'shop', targets: [stable.url, canary.url] },
    ],
  })
  prometheus.push(prom)
  return { ...started, prom }
}

/** GETs through the proxy, 4 at a time, until `done()`. */
async function load(proxy: VeerProcess, done: () => Promise<boolean>) {
  let stop = false
  const worker = async () => {
    while (!stop) {
      const res = await request(`${proxy.url}/checkout`, { dispatcher: agent })
      await res.body.dump()
    }
  }
  const workers = Array.from({ length: 4 }, worker)
  try {
    await until(done, 50_000, 50)
  } finally {
    stop = true
    await Promise.all(workers)
  }
}

const CHECKOUT_ERRORS =
  'sum(shop_checkouts_total{release="{{canary}}",result="error"}) / sum(shop_checkouts_total{release="{{canary}}"})'
/** From the proxy's own metrics: 5xx answers of the route's canary (none: 0, not an empty vector). */
const CANARY_5XX = 'sum(veer_requests_total{route="{{route}}",version="canary",code=~"5.."}) or vector(0)'

function planWith(prom: Prometheus, steps: unknown[], extra: Record<string, unknown> = {}) {
  return {
    steps,
    analysis: {
      minRequests: 10,
      prometheus: {
        url: prom.url,
        interval: '200ms',
        timeout: '2s',
        checks: [
          { name: 'checkout-errors', query: CHECKOUT_ERRORS, max: 0.05, for: '1s' },
          { name: 'canary-5xx', query: CANARY_5XX, max: 0 },
        ],
        ...extra,
      },
    },
  }
}

const routeOf = async (control: ControlProcess) => (await control.api('GET', '/v1/routes/shop')).json

describe('Prometheus checks in a rollout', () => {
  it('rolls back a canary whose checkouts fail, the audit naming the query as sent, value and bound', async () => {
    const hooks: { event: string; why: string | null }[] = []
    const hook = await startUpstream('hook', (req, res) => {
      let body = ''
      req.on('data', (d) => (body += d))
      req.on('end', () => {
        hooks.push(JSON.parse(body))
        res.writeHead(204).end()
      })
    })
    upstreams.push(hook)
    const { control, proxy, prom } = await bed(await shop('v1'), await shop('v2', 2), {
      VEER_WEBHOOKS: hook.url,
    })
    const start = await control.api('POST', '/v1/routes/shop/rollout', {
      body: planWith(prom, [{ weight: 50, pause: '1h' }, { weight: 100 }]),
    })
    expect(start.status, start.text).toBe(200)
    await load(proxy, async () => (await routeOf(control)).rollout.phase === 'aborted')
    const route = await routeOf(control)
    expect(route.weights.canary).toBe(0)
    expect(route.rollout.analysis.verdict).toBe('fail')
    const sent =
      'sum(shop_checkouts_total{release="v2",result="error"}) / sum(shop_checkouts_total{release="v2"})'
    const audit = (await control.api('GET', '/v1/audit?route=shop&limit=1')).json.entries[0]
    expect(audit).toMatchObject({ who: 'analysis', action: 'rollout-abort', to: { canary: 0 } })
    const m =
      /^analysis failed: prometheus check checkout-errors: (.+) = ([\d.]+) > max 0\.05 \(out of bounds for (\S+) of 1s\)$/.exec(
        audit.why,
      )
    expect(m, audit.why).not.toBeNull()
    expect(m![1]).toBe(sent)
    expect(Number(m![2])).toBeGreaterThan(0.3)
    const check = audit.evidence.prometheus.find((c: { name: string }) => c.name === 'checkout-errors')
    expect(check).toMatchObject({ state: 'fail', query: sent, max: 0.05, for: '1s' })
    expect(check.value).toBeGreaterThan(0.3)
    // The proxies saw only 200s: their own checks passed, the business metric caught it.
    expect(audit.evidence.checks.every((c: { result: string }) => c.result !== 'fail')).toBe(true)
    const metrics = (await control.api('GET', '/metrics', { token: TOKENS.read })).text
    expect(metrics).toContain('veer_rollbacks_total{route="shop",reason="prometheus"} 1')
    // The same webhook as any automatic rollback.
    const rolledBack = await until(() => hooks.find((h) => h.event === 'rolled-back'))
    expect(rolledBack!.why).toBe(audit.why)
  })

  it('completes a rollout whose checks pass at every step', async () => {
    const { control, proxy, prom } = await bed(await shop('v1'), await shop('v2'))
    const start = await control.api('POST', '/v1/routes/shop/rollout', {
      body: planWith(prom, [
        { weight: 50, pause: '3s' },
        { weight: 100, pause: '0s' },
      ]),
    })
    expect(start.status, start.text).toBe(200)
    await load(proxy, async () => (await routeOf(control)).rollout.phase !== 'progressing')
    const route = await routeOf(control)
    expect(route.rollout).toMatchObject({ phase: 'completed', reason: null })
    expect(route.weights.canary).toBe(100)
    const view = route.rollout.analysis.prometheus
    expect(view.result).toBe('pass')
    expect(view.checks.map((c: { name: string; value: number }) => [c.name, c.value])).toEqual([
      ['checkout-errors', 0],
      ['canary-5xx', 0],
    ])
    expect(view.evaluations).toBeGreaterThan(1)
    // Evaluation latency against this Prometheus: reported for the record.
    console.log(`prometheus evaluation (2 checks): last ${view.lastLatencyMs} ms`)
    const last = (await control.api('GET', '/v1/audit?route=shop&limit=1')).json.entries[0]
    expect(last).toMatchObject({ action: 'rollout-complete', who: 'rollout' })
  })

  it('Prometheus stopped mid-rollout: inconclusive, the rollout pauses at its step, never passes', async () => {
    const { control, proxy, prom } = await bed(await shop('v1'), await shop('v2'))
    const start = await control.api('POST', '/v1/routes/shop/rollout', {
      body: planWith(prom, [{ weight: 50, pause: '3s' }, { weight: 100 }]),
    })
    expect(start.status, start.text).toBe(200)
    let stopped = false
    await load(proxy, async () => {
      const r = (await routeOf(control)).rollout
      // Once the checks were evaluated and passed, Prometheus goes away.
      if (!stopped && r.analysis?.prometheus?.result === 'pass') {
        stopped = true
        await prom.stop()
      }
      return r.phase !== 'progressing'
    })
    expect(stopped).toBe(true)
    const route = await routeOf(control)
    expect(route.rollout).toMatchObject({ phase: 'paused', step: 1 })
    expect(route.weights.canary).toBe(50)
    expect(route.rollout.reason).toMatch(
      /^analysis inconclusive: prometheus check checkout-errors inconclusive: Prometheus at http:\/\/127\.0\.0\.1:\d+ unreachable \(ECONNREFUSED\); query: /,
    )
    expect(route.rollout.analysis.prometheus.result).toBe('inconclusive')
    const audit = (await control.api('GET', '/v1/audit?route=shop&limit=1')).json.entries[0]
    expect(audit).toMatchObject({ who: 'analysis', action: 'rollout-pause', why: route.rollout.reason })
  })
})
