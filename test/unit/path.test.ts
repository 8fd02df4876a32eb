import { describe, expect, it } from 'vitest'
import { normalizePath } from '../../proxy/listen/path.ts'

describe('normalizePath', () => {
  it.each([
    ['/', '/'],
    ['/a/b?x=1', '/a/b?x=1'],
    ['/public/../admin', '/admin'],
    ['/a/./b/../c', '/a/c'],
    ['/a/b/..', '/a/'],
    ['/a/b/.', '/a/b/'],
    ['/..', '/'],
    ['/../../etc/passwd', '/etc/passwd'],
    ['//admin//x', '/admin/x'],
    ['/a///', '/a/'],
    ['/%61dmin/%7Euser', '/admin/~user'],
    ['/%2e%2e/admin', '/admin'],
    ['/%2E%2E%2fadmin', '/..%2fadmin'],
    ['/a%2Fb', '/a%2Fb'],
    ['/a%20b/%zz/%4', '/a%20b/%zz/%4'],
    ['/.well-known/x', '/.well-known/x'],
    ['/a/..b/c', '/a/..b/c'],
    ['/a/./b?next=/../x//y', '/a/b?next=/../x//y'],
  ])('%s → %s', (input, output) => {
    expect(normalizePath(input)).toBe(output)
  })

  it('returns the same string when there is nothing to do', () => {
    const target = `/api/v1/items/${'x'.repeat(10)}?q=1`
    expect(normalizePath(target)).toBe(target)
  })

  it('is idempotent on random paths', () => {
    const alphabet = ['/', '.', '%', '2', 'e', 'E', 'a', 'F', '?', '~']
    let seed = 7
    const next = () => {
      seed = (seed * 1103515245 + 12345) >>> 0
      return seed
    }
    for (let n = 0; n < 2000; n++) {
      let p = '/'
      const len = next() % 14
      for (let i = 0; i < len; i++) p += alphabet[next() % alphabet.length]
      const once = normalizePath(p)
      expect(once.startsWith('/')).toBe(true)
      expect(normalizePath(once)).toBe(once)
      const path = once.split('?')[0]!
      expect(path.includes('//')).toBe(false)
      expect(path.split('/').some((s) => s === '.' || s === '..')).toBe(false)
    }
  })
})
