/**
 * The control API against a real `veer control` process: auth and roles, every bad input refused with
 * the contract's JSON error and nothing changed (routes, state.json and the audit log compared before
 * and after), If-Match under concurrency, and server-sent events.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { announced, type ControlProcess, FakeProxy, startControl, TOKENS, until } from '../helpers/control.ts'

let control: ControlProcess
let proxy: FakeProxy

beforeAll(async () => {
  // A proxy that registered stays live for the whole file (an hour) without a report timer: a report
  // landing between two snapshots would change the rollout's verdict under a test that changed nothing.
  control = await startControl({
    env: { VEER_CONTROL_AUTH_BURST: '100000', VEER_CONTROL_LIVE_MS: '3600000' },
  })
  proxy = new FakeProxy(control, 'edge-1', [
    announced('shop', 5),
    announced('plain', 0, false),
    announced('busy', 0),
  ])
  // A live proxy that never acks nor reports: the rollout on "busy" stays waiting for it, its verdict
  // stays the clock's first, so nothing moves by itself.
  await proxy.register()
})

afterAll(async () => {
  expect(await control?.stop()).toBe(0)
})

async function snapshot() {
  const routes = await control.api('GET', '/v1/routes')
  const audit = await control.api('GET', '/v1/audit?limit=10000')
  return {
    routes: routes.json,
    audit: audit.json.total as number,
    state: readFileSync(join(control.stateDir, 'state.json'), 'utf8'),
    auditFile: readFileSync(join(control.stateDir, 'audit.log'), 'utf8'),
  }
}

describe('auth and roles', () => {
  it('GET /healthz needs no token', async () => {
    const r = await control.api('GET', '/healthz', { token: null })
    expect(r.status).toBe(200)
  })

  it('a missing or wrong token is 401 JSON with WWW-Authenticate, on every path', async () => {
    for (const path of ['/v1/routes', '/v1/routes/shop', '/v1/nope', '/v1/events']) {
      const none = await control.api('GET', path, { token: null })
      expect(none.status).toBe(401)
      expect(none.json.error).toBe('unauthorized')
      expect(none.headers.get('www-authenticate')).toMatch(/^Bearer/)
      const wrong = await control.api('GET', path, { token: 'not-a-valid-token-at-all' })
      expect(wrong.status).toBe(401)
      expect(wrong.json.message).not.toContain('not-a-valid-token-at-all')
    }
  })

  it('read may GET but not change; proxy may register but not change weights; both rotated operators may', async () => {
    expect((await control.api('GET', '/v1/routes', { token: TOKENS.read })).status).toBe(200)
    expect((await control.api('GET', '/v1/proxies', { token: TOKENS.proxy })).status).toBe(200)
    const before = await control.api('GET', '/v1/audit?limit=10000')
    for (const token of [TOKENS.read, TOKENS.proxy]) {
      const r = await control.api('PUT', '/v1/routes/shop/weights', { token, body: { canary: 50 } })
      expect(r.status).toBe(403)
      expect(r.json.error).toBe('forbidden')
    }
    const reg = await control.api('POST', '/v1/proxies/register', {
      token: TOKENS.read,
      body: { id: 'x', routes: [], appliedRevision: 0 },
    })
    expect(reg.status).toBe(403)
    expect((await control.api('GET', '/v1/routes/shop')).json.weights.canary).toBe(5)
    // Denied attempts are audited with who tried what; they change no route.
    const after = await control.api('GET', '/v1/audit?limit=10000')
    const denied = after.json.entries.slice(before.json.entries.length)
    expect(denied.map((e: { who: string; action: string }) => `${e.who} ${e.action}`)).toEqual([
      'dashboard denied',
      'edge denied',
      'dashboard denied',
    ])
    for (const [token, name, weight] of [
      [TOKENS.operator, 'alice', 6],
      [TOKENS.operator2, 'bob', 7],
    ] as const) {
      const r = await control.api('PUT', '/v1/routes/shop/weights', {
        token,
        body: { canary: weight, reason: 'rotation' },
      })
      expect(r.status).toBe(200)
      const last = (await control.api('GET', '/v1/audit?limit=1')).json.entries[0]
      expect([last.who, last.role, last.why, last.to]).toEqual([
        name,
        'operator',
        'rotation',
        { canary: weight },
      ])
    }
  })
})

describe('bad input changes nothing', () => {
  const big = JSON.stringify({ canary: 5, reason: 'x'.repeat(70 * 1024) })
  type Case = [
    string,
    string,
    string,
    { body?: unknown; raw?: string; headers?: Record<string, string>; token?: string | null },
    number,
    string,
  ]
  const CASES: Case[] = [
    ['unknown route', 'PUT', '/v1/routes/nope/weights', { body: { canary: 5 } }, 404, 'unknown_route'],
    ['weight over 100', 'PUT', '/v1/routes/shop/weights', { body: { canary: 101 } }, 400, 'invalid_body'],
    ['weight below 0', 'PUT', '/v1/routes/shop/weights', { body: { canary: -1 } }, 400, 'invalid_body'],
    [
      'weight not a whole number',
      'PUT',
      '/v1/routes/shop/weights',
      { body: { canary: 12.5 } },
      400,
      'invalid_body',
    ],
    ['weight as a string', 'PUT', '/v1/routes/shop/weights', { body: { canary: '10' } }, 400, 'invalid_body'],
    [
      'malformed JSON',
      'PUT',
      '/v1/routes/shop/weights',
      { raw: '{"canary": 10', headers: { 'content-type': 'application/json' } },
      400,
      'malformed_json',
    ],
    [
      'unknown field',
      'PUT',
      '/v1/routes/shop/weights',
      { body: { canary: 10, stable: 90 } },
      400,
      'invalid_body',
    ],
    [
      'a prototype name as a field',
      'PUT',
      '/v1/routes/shop/weights',
      { raw: '{"canary": 10, "__proto__": {"canary": 1}}', headers: { 'content-type': 'application/json' } },
      400,
      'invalid_body',
    ],
    [
      'constructor as a field',
      'PUT',
      '/v1/routes/shop/weights',
      { raw: '{"canary": 10, "constructor": 1}', headers: { 'content-type': 'application/json' } },
      400,
      'invalid_body',
    ],
    ['no body', 'PUT', '/v1/routes/shop/weights', {}, 400, 'invalid_body'],
    ['a JSON list', 'PUT', '/v1/routes/shop/weights', { body: [10] }, 400, 'invalid_body'],
    [
      'not JSON content',
      'PUT',
      '/v1/routes/shop/weights',
      { raw: 'canary=10', headers: { 'content-type': 'application/x-www-form-urlencoded' } },
      415,
      'unsupported_media_type',
    ],
    [
      'a body over 64 KiB',
      'PUT',
      '/v1/routes/shop/weights',
      { raw: big, headers: { 'content-type': 'application/json' } },
      413,
      'body_too_large',
    ],
    [
      'a stale If-Match',
      'PUT',
      '/v1/routes/shop/weights',
      { body: { canary: 10 }, headers: { 'if-match': '"1"' } },
      412,
      'version_mismatch',
    ],
    [
      'a weak If-Match',
      'PUT',
      '/v1/routes/shop/weights',
      { body: { canary: 10 }, headers: { 'if-match': 'W/"999"' } },
      412,
      'version_mismatch',
    ],
    [
      'a canary weight on a route without canary',
      'PUT',
      '/v1/routes/plain/weights',
      { body: { canary: 10 } },
      409,
      'no_canary',
    ],
    ['a plan with no steps', 'POST', '/v1/routes/shop/rollout', { body: { steps: [] } }, 400, 'invalid_plan'],
    [
      'a plan with an unknown field',
      'POST',
      '/v1/routes/shop/rollout',
      { body: { steps: [{ weight: 5 }], pace: 'fast' } },
      400,
      'invalid_plan',
    ],
    [
      'a plan with a bad pause',
      'POST',
      '/v1/routes/shop/rollout',
      { body: { steps: [{ weight: 5, pause: '5 minutes' }] } },
      400,
      'invalid_plan',
    ],
    [
      'a plan with a pause without its unit',
      'POST',
      '/v1/routes/shop/rollout',
      { body: { steps: [{ weight: 5, pause: 30 }] } },
      400,
      'invalid_plan',
    ],
    [
      'a plan whose inconclusive action extend has no extend duration',
      'POST',
      '/v1/routes/shop/rollout',
      { body: { steps: [{ weight: 5, pause: '1m' }], analysis: { inconclusive: { action: 'extend' } } } },
      400,
      'invalid_plan',
    ],
    [
      'a plan whose Prometheus check has an unknown placeholder and both max and min',
      'POST',
      '/v1/routes/shop/rollout',
      {
        body: {
          steps: [{ weight: 5, pause: '1m' }],
          analysis: {
            prometheus: {
              url: 'http://127.0.0.1:9090',
              checks: [{ name: 'e', query: 'x{r="{{release}}"}', max: 1, min: 0 }],
            },
          },
        },
      },
      400,
      'invalid_plan',
    ],
    [
      'a plan for an unknown route',
      'POST',
      '/v1/routes/nope/rollout',
      { body: { steps: [{ weight: 5 }] } },
      404,
      'unknown_route',
    ],
    [
      'a plan as malformed JSON',
      'POST',
      '/v1/routes/shop/rollout',
      { raw: '{steps: []}', headers: { 'content-type': 'application/json' } },
      400,
      'malformed_json',
    ],
    ['promote with no rollout', 'POST', '/v1/routes/shop/promote', {}, 409, 'no_rollout'],
    ['pause with no rollout', 'POST', '/v1/routes/shop/pause', {}, 409, 'no_rollout'],
    ['resume with no rollout', 'POST', '/v1/routes/shop/resume', {}, 409, 'no_rollout'],
    [
      'promote with a bad field',
      'POST',
      '/v1/routes/shop/promote',
      { body: { full: 'yes' } },
      400,
      'invalid_body',
    ],
    [
      'abort with an unknown field',
      'POST',
      '/v1/routes/shop/abort',
      { body: { now: true } },
      400,
      'invalid_body',
    ],
    [
      'a set-weight during a rollout',
      'PUT',
      '/v1/routes/busy/weights',
      { body: { canary: 50 } },
      409,
      'rollout_active',
    ],
    [
      'a second rollout',
      'POST',
      '/v1/routes/busy/rollout',
      { body: { steps: [{ weight: 5 }] } },
      409,
      'rollout_active',
    ],
    ['resume of a running rollout', 'POST', '/v1/routes/busy/resume', {}, 409, 'not_paused'],
    ['DELETE of a route', 'DELETE', '/v1/routes/shop', {}, 405, 'method_not_allowed'],
    ['GET of a mutation', 'GET', '/v1/routes/shop/weights', {}, 405, 'method_not_allowed'],
    ['POST of a collection', 'POST', '/v1/routes', { body: { name: 'x' } }, 405, 'method_not_allowed'],
    [
      'a weight change by POST',
      'POST',
      '/v1/routes/shop/weights',
      { body: { canary: 10 } },
      405,
      'method_not_allowed',
    ],
    ['an unknown endpoint', 'GET', '/v1/nothing', {}, 404, 'not_found'],
    ['a bad audit limit', 'GET', '/v1/audit?limit=0', {}, 400, 'invalid_query'],
    ['a watch by an unknown proxy', 'GET', '/v1/proxies/ghost/watch?revision=0', {}, 404, 'unknown_proxy'],
    [
      'an ack of a future revision',
      'POST',
      '/v1/proxies/edge-1/ack',
      { body: { revision: 1e9, error: null } },
      400,
      'invalid_body',
    ],
    [
      'a register with an unknown field',
      'POST',
      '/v1/proxies/register',
      { body: { id: 'p', routes: [], appliedRevision: 0, zone: 'a' } },
      400,
      'invalid_body',
    ],
    [
      'no token',
      'PUT',
      '/v1/routes/shop/weights',
      { body: { canary: 10 }, token: null },
      401,
      'unauthorized',
    ],
    [
      'a wrong token',
      'POST',
      '/v1/routes/shop/abort',
      { body: {}, token: 'wrong-token-wrong-token' },
      401,
      'unauthorized',
    ],
  ]

  beforeEach(async () => {
    const busy = await control.api('GET', '/v1/routes/busy')
    if (busy.json.rollout?.phase !== 'progressing')
      expect(
        (
          await control.api('POST', '/v1/routes/busy/rollout', {
            body: { steps: [{ weight: 10 }, { weight: 20 }] },
          })
        ).status,
      ).toBe(200)
    // The clock has judged the new rollout once (no traffic: inconclusive); with no report it stays so.
    await until(async () => (await control.api('GET', '/v1/routes/busy')).json.rollout.analysis.verdict)
  })

  for (const [what, method, path, opts, status, code] of CASES) {
    it(`${what}: ${status} ${code}`, async () => {
      const before = await snapshot()
      const r = await control.api(method, path, opts)
      expect(r.status).toBe(status)
      expect(r.headers.get('content-type')).toMatch(/^application\/json/)
      expect(Object.keys(r.json).sort()).toEqual(['error', 'message'])
      expect(r.json.error).toBe(code)
      expect(r.json.message.length).toBeGreaterThan(10)
      if (status === 405) expect(r.headers.get('allow')).toBeTruthy()
      expect(await snapshot()).toEqual(before)
    })
  }

  it('reports every problem of a body at once, naming the fields', async () => {
    const r = await control.api('POST', '/v1/routes/shop/rollout', {
      body: { steps: [{ weight: 500 }, { weight: 5, pause: 'x' }], extra: 1 },
    })
    expect(r.json.message).toMatch(/extra is not a known setting/)
    expect(r.json.message).toMatch(/steps\[0\]\.weight must be a whole number from 0 to 100 \(got 500\)/)
    expect(r.json.message).toMatch(/steps\[1\]\.pause must be a duration/)
  })

  it('names the Prometheus fields at fault', async () => {
    const r = await control.api('POST', '/v1/routes/shop/rollout', {
      body: {
        steps: [{ weight: 5, pause: '1m' }],
        analysis: {
          prometheus: { url: 'ftp://p', checks: [{ name: 'e', query: '{{x}}', max: 1, for: '1' }] },
        },
      },
    })
    expect(r.status).toBe(400)
    expect(r.json.message).toMatch(/analysis\.prometheus\.url must be http:\/\/ or https:\/\//)
    expect(r.json.message).toMatch(
      /analysis\.prometheus\.checks\[0\]\.query has an unknown placeholder \{\{x\}\}/,
    )
    expect(r.json.message).toMatch(/analysis\.prometheus\.checks\[0\]\.for has no unit/)
  })

  it('names the unit a bare pause lacks, and starts nothing', async () => {
    const r = await control.api('POST', '/v1/routes/shop/rollout', {
      body: { steps: [{ weight: 5, pause: 30 }] },
    })
    expect(r.status).toBe(400)
    expect(r.json.message).toMatch(/steps\[0\]\.pause has no unit; write "30s" \(or 30ms, 30m, 30h\)/)
  })
})

describe('versions', () => {
  it('GET carries the version as ETag; If-Match * and no If-Match are accepted; a same-value PUT changes nothing', async () => {
    const r = await control.api('GET', '/v1/routes/shop')
    expect(r.headers.get('etag')).toBe(`"${r.json.version}"`)
    const star = await control.api('PUT', '/v1/routes/shop/weights', {
      body: { canary: 11 },
      headers: { 'if-match': '*' },
    })
    expect(star.status).toBe(200)
    expect(star.headers.get('etag')).toBe(`"${r.json.version + 1}"`)
    const plain = await control.api('PUT', '/v1/routes/shop/weights', { body: { canary: 12 } })
    expect(plain.json.version).toBe(r.json.version + 2)
    const before = await snapshot()
    const same = await control.api('PUT', '/v1/routes/shop/weights', { body: { canary: 12 } })
    expect([same.status, same.json.version]).toEqual([200, r.json.version + 2])
    expect(await snapshot()).toEqual(before)
  })

  it('20 concurrent PUTs with the same If-Match: exactly one 200, the rest 412, one audit entry', async () => {
    const current = await control.api('GET', '/v1/routes/shop')
    const etag = current.headers.get('etag')!
    const before = await snapshot()
    const replies = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        control.api('PUT', '/v1/routes/shop/weights', {
          body: { canary: 30 + i },
          headers: { 'if-match': etag },
        }),
      ),
    )
    const statuses = replies.map((r) => r.status).sort()
    expect(statuses.filter((s) => s === 200)).toHaveLength(1)
    expect(statuses.filter((s) => s === 412)).toHaveLength(19)
    const winner = replies.find((r) => r.status === 200)!
    const after = await snapshot()
    expect(after.audit).toBe(before.audit + 1)
    expect((await control.api('GET', '/v1/routes/shop')).json.weights.canary).toBe(winner.json.weights.canary)
  })
})

describe('server-sent events', () => {
  it('delivers a change with its audit entry and the route after it', async () => {
    const ac = new AbortController()
    const res = await fetch(`${control.url}/v1/events`, {
      headers: { authorization: `Bearer ${TOKENS.read}` },
      signal: ac.signal,
    })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/)
    let text = ''
    const reader = res.body!.getReader()
    const pump = (async () => {
      for (;;) {
        const { value, done } = await reader.read()
        if (done) return
        text += Buffer.from(value).toString()
      }
    })().catch(() => {})
    await until(() => text.includes('event: hello'))
    const put = await control.api('PUT', '/v1/routes/shop/weights', { body: { canary: 77, reason: 'sse' } })
    await until(() => text.includes('"why":"sse"'))
    const frame = text.split('\n\n').find((f) => f.includes('"why":"sse"'))!
    expect(frame).toMatch(new RegExp(`^id: ${put.json.revision}\nevent: change\ndata: `))
    const data = JSON.parse(frame.split('data: ')[1]!)
    expect(data).toMatchObject({ action: 'set-weight', who: 'alice', route: 'shop', to: { canary: 77 } })
    expect(data.state.weights).toEqual({ stable: 23, canary: 77 })
    ac.abort()
    await pump
  })
})
