/**
 * deploy/prometheus/veer-rules.yml under Debian's promtool: the rules check, their unit tests
 * (veer-rules.test.yml) pass, and every alert has a test where it fires and one where it does not.
 */
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { RULE_TESTS_FILE, RULES_FILE, rules } from '../helpers/metric-names.ts'

const PROMTOOL = process.env.PROMTOOL ?? '/usr/bin/promtool'

/** promtool's exit code and everything it printed. */
function promtool(...args: string[]): { code: number | null; output: string } {
  const r = spawnSync(PROMTOOL, args, { encoding: 'utf8', timeout: 50_000 })
  if (r.error)
    throw new Error(`${PROMTOOL}: ${r.error.message} (install Debian's prometheus, or set PROMTOOL)`)
  return { code: r.status, output: `${r.stdout}${r.stderr}` }
}

interface AlertTest {
  readonly alertname: string
  readonly exp_alerts?: readonly unknown[]
}

describe('alert rules', () => {
  it('promtool check rules', () => {
    const r = promtool('check', 'rules', RULES_FILE)
    expect(r.code, r.output).toBe(0)
  })

  it('promtool test rules', () => {
    const r = promtool('test', 'rules', RULE_TESTS_FILE)
    expect(r.code, r.output).toBe(0)
    expect(r.output).toContain('SUCCESS')
  })

  it('every alert is tested firing and not firing', () => {
    const doc = parse(readFileSync(RULE_TESTS_FILE, 'utf8')) as {
      tests: { alert_rule_test?: AlertTest[] }[]
    }
    const cases = doc.tests.flatMap((t) => t.alert_rule_test ?? [])
    const alerts = rules().flatMap((r) => (r.alert === undefined ? [] : [r.alert]))
    expect(alerts.length).toBeGreaterThanOrEqual(6)
    const missing = alerts.flatMap((a) => {
      const mine = cases.filter((c) => c.alertname === a)
      return [
        ...(mine.some((c) => (c.exp_alerts?.length ?? 0) > 0) ? [] : [`${a}: no firing case`]),
        ...(mine.some((c) => (c.exp_alerts?.length ?? 0) === 0) ? [] : [`${a}: no quiet case`]),
      ]
    })
    expect(missing).toEqual([])
  })
})
