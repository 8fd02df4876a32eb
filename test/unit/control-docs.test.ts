/** README's "Control process" section documents what control has: its error codes and its endpoints. */
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { CONTROL_ERRORS } from '../../control/errors.ts'

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
const section = readme.slice(readme.indexOf('## Control process'), readme.indexOf('## Deploying'))

describe('README control section', () => {
  it('documents every control error code with its status, and no code that does not exist', () => {
    const documented = new Map<string, number>()
    // Status first, so these rows never look like the proxy's error table (`| code | status |`).
    for (const m of section.matchAll(/^\| (\d{3}) \| `([a-z_]+)` \|/gm)) documented.set(m[2]!, Number(m[1]))
    const actual = new Map(Object.entries(CONTROL_ERRORS).map(([code, e]) => [code, e.status as number]))
    expect(documented).toEqual(actual)
  })

  it('documents every endpoint the API serves', () => {
    const api = readFileSync(new URL('../../control/api.ts', import.meta.url), 'utf8')
    const paths = [...api.matchAll(/path: \[([^\]]+)\]/g)].map((m) =>
      `/${m[1]!
        .split(',')
        .map((p) => p.trim().slice(1, -1))
        .join('/')}`
        .replace(':route', '{route}')
        .replace(':id', '{id}'),
    )
    expect(paths.length).toBeGreaterThanOrEqual(14)
    for (const path of paths) expect(section).toContain(path)
  })
})
