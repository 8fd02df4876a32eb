/**
 * Refused calls cannot grow the audit without bound (control/denials.ts): a read token looping on
 * writes, or a client without a valid token, adds one audit line per key and interval, and a second
 * line with the `count` of the rest when the interval ends (or control stops). Every refusal is
 * accounted for exactly once.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { announced, type ControlProcess, FakeProxy, startControl, TOKENS, until } from '../helpers/control.ts'

let running: ControlProcess[] = []
afterEach(async () => {
  await Promise.all(running.map((c) => c.stop('SIGKILL')))
  running = []
})

async function control(intervalMs: number): Promise<ControlProcess> {
  const c = await startControl({ env: { VEER_CONTROL_DENIAL_INTERVAL_MS: String(intervalMs) } })
  running.push(c)
  await new FakeProxy(c, 'edge-1', [announced('shop', 0)]).register()
  return c
}

interface Line {
  action: string
  who: string
  from: unknown
  to: string
  count?: number
}

function deniedLines(c: ControlProcess): Line[] {
  return readFileSync(join(c.stateDir, 'audit.log'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Line)
    .filter((l) => l.action === 'denied')
}

const accounted = (lines: Line[]) => lines.reduce((n, l) => n + (l.count ?? 1), 0)

describe('refused calls in the audit', () => {
  it('300 forbidden writes of a read token: one line at once, one with count 299 when control stops', async () => {
    const c = await control(3_600_000)
    for (let i = 0; i < 300; i++) {
      const r = await c.api('PUT', '/v1/routes/shop/weights', {
        token: TOKENS.read,
        body: { canary: i % 100 },
      })
      expect(r.status).toBe(403)
    }
    const during = deniedLines(c)
    expect(during).toHaveLength(1)
    expect(during[0]).toMatchObject({
      who: 'dashboard',
      from: '127.0.0.1',
      to: 'PUT /v1/routes/shop/weights',
    })
    await c.stop('SIGTERM')
    const after = deniedLines(c)
    expect(after).toHaveLength(2)
    expect(after[1]!.count).toBe(299)
    expect(accounted(after)).toBe(300)
  })

  it('a forbidden loop over many route names shares one key per endpoint', async () => {
    const c = await control(3_600_000)
    for (let i = 0; i < 50; i++) {
      const r = await c.api('PUT', `/v1/routes/r${i}/weights`, { token: TOKENS.read, body: { canary: 1 } })
      expect(r.status).toBe(403)
    }
    expect(deniedLines(c)).toHaveLength(1)
  })

  it('each interval flushes its count, and every refusal is counted once', async () => {
    const c = await control(1000)
    for (let i = 0; i < 40; i++)
      expect((await c.api('POST', '/v1/routes/shop/abort', { token: TOKENS.read, body: {} })).status).toBe(
        403,
      )
    // The last interval's count is written by the timer: wait for the total to reach every refusal.
    await until(() => accounted(deniedLines(c)) === 40 || undefined)
    const lines = deniedLines(c)
    expect(lines.length).toBeLessThan(40)
    expect(lines.filter((l) => l.count !== undefined).length).toBeGreaterThan(0)
  })

  it('401s and the 429s that follow them are audited aggregated per address', async () => {
    const c = await control(3_600_000)
    const statuses = new Set<number>()
    for (let i = 0; i < 100; i++)
      statuses.add((await c.api('GET', '/v1/routes', { token: 'not-a-valid-token-at-all' })).status)
    expect([...statuses].sort()).toEqual([401, 429])
    const during = deniedLines(c)
    expect(during.map((l) => l.who)).toEqual(['unauthenticated', 'unauthenticated'])
    expect(during.every((l) => l.from === '127.0.0.1')).toBe(true)
    await c.stop('SIGTERM')
    expect(accounted(deniedLines(c))).toBe(100)
  })
})
