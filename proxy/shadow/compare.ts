/**
 * Comparing a shadow's answer with the primary's, as Diffy does but inside the proxy: status (and a gRPC
 * call's grpc-status), a chosen set of headers, and the body — JSON field by field (paths like
 * `items[*].price`), anything else by hash. Pure functions: no I/O, no clocks.
 */
import { createHash } from 'node:crypto'
import { GRPC_CODES } from '../../config/grpc-codes.ts'

export interface Answer {
  readonly status: number
  /** Lower-cased header name → value (repeated fields joined with ", "); a null-prototype object. */
  readonly headers: Readonly<Record<string, string>>
  /** The whole body (a gRPC call's: its message), or null when it was larger than the comparison limit. */
  readonly body: Buffer | null
  /** A gRPC call's grpc-status (trailers, or the head of a trailers-only answer); -1 or absent if none. */
  readonly grpc?: number
}

export interface Difference {
  /**
   * `status`, `grpc-status`, `header:NAME`, `body` (non-JSON), or a normalised JSON path such as
   * `items[*].price`.
   */
  readonly field: string
  readonly primary: unknown
  readonly shadow: unknown
}

export interface Comparison {
  readonly differences: Difference[]
  /** Differences left out because the field is ignored by config or learned to be noisy. */
  readonly ignored: string[]
  /** False when a body was too large to compare: only status and headers were. */
  readonly bodyCompared: boolean
}

/** What a comparison leaves out. */
export interface FieldSet {
  has(field: string): boolean
}

/** Field patterns: exact normalised paths, a trailing `.*`/`[*]` for a whole subtree, `*` for one segment. */
export class FieldFilter implements FieldSet {
  readonly #exact = new Set<string>()
  readonly #patterns: RegExp[] = []

  constructor(patterns: readonly string[]) {
    for (const p of patterns) {
      if (!p.includes('*')) this.#exact.add(p)
      else this.#patterns.push(patternToRegExp(p))
    }
  }

  has(field: string): boolean {
    if (this.#exact.has(field)) return true
    for (const re of this.#patterns) if (re.test(field)) return true
    // An ignored object or list also ignores everything below it.
    for (const prefix of this.#exact)
      if (field.startsWith(`${prefix}.`) || field.startsWith(`${prefix}[`)) return true
    return false
  }

  add(field: string): void {
    this.#exact.add(field)
  }

  get size(): number {
    return this.#exact.size + this.#patterns.length
  }

  list(): string[] {
    return [...this.#exact]
  }
}

function patternToRegExp(pattern: string): RegExp {
  const escaped = pattern.replace(/[.+?^${}()|\\]/g, '\\$&').replace(/\[\*\]/g, '\\[\\*\\]')
  // `*` alone is one name segment; a trailing `.*` covers the whole subtree.
  const body = escaped.replace(/\\\.\*$/, '(\\..*|\\[.*)?').replace(/(^|\\\.)\*(?=\\\.|$)/g, '$1[^.\\[]+')
  return new RegExp(`^${body}$`)
}

export function isJson(headers: Readonly<Record<string, string>>): boolean {
  const type = headers['content-type']
  return type !== undefined && (type.includes('/json') || type.includes('+json'))
}

/** Compare two answers. `ignore` holds configured and learned-noisy fields alike. */
export function compareAnswers(
  primary: Answer,
  shadow: Answer,
  headerNames: readonly string[],
  ignore: FieldSet,
): Comparison {
  const all: Difference[] = []
  if (primary.status !== shadow.status)
    all.push({ field: 'status', primary: primary.status, shadow: shadow.status })
  const ga = primary.grpc ?? -1
  const gb = shadow.grpc ?? -1
  if (ga !== gb) all.push({ field: 'grpc-status', primary: codeName(ga), shadow: codeName(gb) })
  for (const name of headerNames) {
    // Own fields only: a configured `constructor` must not find Object's.
    const a = Object.hasOwn(primary.headers, name) ? primary.headers[name] : undefined
    const b = Object.hasOwn(shadow.headers, name) ? shadow.headers[name] : undefined
    if (a !== b) all.push({ field: `header:${name}`, primary: a ?? null, shadow: b ?? null })
  }
  const bodyCompared = primary.body !== null && shadow.body !== null
  if (bodyCompared) compareBodies(primary, shadow, all)
  const differences: Difference[] = []
  const ignored: string[] = []
  for (const d of all) {
    if (ignore.has(d.field)) ignored.push(d.field)
    else differences.push(d)
  }
  return { differences, ignored, bodyCompared }
}

function codeName(code: number): string | null {
  return code < 0 ? null : (GRPC_CODES[code] ?? String(code))
}

function compareBodies(primary: Answer, shadow: Answer, out: Difference[]): void {
  const a = primary.body!
  const b = shadow.body!
  if (a.equals(b)) return
  if (isJson(primary.headers) && isJson(shadow.headers)) {
    const pa = parseJson(a)
    const pb = parseJson(b)
    if (pa.ok && pb.ok) {
      diffJson(pa.value, pb.value, '', out)
      return
    }
  }
  out.push({ field: 'body', primary: digest(a), shadow: digest(b) })
}

function parseJson(buf: Buffer): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(buf.toString('utf8')) }
  } catch {
    return { ok: false }
  }
}

function digest(buf: Buffer): string {
  return `sha256:${createHash('sha256').update(buf).digest('hex').slice(0, 16)} (${buf.length} bytes)`
}

const kindOf = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v)

/** Field-by-field JSON difference; list indices are normalised to `[*]` so paths group across items. */
export function diffJson(a: unknown, b: unknown, path: string, out: Difference[]): void {
  const ka = kindOf(a)
  const kb = kindOf(b)
  if (ka !== kb) {
    out.push({ field: path || '$', primary: a, shadow: b })
    return
  }
  if (ka === 'array') {
    const la = a as unknown[]
    const lb = b as unknown[]
    if (la.length !== lb.length)
      out.push({ field: `${path}.length`.replace(/^\./, ''), primary: la.length, shadow: lb.length })
    const n = Math.min(la.length, lb.length)
    for (let i = 0; i < n; i++) diffJson(la[i], lb[i], `${path}[*]`, out)
    return
  }
  if (ka === 'object') {
    const oa = a as Record<string, unknown>
    const ob = b as Record<string, unknown>
    for (const key of new Set([...Object.keys(oa), ...Object.keys(ob)])) {
      const child = path === '' ? key : `${path}.${key}`
      // Own keys only: `constructor` or `toString` in one answer must not match Object's in the other.
      const inA = Object.hasOwn(oa, key)
      const inB = Object.hasOwn(ob, key)
      if (!inA || !inB)
        out.push({ field: child, primary: inA ? oa[key] : undefined, shadow: inB ? ob[key] : undefined })
      else diffJson(oa[key], ob[key], child, out)
    }
    return
  }
  if (a !== b) out.push({ field: path || '$', primary: a, shadow: b })
}

/**
 * `/orders/123/items/9f1c…` → `/orders/:id/items/:id`: groups mismatch rates by path pattern. A segment is
 * an id when it is all digits, or 16 or more hex digits and dashes. One scan of the path, no split or
 * regex: it runs for every compared copy, and a path with no id (most) comes back as it is, unallocated.
 */
export function pathPattern(path: string): string {
  const q = path.indexOf('?')
  const end = q === -1 ? path.length : q
  let out: string | null = null
  let copied = 0
  let start = 0
  while (start <= end) {
    let stop = path.indexOf('/', start)
    if (stop === -1 || stop > end) stop = end
    if (stop > start && isIdSegment(path, start, stop)) {
      out = `${out ?? ''}${path.slice(copied, start)}:id`
      copied = stop
    }
    start = stop + 1
  }
  if (out === null) return q === -1 ? path : path.slice(0, q)
  return copied < end ? out + path.slice(copied, end) : out
}

function isIdSegment(path: string, start: number, stop: number): boolean {
  let digits = true
  for (let i = start; i < stop; i++) {
    const c = path.charCodeAt(i)
    const digit = c >= 48 && c <= 57
    digits &&= digit
    // 0-9, a-f, A-F, '-'
    if (!digit && !(c >= 97 && c <= 102) && !(c >= 65 && c <= 70) && c !== 45) return false
  }
  return digits || stop - start >= 16
}
