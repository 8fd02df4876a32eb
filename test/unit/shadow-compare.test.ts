import { describe, expect, it } from 'vitest'
import { type Answer, compareAnswers, FieldFilter, pathPattern } from '../../proxy/shadow/compare.ts'

const json = (status: number, body: unknown, headers: Record<string, string> = {}): Answer => ({
  status,
  headers: { 'content-type': 'application/json', ...headers },
  body: Buffer.from(JSON.stringify(body)),
})

describe('shadow comparison', () => {
  it('finds nothing between identical answers', () => {
    const a = json(200, { id: 1, items: [{ price: 3 }] })
    expect(
      compareAnswers(a, json(200, { id: 1, items: [{ price: 3 }] }), ['content-type'], new FieldFilter([]))
        .differences,
    ).toEqual([])
  })

  it('names a changed status, header and JSON fields by normalised path', () => {
    const a = json(
      200,
      { total: 10, items: [{ price: 3 }, { price: 7 }], user: { name: 'a' } },
      { etag: 'x' },
    )
    const b = json(
      201,
      { total: 11, items: [{ price: 3 }, { price: 8 }], user: { name: 'a', extra: true } },
      { etag: 'y' },
    )
    const fields = compareAnswers(a, b, ['etag'], new FieldFilter([])).differences.map((d) => d.field)
    expect(fields).toEqual(['status', 'header:etag', 'total', 'items[*].price', 'user.extra'])
  })

  it('drops ignored fields: exact, one-segment wildcard, and whole subtrees', () => {
    const a = json(200, { ts: 1, meta: { requestId: 'a', region: 'x' }, items: [{ updatedAt: 1, price: 1 }] })
    const b = json(200, { ts: 2, meta: { requestId: 'b', region: 'y' }, items: [{ updatedAt: 2, price: 2 }] })
    const result = compareAnswers(a, b, [], new FieldFilter(['ts', 'meta.*', 'items[*].updatedAt']))
    expect(result.differences.map((d) => d.field)).toEqual(['items[*].price'])
    expect(result.ignored.sort()).toEqual(['items[*].updatedAt', 'meta.region', 'meta.requestId', 'ts'])
  })

  it('compares other bodies by hash, and skips bodies that were too large', () => {
    const text = (s: string): Answer => ({
      status: 200,
      headers: { 'content-type': 'text/plain' },
      body: Buffer.from(s),
    })
    expect(compareAnswers(text('a'), text('b'), [], new FieldFilter([])).differences[0]!.field).toBe('body')
    expect(compareAnswers(text('a'), text('a'), [], new FieldFilter([])).differences).toEqual([])
    const big: Answer = { status: 200, headers: {}, body: null }
    const r = compareAnswers(big, text('b'), [], new FieldFilter([]))
    expect(r.bodyCompared).toBe(false)
    expect(r.differences).toEqual([])
  })

  it('reports a type change and a list length change', () => {
    const fields = compareAnswers(
      json(200, { a: 1, l: [1, 2] }),
      json(200, { a: '1', l: [1] }),
      [],
      new FieldFilter([]),
    ).differences
    expect(fields.map((d) => d.field)).toEqual(['a', 'l.length'])
  })

  it.each([
    ['/orders/123', '/orders/:id'],
    ['/orders/123/items/9f1c2a7e-0b5d-4c1e-8f3a-1234567890ab?x=1', '/orders/:id/items/:id'],
    ['/health', '/health'],
  ])('path pattern of %s is %s', (path, pattern) => expect(pathPattern(path)).toBe(pattern))
})

describe('gRPC answers and odd names', () => {
  const grpcAnswer = (grpc: number, body: string): Answer => ({
    status: 200,
    headers: { 'content-type': 'application/grpc' },
    body: Buffer.from(body),
    grpc,
  })

  it('compares grpc-status by name; the same status and message are a match', () => {
    const ok = grpcAnswer(0, 'm')
    expect(compareAnswers(ok, grpcAnswer(0, 'm'), ['content-type'], new FieldFilter([])).differences).toEqual(
      [],
    )
    expect(compareAnswers(ok, grpcAnswer(5, ''), [], new FieldFilter([])).differences).toEqual([
      { field: 'grpc-status', primary: 'OK', shadow: 'NOT_FOUND' },
      {
        field: 'body',
        primary: expect.stringMatching(/^sha256:/),
        shadow: expect.stringMatching(/^sha256:/),
      },
    ])
    // Answers without a gRPC status (plain requests) never differ in it.
    const plain = json(200, {})
    expect(compareAnswers(plain, json(200, {}), [], new FieldFilter([])).differences).toEqual([])
  })

  it('takes `__proto__` and `constructor` as fields like any other, in headers and JSON', () => {
    // Own fields on a null-prototype object, as the mirror's capture builds them.
    const headers = (v: string): Record<string, string> =>
      Object.setPrototypeOf(
        Object.fromEntries([
          ['__proto__', v],
          ['constructor', v],
        ]),
        null,
      )
    const a: Answer = { status: 200, headers: headers('a'), body: Buffer.from('{"constructor":1}') }
    const b: Answer = { status: 200, headers: headers('b'), body: Buffer.from('{"__proto__":1}') }
    const json2 = { ...a, headers: Object.assign(headers('a'), { 'content-type': 'application/json' }) }
    const other = { ...b, headers: Object.assign(headers('b'), { 'content-type': 'application/json' }) }
    expect(
      compareAnswers(json2, other, ['__proto__', 'constructor'], new FieldFilter([])).differences,
    ).toEqual([
      { field: 'header:__proto__', primary: 'a', shadow: 'b' },
      { field: 'header:constructor', primary: 'a', shadow: 'b' },
      { field: 'constructor', primary: 1, shadow: undefined },
      { field: '__proto__', primary: undefined, shadow: 1 },
    ])
    // A name only Object.prototype has is absent from both: no difference.
    expect(compareAnswers(a, a, ['toString', 'hasOwnProperty'], new FieldFilter([])).differences).toEqual([])
  })
})

describe('learned noise', () => {
  it('calls a field noisy the second time it differs, never status or a whole body, and stays bounded', async () => {
    const { ShadowStats } = await import('../../proxy/shadow/stats.ts')
    const stats = new ShadowStats()
    stats.learnNoise('requestId')
    expect(stats.noise.has('requestId')).toBe(false)
    stats.learnNoise('requestId')
    expect(stats.noise.has('requestId')).toBe(true)
    for (let i = 0; i < 3; i++) {
      stats.learnNoise('status')
      stats.learnNoise('body')
    }
    expect(stats.noise.has('status')).toBe(false)
    expect(stats.noise.has('body')).toBe(false)
    for (let i = 0; i < 2000; i++) {
      stats.learnNoise(`byId.${i}`)
      stats.learnNoise(`byId.${i}`)
    }
    expect(stats.noise.size).toBeLessThanOrEqual(500)
  })
})
