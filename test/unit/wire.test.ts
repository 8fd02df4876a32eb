/**
 * The wire protocol's schemas (config/wire.ts), which control and the proxy both check messages with: a
 * good body comes back as sent, every wrong field is named by its path in one pass, and prototype names
 * are refused wherever they stand (as fields, and as keys of route maps).
 */
import { describe, expect, it } from 'vitest'
import { check, type Field, int, record } from '../../config/schema-kit.ts'
import {
  type AckRequest,
  ackRequest,
  type RegisterRequest,
  type RegisterResponse,
  type ReportRequest,
  registerRequest,
  registerResponse,
  reportRequest,
} from '../../config/wire.ts'
import { ApiError } from '../../control/errors.ts'
import { parseRegister, parseReport } from '../../control/schemas.ts'

const S = { url: 'http://127.0.0.1:1', release: 'v1' }
const C = { url: 'http://127.0.0.1:2', release: 'v2' }
const counts = { requests: 9, errors: 1, failed: 2, harmed: 1, saved: 0, latency: [0, 3, 6] }

const REGISTER: RegisterRequest = {
  id: 'host-1-1700000000000',
  routes: [
    { name: 'shop', stable: S, canary: C, shadow: null, canaryWeight: 10 },
    {
      name: 'constructor',
      stable: S,
      canary: null,
      shadow: C,
      canaryWeight: 0,
      changedFrom: { stable: C, canary: null },
    },
  ],
  appliedRevision: 4,
}
const ANSWER: RegisterResponse = {
  revision: 7,
  routes: {
    shop: { version: 3, pair: { stable: S, canary: C }, canary: 25, shadow: 5 },
    // (`as const`: under a key Object.prototype also has, the literal loses its contextual type.)
    toString: { version: 1, pair: { stable: S, canary: C }, canary: 0, canaryFromShadow: true as const },
  },
}
const ACK: AckRequest = { revision: 7, error: 'routes[0].canaryWeight control sent 150' }
const REPORT: ReportRequest = {
  revision: 7,
  intervalMs: 250,
  routes: {
    shop: {
      stable: counts,
      canary: counts,
      fuse: {
        reason: '10 consecutive canary failures (last: 503)',
        version: 3,
        at: 1,
        release: 'v2',
        upstream: C.url,
      },
    },
    plain: { stable: counts, canary: null },
  },
}

/** The problems `field` finds in `value` (sent through JSON, as on the wire), as "path message" lines. */
function problems(field: Field<unknown>, value: unknown): string[] {
  const checked = check(
    field,
    typeof value === 'string' ? JSON.parse(value) : JSON.parse(JSON.stringify(value)),
  )
  return checked.ok ? [] : checked.issues.map((i) => `${i.path} ${i.message}`)
}

describe('wire schemas', () => {
  it.each([
    ['RegisterRequest', registerRequest, REGISTER],
    ['RegisterResponse', registerResponse, ANSWER],
    ['AckRequest', ackRequest, ACK],
    ['ReportRequest', reportRequest, REPORT],
  ] as const)('%s: a good body comes back as sent', (_, field, body) => {
    const checked = check(field as Field<unknown>, JSON.parse(JSON.stringify(body)))
    expect(checked).toEqual({ ok: true, value: body })
    // A route named like a prototype property is an own key, not the prototype's.
    if (checked.ok && 'routes' in body && !Array.isArray(body.routes))
      expect(Object.keys((checked.value as { routes: object }).routes)).toEqual(Object.keys(body.routes))
  })

  it('fills what older peers leave out: null for an absent canary or shadow, 0 counts, the unknown release', () => {
    const reg = check(registerRequest, { id: 'p', routes: [{ name: 'a', stable: { url: S.url } }] })
    expect(reg).toEqual({
      ok: true,
      value: {
        id: 'p',
        appliedRevision: 0,
        routes: [
          {
            name: 'a',
            stable: { url: S.url, release: 'unknown' },
            canary: null,
            shadow: null,
            canaryWeight: 0,
          },
        ],
      },
    })
    expect(check(ackRequest, { revision: 2 })).toEqual({ ok: true, value: { revision: 2, error: null } })
    expect(parseReport({ revision: 1, routes: { a: {} } }).routes.a).toEqual({
      stable: { requests: 0, errors: 0, failed: 0, harmed: 0, saved: 0, latency: [] },
      canary: null,
    })
  })

  it('names every wrong field by its path, all in one pass', () => {
    expect(
      problems(registerRequest, {
        id: 5,
        routes: [{ name: 'a', stable: { url: S.url, release: 7 }, canaryWeight: 101, changedFrom: {} }],
        appliedRevision: -1,
      }),
    ).toEqual([
      'id must be a string of at least 1 character(s) (got 5)',
      'routes[0].stable.release must be a string of at least 1 character(s) (got 7)',
      'routes[0].canaryWeight must be a whole number from 0 to 100 (got 101)',
      expect.stringMatching(/^routes\[0\]\.changedFrom\.stable is required/),
      'appliedRevision must be a whole number from 0 to 9007199254740991 (got -1)',
    ])
    expect(problems(ackRequest, { revision: '3', error: 5 })).toEqual([
      'revision must be a whole number from 0 to 9007199254740991 (got "3")',
      'error must be a string of at least 0 character(s) (got 5)',
    ])
    expect(
      problems(reportRequest, {
        revision: 1,
        routes: {
          a: { stable: { latency: [1, 'x'] }, canary: { requests: 1.5 }, fuse: { at: 1 } },
          'b c': {},
        },
      }),
    ).toEqual([
      'routes.a.stable.latency[1] must be a whole number from 0 to 9007199254740991 (got "x")',
      'routes.a.canary.requests must be a whole number from 0 to 9007199254740991 (got 1.5)',
      expect.stringMatching(/^routes\.a\.fuse\.reason is required/),
      'routes.b c is not a route name (1-64 letters, digits, - and _)',
    ])
    const pair = { stable: S, canary: C }
    expect(
      problems(registerResponse, {
        revision: 2,
        routes: {
          a: { version: 1, pair, canary: '5', shadow: '5', canaryFromShadow: false },
          b: { version: 1, pair: { stable: { release: 'v1' } }, canary: 0 },
          c: { version: 1, canary: 0 },
        },
      }),
    ).toEqual([
      'routes.a.canary must be a number (got "5")',
      'routes.a.shadow must be a number (got "5")',
      'routes.a.canaryFromShadow must be true when given (got false)',
      expect.stringMatching(/^routes\.b\.pair\.stable\.url is required/),
      expect.stringMatching(/^routes\.b\.pair\.canary is required/),
      expect.stringMatching(/^routes\.c\.pair is required: .*upgrade control first/),
    ])
  })

  it('takes any weight: one this proxy cannot apply is NACKed by withWeights, not refused unread', () => {
    const body = {
      revision: 2,
      routes: { a: { version: 1, pair: { stable: S, canary: null }, canary: 150 } },
    }
    expect(problems(registerResponse, body)).toEqual([])
  })

  it('skips fields a newer control added to its answers; control refuses any the proxy did not send', () => {
    const newer = { ...ANSWER, hint: 1, routes: { shop: { ...ANSWER.routes.shop, weightsFrom: 'api' } } }
    expect(check(registerResponse, newer)).toEqual({
      ok: true,
      value: { ...ANSWER, routes: { shop: ANSWER.routes.shop } },
    })
    expect(problems(registerRequest, { ...REGISTER, hint: 1 })).toEqual([
      'hint is not a known setting; allowed here: id, routes, appliedRevision',
    ])
  })

  it("reads a rollback's reason (an older proxy skips the field like any newer one), and names a bad one", () => {
    const shop = { ...ANSWER.routes.shop, rollback: { reason: 'latency-p95', at: 5 } }
    expect(check(registerResponse, { ...ANSWER, routes: { shop } })).toEqual({
      ok: true,
      value: { ...ANSWER, routes: { shop: { ...ANSWER.routes.shop, rollback: { reason: 'latency-p95' } } } },
    })
    const bad = { ...ANSWER.routes.shop, rollback: { reason: 3 } }
    expect(problems(registerResponse, { ...ANSWER, routes: { shop: bad } })).toEqual([
      expect.stringMatching(/^routes\.shop\.rollback\.reason must be a string/),
    ])
  })

  const PROTO = ['__proto__', 'constructor', 'toString']

  it.each(PROTO)('refuses %s as a field of any body, naming it', (name) => {
    const field = (body: object) => JSON.stringify(body).replace('"x":1', `"${name}":{}`)
    expect(problems(registerRequest, field({ ...REGISTER, x: 1 }))).toEqual([
      `${name} is not a known setting; allowed here: id, routes, appliedRevision`,
    ])
    expect(
      problems(
        registerRequest,
        field({ ...REGISTER, routes: [{ ...REGISTER.routes[0], stable: { ...S, x: 1 } }] }),
      ),
    ).toEqual([`routes[0].stable.${name} is not a known setting; allowed here: url, release`])
    expect(problems(ackRequest, field({ ...ACK, x: 1 }))).toEqual([
      `${name} is not a known setting; allowed here: revision, error`,
    ])
    expect(
      problems(reportRequest, field({ ...REPORT, routes: { plain: { ...REPORT.routes.plain, x: 1 } } })),
    ).toEqual([`routes.plain.${name} is not a known setting; allowed here: stable, canary, fuse`])
    // Control's answers may carry new fields, never prototype names.
    expect(problems(registerResponse, field({ ...ANSWER, x: 1 }))).toEqual([
      `${name} is not a known setting; allowed here: revision, routes`,
    ])
    const shop = { ...ANSWER.routes.shop, pair: { stable: { ...S, x: 1 }, canary: C } }
    expect(problems(registerResponse, field({ ...ANSWER, routes: { shop } }))).toEqual([
      `routes.shop.pair.stable.${name} is not a known setting; allowed here: url, release`,
    ])
  })

  it('refuses __proto__ as a route name in every route map; constructor and toString are route names', () => {
    const proto = (body: object) => JSON.stringify(body).replace('"x":', '"__proto__":')
    const message = 'is the prototype key, never a route name; remove it'
    expect(
      problems(registerResponse, proto({ ...ANSWER, routes: { ...ANSWER.routes, x: ANSWER.routes.shop } })),
    ).toEqual([`routes.__proto__ ${message}`])
    expect(problems(reportRequest, proto({ ...REPORT, routes: { x: REPORT.routes.plain } }))).toEqual([
      `routes.__proto__ ${message}`,
    ])
    const routes = { constructor: REPORT.routes.plain, toString: REPORT.routes.plain }
    const report = check(reportRequest, { ...REPORT, routes })
    expect(report.ok && Object.hasOwn(report.value.routes, 'constructor')).toBe(true)
  })

  it('refuses __proto__ as a key of any record, whatever its key check says', () => {
    const any = record('Any keys', () => null, int('A count', 0, 9))
    expect(problems(any, '{"a":1,"__proto__":2}')).toEqual(['__proto__ is not allowed as a key here'])
  })

  it('control answers a prototype name with a 400 invalid_body naming it', () => {
    const refusal = (fn: () => unknown) => {
      try {
        fn()
      } catch (err) {
        if (err instanceof ApiError) return { status: err.status, code: err.code, message: err.message }
      }
      throw new Error('expected a refusal')
    }
    expect(
      refusal(() => parseRegister(JSON.parse('{"id":"p","routes":[],"__proto__":{"admin":true}}'))),
    ).toEqual({
      status: 400,
      code: 'invalid_body',
      message: '__proto__ is not a known setting; allowed here: id, routes, appliedRevision',
    })
    expect(refusal(() => parseReport(JSON.parse('{"revision":1,"routes":{"__proto__":{}}}'))).message).toBe(
      'routes.__proto__ is the prototype key, never a route name; remove it',
    )
  })
})
