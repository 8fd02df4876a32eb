/**
 * Pre-step smoke checks with a real `veer control`, a real `veer proxy --control` and real stable and
 * canary upstreams: before a step raises the canary weight, control sends the plan's requests through
 * the proxy with `x-veer-version: canary`. A healthy canary lets the rollout advance; a canary that
 * answers 500 on the smoke path aborts it (canary 0) with an audit entry naming the failure.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type ControlProcess,
  startControl,
  startLinkedProxy,
  TOKENS,
  tempDir,
  until,
} from '../helpers/control.ts'
import { startUpstream, type Upstream } from '../helpers/upstream.ts'
import { type VeerProcess, writeConfig } from '../helpers/veer.ts'

let control: ControlProcess
let stable: Upstream
let canary: Upstream
let proxy: VeerProcess
/** What the canary answers on /smoke. */
let canaryStatus = 200
const smokeSeen: { version: string | undefined }[] = []

beforeAll(async () => {
  stable = await startUpstream('stable')
  canary = await startUpstream('canary', (req, res) => {
    req.resume()
    if (req.url === '/smoke') {
      smokeSeen.push({ version: req.headers['x-veer-version'] as string | undefined })
      res.writeHead(canaryStatus, { 'content-type': 'text/plain' })
      res.end(canaryStatus === 200 ? 'ok' : 'broken')
      return
    }
    res.writeHead(200, { 'x-upstream': 'canary' })
    res.end('canary')
  })
  const tokenFile = join(tempDir(), 'proxy-token')
  writeFileSync(tokenFile, `${TOKENS.proxy}\n`)
  control = await startControl({ env: { VEER_CONTROL_LIVE_MS: '3000' } })
  const file = writeConfig({
    log: { access: false },
    routes: [
      {
        name: 'api',
        stable: { url: stable.url, release: 'v1' },
        canary: { url: canary.url, release: 'v2' },
        canaryWeight: 0,
        allowOverride: true,
      },
    ],
  })
  proxy = await startLinkedProxy(file, control, tokenFile)
  await until(async () => {
    const list = (await control.api('GET', '/v1/proxies')).json.proxies
    return list.length === 1 && list[0].live && list[0].appliedRevision >= 1
  }, 20_000)
})

afterAll(async () => {
  await proxy?.stop('SIGKILL')
  await control?.stop()
  await Promise.all([stable?.close(), canary?.close()])
})

const plan = () => ({
  steps: [{ weight: 10, pause: '1s' }, { weight: 50 }],
  analysis: { enabled: false },
  smoke: { url: `${proxy.url}/smoke`, requests: 3, expectStatus: [200], timeout: '2s' },
})

const route = async () => (await control.api('GET', '/v1/routes/api')).json

async function reset(): Promise<void> {
  await control.api('POST', '/v1/routes/api/abort', { body: { reason: 'test reset' } })
  await until(async () => (await route()).weights.canary === 0)
  canaryStatus = 200
  smokeSeen.length = 0
}

describe('pre-step smoke checks', () => {
  it('a healthy canary passes every check and the rollout advances', async () => {
    await reset()
    const r = await control.api('POST', '/v1/routes/api/rollout', { body: plan() })
    expect(r.status).toBe(200)
    expect(r.json).toMatchObject({
      weights: { canary: 10 },
      rollout: { phase: 'progressing', step: 1, plan: { smoke: { requests: 3, timeout: '2s' } } },
    })
    const at2 = await until(async () => {
      const v = await route()
      return v.rollout.state === 'waiting-for-promote' ? v : null
    })
    expect(at2).toMatchObject({ weights: { canary: 50 }, rollout: { step: 2, reason: null } })
    // Three before step 1, three before step 2, all asking for the canary.
    expect(smokeSeen).toHaveLength(6)
    expect(smokeSeen.every((s) => s.version === 'canary')).toBe(true)
  })

  it('a canary answering 500 on the smoke path aborts the rollout before the raise', async () => {
    await reset()
    const r = await control.api('POST', '/v1/routes/api/rollout', { body: plan() })
    expect(r.json.weights.canary).toBe(10)
    canaryStatus = 500
    const aborted = await until(async () => {
      const v = await route()
      return v.rollout.phase === 'aborted' ? v : null
    })
    expect(aborted.weights.canary).toBe(0)
    expect(aborted.rollout.state).toBe('aborted')
    expect(aborted.rollout.reason).toMatch(
      /smoke check before step 2 failed: GET .*\/smoke request 1\/3: status 500/,
    )
    const audit = (await control.api('GET', '/v1/audit?route=api&limit=100')).json.entries as {
      action: string
      who: string
      revision: number
      why: string | null
      to: { canary: number }
    }[]
    const entry = audit.find((e) => e.action === 'rollout-abort' && e.who === 'smoke')
    expect(entry).toBeDefined()
    expect(entry!.to.canary).toBe(0)
    expect(entry!.why).toMatch(
      /smoke check before step 2 failed: .*status 500 \(expected 200\) \(3 of 3 failed\)/,
    )
    // Since this rollout started, the weight never went to step 2's 50.
    const since = audit.filter((e) => e.revision >= r.json.revision)
    expect(since.some((e) => e.action === 'rollout-start')).toBe(true)
    expect(since.some((e) => e.to?.canary === 50)).toBe(false)
  })

  it('a failing check at the start records the rollout as started and aborted; canary stays 0', async () => {
    await reset()
    canaryStatus = 503
    const r = await control.api('POST', '/v1/routes/api/rollout', { body: plan() })
    expect(r.status).toBe(200)
    expect(r.json).toMatchObject({ weights: { canary: 0 }, rollout: { phase: 'aborted', step: 1 } })
    expect(r.json.rollout.reason).toMatch(/smoke check before step 1 failed: .*status 503/)
  })
})
