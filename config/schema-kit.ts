/**
 * A small declarative schema: one description of each config field gives both the validator (one pass,
 * every problem reported with its path and a fix) and the published JSON Schema, so the two never drift.
 */
import { formatDuration, lacksUnit, parseDuration } from './duration.ts'

export interface Issue {
  path: string
  message: string
}

export interface Field<T> {
  readonly json: Record<string, unknown>
  readonly fallback?: T
  parse(value: unknown, path: string, issues: Issue[]): T | undefined
}

type Shape = Record<string, Field<unknown>>
type Out<S extends Shape> = { [K in keyof S]: S[K] extends Field<infer T> ? T : never }

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (value === null || typeof value !== 'object') return String(value)
  return Array.isArray(value) ? 'a list' : 'an object'
}

function field<T>(json: Record<string, unknown>, check: (v: unknown) => T | string, fallback?: T): Field<T> {
  return {
    json:
      fallback === undefined
        ? json
        : { ...json, default: json.format === 'duration' ? formatDuration(fallback as number) : fallback },
    fallback,
    parse(value, path, issues) {
      if (value === undefined || value === null) return fallback
      const result = check(value)
      if (typeof result === 'string' && isProblem(result)) {
        issues.push({ path, message: `${result.slice(PROBLEM.length)} (got ${describe(value)})` })
        return undefined
      }
      return result as T
    },
  }
}

const PROBLEM = '\u0000'
const isProblem = (s: string): boolean => s.startsWith(PROBLEM)
const problem = (message: string): string => PROBLEM + message

export function str(
  description: string,
  opts: { minLength?: number; fallback?: string } = {},
): Field<string> {
  const min = opts.minLength ?? 1
  return field(
    { type: 'string', minLength: min, description },
    (v) =>
      typeof v === 'string' && v.length >= min
        ? v
        : problem(`must be a string of at least ${min} character(s)`),
    opts.fallback,
  )
}

export function bool(description: string, fallback?: boolean): Field<boolean> {
  return field(
    { type: 'boolean', description },
    (v) => (typeof v === 'boolean' ? v : problem('must be true or false')),
    fallback,
  )
}

export function int(description: string, min: number, max: number, fallback?: number): Field<number> {
  return field(
    { type: 'integer', minimum: min, maximum: max, description },
    (v) =>
      typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max
        ? v
        : problem(`must be a whole number from ${min} to ${max}`),
    fallback,
  )
}

export function num(description: string, min: number, max: number, fallback?: number): Field<number> {
  return field(
    { type: 'number', minimum: min, maximum: max, description },
    (v) =>
      typeof v === 'number' && v >= min && v <= max ? v : problem(`must be a number from ${min} to ${max}`),
    fallback,
  )
}

export function oneOf<T extends string>(description: string, values: readonly T[], fallback?: T): Field<T> {
  return field(
    { type: 'string', enum: values, description },
    (v) =>
      typeof v === 'string' && (values as readonly string[]).includes(v)
        ? (v as T)
        : problem(`must be one of ${values.join(', ')}`),
    fallback,
  )
}

/** A duration such as `500ms`, `5s`, `2m`; parsed to milliseconds. */
export function duration(description: string, min: number, max: number, fallback?: number): Field<number> {
  return field(
    {
      type: ['string', 'number'],
      format: 'duration',
      pattern: '^([0-9.]+(ms|s|m|h)|0)$',
      minimum: 0,
      maximum: 0,
      description,
    },
    (v) => {
      const ms = parseDuration(v)
      if (ms === undefined && lacksUnit(v))
        return problem(`has no unit; write "${v}s" (or ${v}ms, ${v}m, ${v}h)`)
      if (ms === undefined) return problem('must be a duration such as 500ms, 5s or 2m')
      if (ms < min || ms > max)
        return problem(`must be between ${formatDuration(min)} and ${formatDuration(max)}`)
      return ms
    },
    fallback,
  )
}

/** `HOST:PORT`, e.g. `127.0.0.1:8080` or `[::1]:8080`; port 0 picks a free one. */
export interface HostPort {
  host: string
  port: number
}

export function parseHostPort(v: unknown): HostPort | undefined {
  if (typeof v !== 'string') return undefined
  const colon = v.lastIndexOf(':')
  if (colon <= 0) return undefined
  let host = v.slice(0, colon)
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1)
  const portText = v.slice(colon + 1)
  const port = Number(portText)
  if (portText === '' || !Number.isInteger(port) || port < 0 || port > 65535 || host === '') return undefined
  return { host, port }
}

export function hostPort(description: string, fallback?: HostPort): Field<HostPort> {
  const f = field<HostPort>(
    { type: 'string', pattern: '^.+:[0-9]{1,5}$', description },
    (v) => parseHostPort(v) ?? problem('must be HOST:PORT, e.g. 127.0.0.1:8080'),
    fallback,
  )
  return fallback === undefined
    ? f
    : { ...f, json: { ...f.json, default: `${fallback.host}:${fallback.port}` } }
}

/** The upstream URL schemes and the protocol each picks. */
export const UPSTREAM_SCHEMES = ['http:', 'https:', 'h2c:'] as const

/**
 * An upstream origin: `http://` (HTTP/1.1), `https://` (TLS; h2 or HTTP/1.1 by ALPN) or `h2c://`
 * (cleartext HTTP/2), with no path, query or credentials. Given back as `scheme://host[:port]`.
 */
export function origin(description: string): Field<string> {
  const example = 'a URL such as http://127.0.0.1:3000 (or https://, h2c://)'
  return field({ type: 'string', format: 'uri', pattern: '^(https?|h2c)://', description }, (v) => {
    if (typeof v !== 'string') return problem(`must be ${example}`)
    let url: URL
    try {
      url = new URL(v)
    } catch {
      return problem(`must be ${example}`)
    }
    if (!(UPSTREAM_SCHEMES as readonly string[]).includes(url.protocol))
      return problem('must start with http://, https:// or h2c://')
    if (url.username || url.password) return problem('must not carry credentials')
    if (url.host === '') return problem(`must name a host: ${example}`)
    if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash)
      return problem('must be an origin only (scheme, host, port), without a path or query')
    // URL.origin is "null" for a scheme it does not know (h2c:), so it is put together here.
    return `${url.protocol}//${url.host}`
  })
}

export function list<T>(
  description: string,
  item: Field<T>,
  opts: { minItems?: number; fallback?: T[] } = {},
): Field<T[]> {
  const min = opts.minItems ?? 0
  const json: Record<string, unknown> = { type: 'array', items: item.json, minItems: min, description }
  if (opts.fallback !== undefined) json.default = opts.fallback
  return {
    json,
    parse(value, path, issues) {
      if (value === undefined || value === null) {
        if (min > 0) issues.push({ path, message: `is required: a list of at least ${min} item(s)` })
        return min > 0 ? undefined : [...(opts.fallback ?? [])]
      }
      if (!Array.isArray(value)) {
        issues.push({ path, message: `must be a list (got ${describe(value)})` })
        return undefined
      }
      if (value.length < min) issues.push({ path, message: `must have at least ${min} item(s)` })
      const out: T[] = []
      value.forEach((v, i) => {
        const parsed = item.parse(v, `${path}[${i}]`, issues)
        if (parsed !== undefined) out.push(parsed)
      })
      return out
    },
  }
}

/** An object with known keys: unknown keys are errors (a typo must not pass silently). */
export function obj<S extends Shape>(
  description: string,
  shape: S,
  opts: { required?: (keyof S & string)[]; optional?: boolean } = {},
): Field<Out<S>> {
  const required = opts.required ?? []
  const properties: Record<string, unknown> = {}
  for (const [k, f] of Object.entries(shape)) properties[k] = f.json
  return {
    json: { type: 'object', description, properties, required, additionalProperties: false },
    parse(value, path, issues) {
      if (value === undefined || value === null) {
        if (opts.optional) return undefined
        value = {}
      }
      if (typeof value !== 'object' || Array.isArray(value)) {
        issues.push({ path: path || '(top level)', message: `must be an object (got ${describe(value)})` })
        return undefined
      }
      const input = value as Record<string, unknown>
      const prefix = path ? `${path}.` : ''
      for (const key of Object.keys(input)) {
        if (!Object.hasOwn(shape, key)) {
          issues.push({
            path: prefix + key,
            message: `is not a known setting; allowed here: ${Object.keys(shape).join(', ')}`,
          })
        }
      }
      const out: Record<string, unknown> = {}
      for (const [key, f] of Object.entries(shape)) {
        if (required.includes(key) && (input[key] === undefined || input[key] === null)) {
          issues.push({ path: prefix + key, message: `is required: ${String(f.json.description ?? '')}` })
          continue
        }
        const parsed = f.parse(input[key], prefix + key, issues)
        if (parsed !== undefined) out[key] = parsed
      }
      return out as Out<S>
    },
  }
}

const ROUTE_NAME = /^[A-Za-z0-9_-]{1,64}$/

/**
 * A route name: 1-64 letters, digits, - and _, but not `__proto__`: routes are keyed by name in the
 * API, the wire and the state file, where that key would set an object's prototype. (`constructor`
 * and the like are fine: every lookup by route name asks for own properties.)
 */
export function isRouteName(name: string): boolean {
  return ROUTE_NAME.test(name) && name !== '__proto__'
}
