import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { parseDuration } from '../../config/duration.ts'
import { configJsonSchema } from '../../config/json-schema.ts'
import { formatIssue, loadConfigFile, validateConfig } from '../../config/load.ts'

const route = (extra: Record<string, unknown> = {}) => ({
  name: 'web',
  stable: { url: 'http://127.0.0.1:3000' },
  ...extra,
})

function issuesOf(raw: unknown): string[] {
  const result = validateConfig(raw)
  return result.ok ? [] : result.issues.map(formatIssue)
}

describe('durations', () => {
  it.each([
    ['250ms', 250],
    ['5s', 5000],
    ['1.5s', 1500],
    ['2m', 120_000],
    ['1h', 3_600_000],
    [0, 0],
    ['0', 0],
  ])('%s is %i ms', (text, ms) => expect(parseDuration(text)).toBe(ms))

  it.each(['5', 750, 30, 's', '5 s', '-1s', '5d', '', 'abc'])('%j is not a duration', (text) => {
    expect(parseDuration(text)).toBeUndefined()
  })

  it.each([
    [30, '"30s" (or 30ms, 30m, 30h)'],
    ['250', '"250s" (or 250ms, 250m, 250h)'],
  ])('a bare %j in a config names the field and the fix', (value, fix) => {
    const result = validateConfig({ routes: [{ ...route(), timeouts: { connect: value } }] })
    expect(result.ok).toBe(false)
    if (result.ok) return
    expect(result.issues).toEqual([
      {
        path: 'routes[0].timeouts.connect',
        message: `has no unit; write ${fix} (got ${JSON.stringify(value)})`,
      },
    ])
  })
})

describe('config validation', () => {
  it('fills every default and freezes the result', () => {
    const result = validateConfig({ routes: [route()] })
    expect(result.ok).toBe(true)
    if (!result.ok) return
    const c = result.config
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 8080 })
    expect(c.admin).toEqual({ host: '127.0.0.1', port: 9901 })
    expect(c.routes[0]!.canaryWeight).toBe(0)
    expect(c.routes[0]!.match).toEqual({ host: '*', pathPrefix: '/' })
    expect(c.routes[0]!.timeouts).toEqual({ connect: 2000, headers: 30_000, body: 30_000, idle: 4000 })
    expect(c.server.headersTimeout).toBe(10_000)
    expect(Object.isFrozen(c.routes[0]!.timeouts)).toBe(true)
  })

  it.each([
    [
      { routes: [route({ canaryWeight: 150, canary: { url: 'http://127.0.0.1:1' } })] },
      'routes[0].canaryWeight must be a whole number from 0 to 100 (got 150)',
    ],
    [
      { routes: [route({ canaryWeight: 10 })] },
      'routes[0].canaryWeight is above 0 but the route has no canary',
    ],
    [
      { routes: [route({ stable: { url: 'ftp://x' } })] },
      'routes[0].stable.url must start with http://, https:// or h2c://',
    ],
    [
      { routes: [route({ stable: { url: 'http://h:1/path' } })] },
      'routes[0].stable.url must be an origin only',
    ],
    [{ routes: [route({ stable: {} })] }, 'routes[0].stable.url is required'],
    [{ routes: [route({ wieght: 5 })] }, 'routes[0].wieght is not a known setting'],
    [{ routes: [route(), route()] }, 'routes[1].name repeats the name of routes[0]'],
    [{ routes: [route({ name: 'a b' })] }, 'routes[0].name must be 1-64 letters'],
    [{ routes: [route({ match: { pathPrefix: 'api' } })] }, 'routes[0].match.pathPrefix must start with /'],
    [
      { routes: [route({ sticky: { header: 'x', cookie: 'y' } })] },
      'routes[0].sticky needs exactly one of header or cookie',
    ],
    [{ routes: [route({ timeouts: { connect: 'soon' } })] }, 'routes[0].timeouts.connect must be a duration'],
    [{ routes: [] }, 'routes must have at least 1 item(s)'],
    [{}, 'routes is required'],
    [{ listen: 'localhost', routes: [route()] }, 'listen must be HOST:PORT'],
    [{ listen: '127.0.0.1:70000', routes: [route()] }, 'listen must be HOST:PORT'],
    [{ log: { level: 'loud' }, routes: [route()] }, 'log.level must be one of'],
    [{ server: { maxHeaders: 2 }, routes: [route()] }, 'server.maxHeaders must be a whole number from 8'],
    [[1, 2], '(top level) must be an object'],
  ])('rejects %j: %s', (raw, expected) => {
    const issues = issuesOf(raw)
    expect(
      issues.some((i) => i.startsWith(expected)),
      issues.join('\n'),
    ).toBe(true)
  })

  it('reports every problem at once, each with its path', () => {
    const issues = issuesOf({
      listen: 'x',
      trustedHops: -1,
      routes: [route({ canaryWeight: 'lots', stable: { url: 1 } })],
    })
    expect(issues.map((i) => i.split(' ')[0])).toEqual([
      'listen',
      'trustedHops',
      'routes[0].stable.url',
      'routes[0].canaryWeight',
    ])
  })

  it('loads the shipped default.yaml', async () => {
    const result = await loadConfigFile(new URL('../../config/default.yaml', import.meta.url).pathname)
    expect(result.ok).toBe(true)
  })

  it('names the line of a YAML syntax error and refuses duplicate keys', async () => {
    const { writeConfigText } = await import('../helpers/files.ts')
    const broken = await loadConfigFile(
      writeConfigText('routes:\n  - name: a\n    stable: {url: http://127.0.0.1:1\n'),
    )
    expect(broken.ok).toBe(false)
    if (!broken.ok) expect(formatIssue(broken.issues[0]!)).toMatch(/is not valid YAML at line \d+/)
    const dup = await loadConfigFile(
      writeConfigText('listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\nroutes: []\n'),
    )
    expect(dup.ok).toBe(false)
  })
})

describe('prototype names', () => {
  it.each(['__proto__', 'constructor', 'toString'])(
    'a key %s is an unknown field, named in the error',
    (key) => {
      const result = validateConfig(
        JSON.parse(`{"routes": [{"name": "a", "stable": {"url": "http://127.0.0.1:1"}}], "${key}": 1}`),
      )
      expect(result.ok).toBe(false)
      if (result.ok) return
      expect(result.issues.map(formatIssue)).toEqual([
        expect.stringMatching(new RegExp(`^${key} is not a known setting`)),
      ])
    },
  )

  it('a route named __proto__ is refused; constructor is an ordinary name', () => {
    const result = validateConfig({ routes: [route({ name: '__proto__' })] })
    expect(result.ok).toBe(false)
    if (result.ok) return
    expect(result.issues.map(formatIssue).join('\n')).toContain('routes[0].name must be 1-64 letters')
    expect(validateConfig({ routes: [route({ name: 'constructor' })] }).ok).toBe(true)
  })
})

describe('published JSON Schema', () => {
  it('config/veer.schema.json is what schema.ts generates (run npm run schema)', () => {
    const onDisk = JSON.parse(readFileSync(new URL('../../config/veer.schema.json', import.meta.url), 'utf8'))
    expect(onDisk).toEqual(configJsonSchema())
  })
})
