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
  /** Set when a parsed object always has this field (a fallback, an empty list, null): see `Always`. */
  readonly always?: boolean
  /** Set when null is a value of the field (`nullable`), not "absent". */
  readonly nullable?: boolean
  parse(value: unknown, path: string, issues: Issue[]): T | undefined
}

/** A field that is never absent from its parsed object: its key is not optional in `Infer`. */
export type Always<T> = Field<T> & { readonly always: true }

/** The type a field parses to: `export type Upstream = Infer<typeof upstream>`. */
export type Infer<F> = F extends Field<infer T> ? T : never

/** `Always` when a fallback is given (its type is not undefined), else a field that may be absent. */
type Given<T, D> = undefined extends D ? Field<T> : Always<T>

type Shape = Record<string, Field<unknown>>
type Flat<T> = { [K in keyof T]: T[K] } & {}
type Present<S extends Shape, R> = {
  [K in keyof S]: K extends R ? K : S[K] extends { readonly always: true } ? K : never
}[keyof S]
/** An object's parsed type: required keys and `Always` fields are present, the rest optional. */
type Out<S extends Shape, R> = Flat<
  { readonly [K in Present<S, R>]: Infer<S[K]> } & {
    readonly [K in Exclude<keyof S, Present<S, R>>]?: Infer<S[K]>
  }
>

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (value === null || typeof value !== 'object') return String(value)
  return Array.isArray(value) ? 'a list' : 'an object'
}

/** A field given as `F` (Field or Always, as its fallback says); the cast is the kit's alone. */
function field<F extends Field<unknown>>(
  json: Record<string, unknown>,
  check: (v: unknown) => unknown,
  fallback?: unknown,
): F {
  const f: Field<unknown> = {
    json:
      fallback === undefined
        ? json
        : { ...json, default: json.format === 'duration' ? formatDuration(fallback as number) : fallback },
    fallback,
    always: fallback !== undefined,
    parse(value, path, issues) {
      if (value === undefined || value === null) return fallback
      const result = check(value)
      if (typeof result === 'string' && isProblem(result)) {
        issues.push({ path, message: `${result.slice(PROBLEM.length)} (got ${describe(value)})` })
        return undefined
      }
      return result
    },
  }
  return f as F
}

const PROBLEM = '\u0000'
const isProblem = (s: string): boolean => s.startsWith(PROBLEM)
const problem = (message: string): string => PROBLEM + message

export function str<O extends { minLength?: number; fallback?: string }>(
  description: string,
  opts: O = {} as O,
): Given<string, O['fallback']> {
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

export function bool<D extends boolean | undefined = undefined>(
  description: string,
  fallback?: D,
): Given<boolean, D> {
  return field(
    { type: 'boolean', description },
    (v) => (typeof v === 'boolean' ? v : problem('must be true or false')),
    fallback,
  )
}

export function int<D extends number | undefined = undefined>(
  description: string,
  min: number,
  max: number,
  fallback?: D,
): Given<number, D> {
  return field(
    { type: 'integer', minimum: min, maximum: max, description },
    (v) =>
      typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max
        ? v
        : problem(`must be a whole number from ${min} to ${max}`),
    fallback,
  )
}

/** A number from `min` to `max`; with both infinite, any number (JSON has no NaN or Infinity). */
export function num<D extends number | undefined = undefined>(
  description: string,
  min: number,
  max: number,
  fallback?: D,
): Given<number, D> {
  const open = min === -Infinity && max === Infinity
  return field(
    open ? { type: 'number', description } : { type: 'number', minimum: min, maximum: max, description },
    (v) =>
      typeof v === 'number' && v >= min && v <= max
        ? v
        : problem(open ? 'must be a number' : `must be a number from ${min} to ${max}`),
    fallback,
  )
}

export function oneOf<T extends string, D extends T | undefined = undefined>(
  description: string,
  values: readonly T[],
  fallback?: D,
): Given<T, D> {
  return field(
    { type: 'string', enum: values, description },
    (v) =>
      typeof v === 'string' && (values as readonly string[]).includes(v)
        ? v
        : problem(`must be one of ${values.join(', ')}`),
    fallback,
  )
}

/** A duration such as `500ms`, `5s`, `2m`; parsed to milliseconds. */
export function duration<D extends number | undefined = undefined>(
  description: string,
  min: number,
  max: number,
  fallback?: D,
): Given<number, D> {
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

export function hostPort<D extends HostPort | undefined = undefined>(
  description: string,
  fallback?: D,
): Given<HostPort, D> {
  const f = field<Given<HostPort, D>>(
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

/** A list; absent is its fallback (none: empty), so it is always present once parsed. */
export function list<T>(
  description: string,
  item: Field<T>,
  opts: { minItems?: number; fallback?: T[] } = {},
): Always<readonly T[]> {
  const min = opts.minItems ?? 0
  const json: Record<string, unknown> = { type: 'array', items: item.json, minItems: min, description }
  if (opts.fallback !== undefined) json.default = opts.fallback
  return {
    json,
    always: true,
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

interface ObjOptions<R> {
  readonly required?: readonly R[]
  /** Absent (or null) is absent, not `{}`: the object's own required keys are then not asked for. */
  readonly optional?: boolean
  /**
   * `ignore`: unknown keys are skipped, for a message a newer peer may add fields to (the wire's
   * forward compatibility). A prototype name (`__proto__`, `constructor`, `toString`…) is an error even
   * then: no peer adds one, and as a key it is a trap for code that reads objects carelessly.
   */
  readonly unknown?: 'refuse' | 'ignore'
}

/** An object with known keys: unknown keys are errors (a typo must not pass silently). */
export function obj<S extends Shape, R extends keyof S & string = never>(
  description: string,
  shape: S,
  opts: ObjOptions<R> & { readonly optional: true },
): Field<Out<S, R>>
export function obj<S extends Shape, R extends keyof S & string = never>(
  description: string,
  shape: S,
  opts?: ObjOptions<R> & { readonly optional?: false },
): Always<Out<S, R>>
export function obj<S extends Shape, R extends keyof S & string = never>(
  description: string,
  shape: S,
  opts: ObjOptions<R> = {},
): Field<Out<S, R>> {
  const required: readonly string[] = opts.required ?? []
  const ignore = opts.unknown === 'ignore'
  const properties: Record<string, unknown> = {}
  for (const [k, f] of Object.entries(shape)) properties[k] = f.json
  return {
    json: { type: 'object', description, properties, required, additionalProperties: ignore },
    always: !opts.optional,
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
      // Own keys only (JSON.parse makes `{"__proto__": 1}` an own key, and it is reported here).
      for (const key of Object.keys(input)) {
        if (!Object.hasOwn(shape, key) && !(ignore && !(key in Object.prototype))) {
          issues.push({
            path: prefix + key,
            message: `is not a known setting; allowed here: ${Object.keys(shape).join(', ')}`,
          })
        }
      }
      const out: Record<string, unknown> = {}
      for (const [key, f] of Object.entries(shape)) {
        const given = Object.hasOwn(input, key) ? input[key] : undefined
        if (required.includes(key) && (given === undefined || (given === null && !f.nullable))) {
          issues.push({ path: prefix + key, message: `is required: ${String(f.json.description ?? '')}` })
          continue
        }
        const parsed = f.parse(given, prefix + key, issues)
        if (parsed !== undefined) out[key] = parsed
      }
      return out as Out<S, R>
    },
  }
}

/** `item` or null: absent is null too, never the item's fallback. */
export function nullable<T>(item: Field<T>): Always<T | null> {
  return {
    json: { description: item.json.description, anyOf: [item.json, { type: 'null' }] },
    always: true,
    nullable: true,
    parse: (value, path, issues) =>
      value === undefined || value === null ? null : item.parse(value, path, issues),
  }
}

/** Exactly `value` (e.g. a flag that is only ever `true`); absent is absent. */
export function literal<const T extends string | number | boolean>(description: string, value: T): Field<T> {
  return field({ const: value, description }, (v) =>
    v === value ? v : problem(`must be ${JSON.stringify(value)} when given`),
  )
}

/**
 * A JSON object of any keys `keyCheck` passes (it gives the problem, or null), each value parsed by
 * `item`; absent is `{}`. Own keys only, and `__proto__` is refused whatever `keyCheck` says: as a key
 * of the parsed object it would set its prototype.
 */
export function record<T>(
  description: string,
  keyCheck: (key: string) => string | null,
  item: Field<T>,
): Always<Readonly<Record<string, T>>> {
  return {
    json: { type: 'object', description, additionalProperties: item.json },
    always: true,
    parse(value, path, issues) {
      if (value === undefined || value === null) return {}
      if (typeof value !== 'object' || Array.isArray(value)) {
        issues.push({ path: path || '(top level)', message: `must be an object (got ${describe(value)})` })
        return undefined
      }
      const prefix = path ? `${path}.` : ''
      const out: Record<string, T> = {}
      for (const [k, v] of Object.entries(value)) {
        const wrong = keyCheck(k) ?? (k === '__proto__' ? 'is not allowed as a key here' : null)
        if (wrong !== null) {
          issues.push({ path: prefix + k, message: wrong })
          continue
        }
        const parsed = item.parse(v, prefix + k, issues)
        if (parsed !== undefined) out[k] = parsed
      }
      return out
    },
  }
}

export type Checked<T> = { ok: true; value: T } | { ok: false; issues: Issue[] }

/** `value` checked against `field` in one pass: what it parses to, or every problem with its path. */
export function check<T>(field: Field<T>, value: unknown, path = ''): Checked<T> {
  const issues: Issue[] = []
  const parsed = field.parse(value, path, issues)
  return issues.length > 0 || parsed === undefined ? { ok: false, issues } : { ok: true, value: parsed }
}

/** `value` and everything in it frozen: a parsed snapshot is handed on, never patched. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v)
    Object.freeze(value)
  }
  return value
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

/** The key check of a map keyed by route name (`record`'s `keyCheck`): the wire's and the state file's. */
export const routeKey = (name: string): string | null =>
  name === '__proto__'
    ? 'is the prototype key, never a route name; remove it'
    : isRouteName(name)
      ? null
      : 'is not a route name (1-64 letters, digits, - and _)'
