/**
 * An abort never waits behind a smoke check: with a real `veer control`, a proxy played over the wire
 * protocol and a smoke target that holds its GET open, the check before step 2 runs outside control's
 * change queue. An abort sent while the check is held is answered and rolls back at once; the check's
 * late result changes nothing and is logged as dropped.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { announced, type ControlProcess, FakeProxy, startControl } from '../helpers/control.ts'
import { type HeldSmoke, startHeldSmoke } from '../helpers/held-smoke.ts'

let control: ControlProcess
let smoke: HeldSmoke
let proxy: FakeProxy

beforeAll(async () => {
  smoke = await startHeldSmoke()
  control = await startControl()
  proxy = new FakeProxy(control, 'p1', [announced('api')])
  await proxy.register()
})

afterAll(async () => {
  await control?.stop()
  await smoke?.close()
})

describe('abort during a slow smoke check', () => {
  it('is answered and rolls back while the check is held; the late result is dropped', async () => {
    const plan = {
      steps: [{ weight: 10, pause: '0s' }, { weight: 50 }],
      analysis: { enabled: false },
      smoke: { url: smoke.url, requests: 1, expectStatus: [200], timeout: '60s' },
    }
    // Step 1's check passes at once; the one before step 2 is held.
    const started = await control.api('POST', '/v1/routes/api/rollout', { body: plan })
    expect(started.status).toBe(200)
    expect(started.json.weights.canary).toBe(10)
    smoke.hold = true
    const held = smoke.nextHeld()
    // The proxy applies step 1; its zero pause ends and the clock asks for the check before step 2.
    expect(await proxy.ack(started.json.revision)).toBe(204)
    await held

    const aborted = await control.api('POST', '/v1/routes/api/abort', { body: { reason: 'stop it' } })
    expect(smoke.held).toBe(1)
    expect(aborted.status).toBe(200)
    expect(aborted.json).toMatchObject({ weights: { canary: 0 }, rollout: { phase: 'aborted', step: 1 } })

    const dropped = control.waitForLog((l) => l.msg === 'smoke result dropped' && l.route === 'api')
    smoke.release()
    expect(await dropped).toMatchObject({ step: 2, smoke: 'passed' })
    const route = (await control.api('GET', '/v1/routes/api')).json
    expect(route).toMatchObject({ weights: { canary: 0 }, rollout: { phase: 'aborted', step: 1 } })
    const audit = (await control.api('GET', '/v1/audit?route=api&limit=100')).json.entries as {
      action: string
      to: { canary?: number } | null
    }[]
    expect(audit.filter((e) => e.action === 'rollout-abort')).toHaveLength(1)
    expect(audit.some((e) => e.to?.canary === 50)).toBe(false)
  })
})
