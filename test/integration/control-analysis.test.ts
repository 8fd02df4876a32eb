/**
 * Automatic rollback and promotion, end to end on loopback: a real `veer control`, a real
 * `veer proxy --control`, real stable and canary upstreams, and steady GET traffic from this test.
 * A canary that fails half its requests is rolled back by the analysis with its evidence in the audit,
 * while the fallback gives users stable's answers; a healthy canary is promoted to 100%; with no traffic
 * the step ends inconclusive and the rollout pauses; a proxy's fuse rolls back before any statistics.
 */
import { Agent, request } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import { type ControlProcess, runCli, startLinkedBed, TOKENS, until } from '../helpers/control.ts'
import { type Handler, startUpstream, type Upstream } from '../helpers/upstream.ts'
import type { VeerProcess } from '../helpers/veer.ts'

let running: { stop(signal?: NodeJS.Signals): Promise<unknown> }[] = []
let upstreams: Upstream[] = []
const agent = new Agent({ connections: 16 })

afterEach(async () => {
  await Promise.all(running.map((p) => p.stop('SIGKILL')))
  await Promise.all(upstreams.map((u) => u.close()))
  running = []
  upstreams = []
})

async function upstream(name: string, handler?: Handler): Promise<Upstream> {
  const u = await startUpstream(name, handler)
  upstreams.push(u)
  return u
}

/** Control and one proxy following it (helpers/control.ts startLinkedBed), stopped after the test. */
async function bed(
  stable: Upstream,
  canary: Upstream,
  analysis: Record<string, unknown> = {},
  env: Record<string, string> = {},
): Promise<{ control: ControlProcess; proxy: VeerProcess }> {
  const started = await startLinkedBed(stable, canary, analysis, env)
  running.push(started.control, started.proxy)
  return started
}

/** GETs through the proxy, 8 at a time, until `done()` or `max` requests; what the users saw. */
async function load(proxy: VeerProcess, done: () => Promise<boolean>, max = 20_000) {
  const seen = { requests: 0, errors: 0, canary: 0 }
  let stop = false
  const worker = async () => {
    while (!stop && seen.requests < max) {
      const res = await request(`${proxy.url}/item`, { dispatcher: agent })
      await res.body.dump()
      seen.requests++
      if (res.statusCode >= 500) seen.errors++
      if (res.headers['x-veer-version'] === 'canary') seen.canary++
    }
  }
  const workers = Array.from({ length: 8 }, worker)
  try {
    while (!stop && seen.requests < max) {
      if (await done()) break
      await new Promise((r) => setTimeout(r, 50))
    }
  } finally {
    stop = true
    await Promise.all(workers)
  }
  return seen
}

const halfFailing = (): Handler => {
  let n = 0
  return (req, res) => {
    req.resume()
    res.writeHead(n++ % 2 === 0 ? 503 : 200).end('canary')
  }
}

const proxyMetrics = async (proxy: VeerProcess) => (await request(`${proxy.adminUrl}/metrics`)).body.text()

/** Resolves once the proxy has applied control's `revision`. */
async function appliedBy(proxy: VeerProcess, revision: number): Promise<void> {
  await until(async () => {
    const config = (await (await request(`${proxy.adminUrl}/v1/config`)).body.json()) as {
      control?: { revision: number }
    }
    return (config.control?.revision ?? 0) >= revision
  })
}

const phaseOf = async (control: ControlProcess) =>
  (await control.api('GET', '/v1/routes/shop')).json.rollout?.phase as string | undefined

describe('analysis in control', () => {
  it('judges a step from its first canary request: rolled back while the start-up grace still holds it unapplied', async () => {
    const stable = await upstream('stable')
    const canary = await upstream('canary', halfFailing())
    // A grace far longer than the test: the step cannot count as applied before the rollback.
    const { control, proxy } = await bed(stable, canary, {}, { VEER_CONTROL_GRACE_MS: '600000' })
    const start = await control.api('POST', '/v1/routes/shop/rollout', {
      body: { steps: [{ weight: 20, pause: '1h' }, { weight: 100 }] },
    })
    expect(start.status).toBe(200)
    expect(start.json.rollout).toMatchObject({ applied: false })
    await load(proxy, async () => (await phaseOf(control)) === 'aborted')
    const route = (await control.api('GET', '/v1/routes/shop')).json
    expect(route.rollout).toMatchObject({ phase: 'aborted', applied: false })
    expect(route.weights.canary).toBe(0)
    const audit = (await control.api('GET', '/v1/audit?route=shop&limit=1')).json.entries[0]
    expect(audit).toMatchObject({
      who: 'analysis',
      action: 'rollout-abort',
      why: expect.stringMatching(/^analysis failed: errors: /),
    })
  })

  it('rolls back a canary that fails half its requests, with evidence; users got stable answers', async () => {
    const stable = await upstream('stable')
    const canary = await upstream('canary', halfFailing())
    const { control, proxy } = await bed(stable, canary)
    const start = await control.api('POST', '/v1/routes/shop/rollout', {
      body: { steps: [{ weight: 20, pause: '1h' }, { weight: 100 }] },
    })
    expect(start.status).toBe(200)
    const seen = await load(proxy, async () => (await phaseOf(control)) === 'aborted')
    const route = (await control.api('GET', '/v1/routes/shop')).json
    expect(route.rollout.phase).toBe('aborted')
    expect(route.weights.canary).toBe(0)
    expect(route.rollout.analysis.verdict).toBe('fail')
    expect(route.rollout.analysis.saved).toBeGreaterThan(0)
    expect(route.rollout.analysis.harmed).toBe(0)
    // GETs fall back to stable: no user saw a canary failure.
    expect(seen.errors).toBe(0)
    const audit = (await control.api('GET', '/v1/audit?route=shop&limit=1')).json.entries[0]
    expect(audit).toMatchObject({ who: 'analysis', action: 'rollout-abort', to: { canary: 0 } })
    expect(audit.why).toMatch(/^analysis failed: errors: /)
    const errors = audit.evidence.checks.find((c: { check: string }) => c.check === 'errors')
    expect(errors.result).toBe('fail')
    expect(errors.evidence.evidence).toBeGreaterThanOrEqual(errors.evidence.threshold)
    expect(audit.harm.saved).toBeGreaterThan(0)
    expect(audit.rollback).toBe('errors')
    const metrics = (await control.api('GET', '/metrics', { token: TOKENS.read })).text
    expect(metrics).toContain('veer_rollbacks_total{route="shop",reason="errors"} 1')
    expect(metrics).toContain('veer_control_rollout_phase{route="shop",phase="aborted"} 1')
    // The proxy counts the rollback control sent it, once.
    await appliedBy(proxy, audit.revision)
    expect(await proxyMetrics(proxy)).toContain('veer_rollbacks_total{route="shop",reason="errors"} 1')
    const status = await runCli(['status', '--control', control.url], { VEER_TOKEN: TOKENS.read })
    expect(status.code).toBe(0)
    expect(status.stdout).toMatch(
      /^shop\s+\S+ 100%\s+\S+ 0%\s+aborted\s+-\s+-\s+fail\s+0\/\d+\s+1\/1\s+\d+$/m,
    )
    // Who rolled it back and why: the verdict with its figures, from the audit (kept across restarts).
    expect(status.stdout).toMatch(/^shop: last: rollout-abort by analysis at \S+Z: .*errors: canary /m)
    // The proxy follows the rollback: no more canary traffic.
    await until(async () => {
      const c = await request(`${proxy.adminUrl}/v1/config`)
      return (
        ((await c.body.json()) as { routes: { weights: { canary: number } }[] }).routes[0]!.weights.canary ===
        0
      )
    })
  })

  it('promotes a healthy canary to 100% once each step passed its pause', async () => {
    const stable = await upstream('stable')
    const canary = await upstream('canary')
    const { control, proxy } = await bed(stable, canary)
    const start = await control.api('POST', '/v1/routes/shop/rollout', {
      body: {
        steps: [
          { weight: 50, pause: '1s' },
          { weight: 100, pause: '0s' },
        ],
        analysis: { minRequests: 30 },
      },
    })
    expect(start.status).toBe(200)
    const seen = await load(proxy, async () => (await phaseOf(control)) === 'completed')
    const route = (await control.api('GET', '/v1/routes/shop')).json
    expect(route.rollout.phase).toBe('completed')
    expect(route.weights.canary).toBe(100)
    expect(route.rollout.analysis.verdict).toBe('pass')
    expect(seen.errors).toBe(0)
    expect(seen.canary).toBeGreaterThan(0)
  })

  it('with no traffic the step ends inconclusive: the rollout pauses, neither rolled back nor promoted', async () => {
    const stable = await upstream('stable')
    const canary = await upstream('canary')
    const { control } = await bed(stable, canary)
    await control.api('POST', '/v1/routes/shop/rollout', {
      body: { steps: [{ weight: 10, pause: '200ms' }, { weight: 100 }] },
    })
    await until(async () => (await phaseOf(control)) === 'paused')
    const route = (await control.api('GET', '/v1/routes/shop')).json
    expect(route.weights.canary).toBe(10)
    expect(route.rollout.reason).toMatch(/^analysis inconclusive: /)
    expect(route.rollout.analysis.verdict).toBe('inconclusive')
  })

  it('inconclusive is not a dead end: resume gives the step its pause again, and with traffic it passes', async () => {
    const stable = await upstream('stable')
    const canary = await upstream('canary')
    const { control, proxy } = await bed(stable, canary)
    await control.api('POST', '/v1/routes/shop/rollout', {
      body: { steps: [{ weight: 50, pause: '1s' }, { weight: 100 }], analysis: { minRequests: 30 } },
    })
    await until(async () => (await phaseOf(control)) === 'paused')
    expect((await control.api('GET', '/v1/routes/shop')).json.rollout).toMatchObject({
      step: 1,
      pauseLeftMs: 0,
      reason: expect.stringMatching(/^analysis inconclusive: /),
    })
    const resumed = await control.api('POST', '/v1/routes/shop/resume', {
      body: { reason: 'traffic is back' },
    })
    expect(resumed.json.rollout).toMatchObject({ phase: 'progressing', step: 1, stepPause: '1s' })
    expect(resumed.json.rollout.pauseLeftMs).toBeGreaterThan(0)
    // step 2 is entered before the proxies confirm its weight (waiting-for-proxies); wait for both
    const seen = await load(proxy, async () => {
      const r = (await control.api('GET', '/v1/routes/shop')).json.rollout
      return r.step === 2 && r.state !== 'waiting-for-proxies'
    })
    const route = (await control.api('GET', '/v1/routes/shop')).json
    expect(route.rollout).toMatchObject({ phase: 'progressing', step: 2, state: 'waiting-for-promote' })
    expect(route.weights.canary).toBe(100)
    expect(seen.canary).toBeGreaterThan(0)
    const held = (await control.api('GET', '/v1/audit?route=shop&limit=10')).json.entries.map(
      (e: { action: string; who: string }) => `${e.action} ${e.who}`,
    )
    expect(held).toEqual(expect.arrayContaining(['rollout-pause analysis', 'rollout-resume alice']))
  })

  it('a plan may say what inconclusive does: extend the pause (then pass with traffic), or abort', async () => {
    const stable = await upstream('stable')
    const canary = await upstream('canary')
    const { control, proxy } = await bed(stable, canary)
    await control.api('POST', '/v1/routes/shop/rollout', {
      body: {
        steps: [{ weight: 50, pause: '300ms' }, { weight: 100 }],
        analysis: { minRequests: 30, inconclusive: { action: 'extend', extend: '1s', limit: 2 } },
      },
    })
    const actions = async () =>
      (await control.api('GET', '/v1/audit?route=shop&limit=20')).json.entries.map(
        (e: { action: string; who: string }) => `${e.action} ${e.who}`,
      ) as string[]
    await until(async () => (await actions()).includes('rollout-extend analysis'))
    const extended = (await control.api('GET', '/v1/routes/shop')).json.rollout
    expect(extended).toMatchObject({ phase: 'progressing', step: 1, extensions: 1 })
    expect(extended.plan.analysis.inconclusive).toEqual({ action: 'extend', extend: '1s', limit: 2 })
    await load(proxy, async () => (await control.api('GET', '/v1/routes/shop')).json.rollout.step === 2)
    expect((await control.api('GET', '/v1/routes/shop')).json.weights.canary).toBe(100)
    expect(await actions()).not.toContain('rollout-pause analysis')

    // Abort: no traffic at all (a new control, so no report of the traffic above reaches it), and the
    // step is rolled back when its pause ends.
    const quiet = await bed(await upstream('stable-2'), await upstream('canary-2'))
    await quiet.control.api('POST', '/v1/routes/shop/rollout', {
      body: {
        steps: [{ weight: 10, pause: '200ms' }, { weight: 100 }],
        analysis: { inconclusive: { action: 'abort' } },
      },
    })
    await until(async () => (await phaseOf(quiet.control)) === 'aborted')
    const last = (await quiet.control.api('GET', '/v1/audit?route=shop&limit=1')).json.entries[0]
    expect(last).toMatchObject({
      who: 'analysis',
      action: 'rollout-abort',
      why: expect.stringMatching(/^analysis inconclusive: /),
    })
    const metrics = (await quiet.control.api('GET', '/metrics', { token: TOKENS.read })).text
    expect(metrics).toContain('veer_rollbacks_total{route="shop",reason="inconclusive"} 1')
  })

  it('a proxy fuse rolls the route back at once, before any statistics', async () => {
    const stable = await upstream('stable')
    const canary = await upstream('canary', (req, res) => {
      req.resume()
      res.writeHead(500).end()
    })
    const { control, proxy } = await bed(stable, canary, { fuse: { consecutiveFailures: 5 } })
    await control.api('POST', '/v1/routes/shop/rollout', {
      // So many requests needed that the statistics cannot decide first.
      body: { steps: [{ weight: 50, pause: '1h' }, { weight: 100 }], analysis: { minRequests: 1_000_000 } },
    })
    const seen = await load(proxy, async () => (await phaseOf(control)) === 'aborted')
    expect(seen.errors).toBe(0)
    const audit = (await control.api('GET', '/v1/audit?route=shop&limit=1')).json.entries[0]
    expect(audit).toMatchObject({ who: 'fuse', action: 'rollout-abort', to: { canary: 0 } })
    expect(audit.why).toMatch(/fuse tripped in proxy .*: 5 consecutive canary errors \(last: 500\)/)
    const metrics = (await control.api('GET', '/metrics', { token: TOKENS.read })).text
    expect(metrics).toContain('veer_rollbacks_total{route="shop",reason="fuse"} 1')
    // The proxy counted its fuse; control's rollback of that trip, once applied, is the same one.
    await appliedBy(proxy, audit.revision)
    expect(await proxyMetrics(proxy)).toContain('veer_rollbacks_total{route="shop",reason="fuse"} 1')
  })
})
