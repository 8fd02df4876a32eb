/**
 * Load the proxy configuration from YAML or from the quick-start flags: validate everything in one pass,
 * report every problem with its field path and a fix, and hand back a deeply frozen value or nothing.
 */
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import type * as Yaml from 'yaml'
import { configField } from './schema.ts'
import { deepFreeze, type Issue, isRouteName } from './schema-kit.ts'
import type { ProxyConfig } from './types.ts'

export type { Issue }

export type LoadResult = { ok: true; config: ProxyConfig } | { ok: false; issues: Issue[] }

/** yaml (~0.7 MiB of heap once loaded) comes in with the first file read: `veer proxy` on flags never needs it. */
let yaml: typeof Yaml | null = null
const require = createRequire(import.meta.url)

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const STATUS = /^[1-5](?:xx|[0-9]{2})$/

/** Validate a parsed document (from YAML, JSON or flags). */
export function validateConfig(raw: unknown): LoadResult {
  const issues: Issue[] = []
  const parsed = configField.parse(raw, '', issues) as ProxyConfig | undefined
  // Cross-field checks need well-formed fields: they run once every field has passed on its own.
  if (parsed && issues.length === 0) crossCheck(parsed, issues)
  if (issues.length > 0 || !parsed) return { ok: false, issues }
  return { ok: true, config: deepFreeze(parsed) }
}

export async function loadConfigFile(
  path: string,
  overrides: Record<string, unknown> = {},
): Promise<LoadResult> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message
    return { ok: false, issues: [{ path: '--config', message: `cannot read ${path}: ${reason}` }] }
  }
  const doc = parseYaml(text, path)
  if (!doc.ok) return doc
  const raw = doc.value
  if (raw !== null && typeof raw === 'object' && !Array.isArray(raw)) {
    const doc = raw as Record<string, unknown>
    // --tls-cert/--tls-key replace the file's cert and key only, not its other TLS settings.
    const tls = doc.tls
    Object.assign(doc, overrides)
    if (overrides.tls !== undefined && tls !== null && typeof tls === 'object' && !Array.isArray(tls))
      doc.tls = { ...tls, ...(overrides.tls as object) }
  }
  return validateConfig(raw)
}

/**
 * A YAML (or JSON: YAML is a superset) document as its value, or every syntax error as an issue of
 * `path` naming its line and column. Repeated keys are errors. The proxy's, control's and plan files
 * are read with it.
 */
export function parseYaml(
  text: string,
  path: string,
): { ok: true; value: unknown } | { ok: false; issues: Issue[] } {
  yaml ??= require('yaml') as typeof Yaml
  const doc = yaml.parseDocument(text, { uniqueKeys: true, prettyErrors: true })
  if (doc.errors.length === 0) return { ok: true, value: doc.toJS() as unknown }
  return {
    ok: false,
    issues: doc.errors.map((e) => {
      const where = e.linePos ? ` at line ${e.linePos[0].line}, column ${e.linePos[0].col}` : ''
      const what = e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')
      return { path, message: `is not valid YAML${where}: ${what}` }
    }),
  }
}

export function formatIssue(issue: Issue): string {
  return `${issue.path || '(top level)'} ${issue.message}`
}

function crossCheck(config: ProxyConfig, issues: Issue[]): void {
  if (config.versionHeader !== '' && !TOKEN.test(config.versionHeader)) {
    issues.push({ path: 'versionHeader', message: 'must be a valid header name such as x-veer-version' })
  }
  const seenNames = new Map<string, number>()
  const seenMatches = new Map<string, number>()
  config.routes.forEach((route, i) => {
    const at = `routes[${i}]`
    if (!isRouteName(route.name)) {
      issues.push({
        path: `${at}.name`,
        message: `must be 1-64 letters, digits, - or _, and not __proto__ (got ${JSON.stringify(route.name)})`,
      })
    }
    const sameName = seenNames.get(route.name)
    if (sameName !== undefined) {
      issues.push({
        path: `${at}.name`,
        message: `repeats the name of routes[${sameName}]; give each route its own name`,
      })
    } else seenNames.set(route.name, i)
    if (!route.match.pathPrefix.startsWith('/')) {
      issues.push({
        path: `${at}.match.pathPrefix`,
        message: `must start with / (got ${JSON.stringify(route.match.pathPrefix)})`,
      })
    }
    const host = route.match.host
    if (
      host !== '*' &&
      (host.includes('*', host.startsWith('*.') ? 1 : 0) || host.includes('/') || host.includes(' '))
    ) {
      issues.push({
        path: `${at}.match.host`,
        message: `must be a host name, *.suffix or * (got ${JSON.stringify(host)})`,
      })
    }
    const key = `${host.toLowerCase()} ${route.match.pathPrefix}`
    const sameMatch = seenMatches.get(key)
    if (sameMatch !== undefined) {
      issues.push({
        path: `${at}.match`,
        message: `takes the same host and pathPrefix as routes[${sameMatch}]; one of them would never match`,
      })
    } else seenMatches.set(key, i)
    if (route.canaryWeight > 0 && !route.canary) {
      issues.push({
        path: `${at}.canaryWeight`,
        message: 'is above 0 but the route has no canary; add canary.url or set canaryWeight to 0',
      })
    }
    for (const side of ['stable', 'canary', 'shadow'] as const) {
      const u = route[side]
      if (u === undefined || u.url.startsWith('https:')) continue
      for (const key of ['ca', 'serverName'] as const) {
        if (u[key] !== undefined)
          issues.push({
            path: `${at}.${side}.${key}`,
            message: `applies only to an https:// upstream (url is ${u.url}); remove it or use https://`,
          })
      }
    }
    route.canaryMatch.forEach((m, k) => {
      const given = (['header', 'cookie', 'query'] as const).filter((key) => m[key] !== undefined)
      if (given.length !== 1)
        issues.push({
          path: `${at}.canaryMatch[${k}]`,
          message: `needs exactly one of header, cookie, query (got ${given.length === 0 ? 'none' : given.join(' and ')})`,
        })
      else if (m.header !== undefined && !TOKEN.test(m.header))
        issues.push({
          path: `${at}.canaryMatch[${k}].header`,
          message: 'must be a valid header name such as x-beta',
        })
    })
    if (route.canaryMatch.length > 0 && !route.canary)
      issues.push({
        path: `${at}.canaryMatch`,
        message:
          'sends requests to the canary, but the route has no canary; add canary.url or remove canaryMatch',
      })
    route.shadow?.paths.forEach((p, k) => {
      if (!p.startsWith('/')) {
        issues.push({
          path: `${at}.shadow.paths[${k}]`,
          message: `must start with / (got ${JSON.stringify(p)})`,
        })
      }
    })
    route.shadow?.methods.forEach((m, k) => {
      if (!TOKEN.test(m)) {
        issues.push({
          path: `${at}.shadow.methods[${k}]`,
          message: `must be an HTTP method such as GET (got ${JSON.stringify(m)})`,
        })
      }
    })
    if (route.shadow && route.shadow.header !== '' && !TOKEN.test(route.shadow.header)) {
      issues.push({
        path: `${at}.shadow.header`,
        message: 'must be a valid header name such as x-veer-shadow, or "" for none',
      })
    }
    const a = route.analysis
    a.errorStatuses.forEach((code, k) => {
      if (!STATUS.test(code)) {
        issues.push({
          path: `${at}.analysis.errorStatuses[${k}]`,
          message: `must be a status code from 100 to 599 such as 503, or a class such as 5xx (got ${JSON.stringify(code)})`,
        })
      }
    })
    a.fallback.methods.forEach((m, k) => {
      if (!TOKEN.test(m)) {
        issues.push({
          path: `${at}.analysis.fallback.methods[${k}]`,
          message: `must be an HTTP method such as GET (got ${JSON.stringify(m)})`,
        })
      }
    })
    for (const [key, name] of [
      ['outcomeHeader', a.outcomeHeader],
      ['fallback.idempotencyKey', a.fallback.idempotencyKey],
    ] as const) {
      if (name !== '' && !TOKEN.test(name))
        issues.push({ path: `${at}.analysis.${key}`, message: 'must be a valid header name, or "" for none' })
    }
    if (route.sticky && (route.sticky.header === undefined) === (route.sticky.cookie === undefined)) {
      issues.push({ path: `${at}.sticky`, message: 'needs exactly one of header or cookie' })
    }
    if (route.sticky?.header !== undefined && !TOKEN.test(route.sticky.header)) {
      issues.push({ path: `${at}.sticky.header`, message: 'must be a valid header name such as x-user-id' })
    }
  })
}
