/** Token files, roles, constant-time checks and the auth-failure limiter (control/auth.ts). */
import { describe, expect, it } from 'vitest'
import { type Access, allows, FailureLimiter, parseTokens, type Role } from '../../control/auth.ts'

const A = 'aaaaaaaaaaaaaaaaaaaa'
const B = 'bbbbbbbbbbbbbbbbbbbb'
const C = 'cccccccccccccccccccc'

function tokens(text: string | null, env?: string) {
  const r = parseTokens(text, 'tokens', env)
  if (!r.ok) throw new Error(r.error)
  return r.tokens
}

describe('token file', () => {
  it('reads TOKEN ROLE NAME lines, bare tokens, comments and blank lines', () => {
    const t = tokens(`# ops\n${A} operator alice\n\n${B} read grafana  # dashboards\n${C}\n`)
    expect(t.size).toBe(3)
    expect(t.check(`Bearer ${A}`)).toEqual({ name: 'alice', role: 'operator' })
    expect(t.check(`Bearer ${B}`)).toEqual({ name: 'grafana', role: 'read' })
    expect(t.check(`Bearer ${C}`)).toEqual({ name: 'default', role: 'operator' })
  })

  it('adds VEER_TOKEN as operator "env", alone or next to the file', () => {
    expect(tokens(null, A).check(`Bearer ${A}`)).toEqual({ name: 'env', role: 'operator' })
    const both = tokens(`${B} proxy edge`, A)
    expect(both.check(`Bearer ${B}`)?.role).toBe('proxy')
    expect(both.check(`Bearer ${A}`)?.name).toBe('env')
  })

  it('takes a VEER_TOKEN the file also lists as the file says, and tells so (no token in the note)', () => {
    const r = parseTokens(`${A} read grafana\n${B} operator alice`, 'tokens', `${A}\n`)
    if (!r.ok) throw new Error(r.error)
    expect(r.tokens.size).toBe(2)
    expect(r.tokens.check(`Bearer ${A}`)).toEqual({ name: 'grafana', role: 'read' })
    expect(r.notes).toEqual([
      "VEER_TOKEN is also listed in tokens; the file's line holds (role read, name grafana)",
    ])
    expect(parseTokens(`${B} operator alice`, 'tokens', A)).toMatchObject({ ok: true, notes: [] })
  })

  it('accepts several tokens at once (rotation) and only those', () => {
    const t = tokens(`${A} operator old\n${B} operator new`)
    expect(t.check(`Bearer ${A}`)?.name).toBe('old')
    expect(t.check(`Bearer ${B}`)?.name).toBe('new')
    expect(t.check(`Bearer ${C}`)).toBeNull()
    expect(t.check(`Bearer ${A.slice(1)}`)).toBeNull()
    expect(t.check(`Bearer ${A}x`)).toBeNull()
  })

  it('takes the Bearer scheme case-insensitively and nothing else', () => {
    const t = tokens(A)
    expect(t.check(`bearer ${A}`)?.name).toBe('default')
    expect(t.check(`BEARER  ${A}`)?.name).toBe('default')
    expect(t.check(A)).toBeNull()
    expect(t.check(`Basic ${A}`)).toBeNull()
    expect(t.check(`Bearer ${A} extra`)).toBeNull()
    expect(t.check(undefined)).toBeNull()
    expect(t.check('')).toBeNull()
  })

  const BAD: [string, string | null, string | undefined, RegExp][] = [
    ['no token at all', null, undefined, /no token: give --token-file FILE or set VEER_TOKEN/],
    ['an empty file', '# nothing\n\n', undefined, /has no token/],
    [
      'an unknown role',
      `${A} admin root`,
      undefined,
      /line 1: the role \(second field\) must be one of read, operator, proxy/,
    ],
    ['a role without a name', `\n${A} read`, undefined, /line 2: write TOKEN ROLE NAME/],
    ['four fields', `${A} read x y`, undefined, /line 1: write TOKEN ROLE NAME/],
    ['a bad name', `${A} read x/y`, undefined, /line 1: name must be/],
    ['a short token', 'short operator alice', undefined, /line 1: the token is shorter than 16 characters/],
    [
      'a duplicate token',
      `${A} read a\n${A} operator b`,
      undefined,
      /line 2: the same token is listed twice/,
    ],
    ['a short VEER_TOKEN', `${A}`, 'tiny', /VEER_TOKEN: the token is shorter/],
  ]
  for (const [what, text, env, message] of BAD) {
    it(`refuses ${what} with one line naming it, never the token`, () => {
      const r = parseTokens(text, 'tokens', env)
      expect(r.ok).toBe(false)
      if (r.ok) return
      expect(r.error).toMatch(message)
      expect(r.error).not.toContain('\n')
      expect(r.error).not.toContain(A)
      expect(r.error).not.toContain('short operator')
    })
  }
})

describe('roles', () => {
  const TABLE: [Role, Access, boolean][] = [
    ['read', 'read', true],
    ['read', 'operate', false],
    ['read', 'wire', false],
    ['operator', 'read', true],
    ['operator', 'operate', true],
    ['operator', 'wire', true],
    ['proxy', 'read', true],
    ['proxy', 'operate', false],
    ['proxy', 'wire', true],
  ]
  for (const [role, access, allowed] of TABLE) {
    it(`${role} ${allowed ? 'may' : 'may not'} ${access}`, () => expect(allows(role, access)).toBe(allowed))
  }
})

describe('auth failure limiter', () => {
  it('blocks an address after `burst` failures, lets others through, and refills over time', () => {
    const l = new FailureLimiter(3, 1000)
    const t = 50_000
    for (let i = 0; i < 2; i++) l.fail('10.0.0.1', t)
    expect(l.blocked('10.0.0.1', t)).toBe(0)
    l.fail('10.0.0.1', t)
    expect(l.blocked('10.0.0.1', t)).toBe(1)
    expect(l.blocked('10.0.0.2', t)).toBe(0)
    // One failure refilled after a second: one more try, then blocked again.
    expect(l.blocked('10.0.0.1', t + 1000)).toBe(0)
    l.fail('10.0.0.1', t + 1000)
    expect(l.blocked('10.0.0.1', t + 1000)).toBeGreaterThan(0)
    // Fully refilled: forgotten.
    expect(l.blocked('10.0.0.1', t + 10_000)).toBe(0)
  })
})
