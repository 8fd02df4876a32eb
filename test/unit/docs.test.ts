/** README documents what the code has: the config table and the error codes stay in step. */
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { CHECK_OPTIONS } from '../../cli/check.ts'
import { COMMANDS } from '../../cli/main.ts'
import { withConfigTable } from '../../config/docs.ts'
import { CONTROL_OPTIONS } from '../../control/args.ts'
import { PROXY_OPTIONS } from '../../proxy/args.ts'
import { PROXY_ERRORS } from '../../proxy/errors.ts'

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')

describe('README', () => {
  it('has the config table schema.ts generates (run npm run schema)', () => {
    expect(withConfigTable(readme)).toBe(readme)
  })

  it('documents every error code with its status, and no code that does not exist', () => {
    const documented = new Map<string, number>()
    for (const m of readme.matchAll(/^\| `([a-z_]+)` \| (\d{3}) \|/gm)) documented.set(m[1]!, Number(m[2]))
    const actual = new Map(Object.entries(PROXY_ERRORS).map(([code, e]) => [code, e.status as number]))
    expect(documented).toEqual(actual)
  })

  it('documents every metric the proxy registers', async () => {
    const { ProxyMetrics } = await import('../../proxy/metrics.ts')
    const names = (await new ProxyMetrics().registry.getMetricsAsJSON())
      .map((m) => m.name)
      .filter((n) => n.startsWith('veer_'))
    expect(names.length).toBeGreaterThanOrEqual(6)
    for (const name of names) expect(readme).toContain(`| \`${name}\` |`)
  })

  it("names every command and every flag of proxy, control and check (their parsers' tables)", () => {
    for (const [name] of COMMANDS) expect(readme).toContain(`veer ${name}`)
    for (const options of [PROXY_OPTIONS, CONTROL_OPTIONS, CHECK_OPTIONS])
      for (const flag of Object.keys(options)) expect(readme, `--${flag}`).toContain(`\`--${flag}`)
  })
})
