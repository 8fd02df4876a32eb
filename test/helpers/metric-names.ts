/**
 * The metric names veer's deploy files use (deploy/prometheus/veer-rules.yml, the Grafana dashboard),
 * and the names a /metrics answer exposes, so a test can hold the two together.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'

const ROOT = new URL('../../', import.meta.url).pathname
export const RULES_FILE = join(ROOT, 'deploy/prometheus/veer-rules.yml')
export const RULE_TESTS_FILE = join(ROOT, 'deploy/prometheus/veer-rules.test.yml')
export const DASHBOARD_FILE = join(ROOT, 'deploy/grafana/veer-dashboard.json')

interface Rule {
  readonly record?: string
  readonly alert?: string
  readonly expr: string
}

export function rules(): Rule[] {
  const doc = parse(readFileSync(RULES_FILE, 'utf8')) as { groups: { rules: Rule[] }[] }
  return doc.groups.flatMap((g) => g.rules)
}

/** Every PromQL expression of the dashboard: its panels' targets and its variables' queries. */
export function dashboardExprs(): string[] {
  const d = JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as {
    panels: { targets?: { expr: string }[] }[]
    templating: { list: { query?: unknown }[] }
  }
  const out = d.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr))
  for (const v of d.templating.list) {
    const q = v.query as { query?: string } | string | undefined
    const text = typeof q === 'string' ? q : q?.query
    if (text !== undefined && text !== 'prometheus') out.push(text)
  }
  return out
}

/** veer's own metric names in `exprs` (recording rules are `veer:…`, Prometheus's `up` is not veer's). */
export function veerNames(exprs: readonly string[]): Set<string> {
  const out = new Set<string>()
  for (const e of exprs) for (const m of e.matchAll(/\bveer_[a-z0-9_]+/g)) out.add(m[0])
  return out
}

/** The names a Prometheus text answer declares (`# TYPE`), a histogram's with its series suffixes. */
export function exposedNames(text: string): Set<string> {
  const out = new Set<string>()
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = m as unknown as [string, string, string]
    out.add(name)
    if (type === 'histogram' || type === 'summary')
      for (const s of ['_bucket', '_sum', '_count']) out.add(`${name}${s}`)
  }
  return out
}
