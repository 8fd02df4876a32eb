/**
 * The path a route matches and the upstream sees: RFC 3986 normalisation as Envoy's `normalize_path`
 * and `merge_slashes` do it. Escapes of unreserved characters are decoded (`%61` is `a`, `%2E` is `.`),
 * runs of `/` become one, and `.` and `..` segments are removed (section 5.2.4), so `/public/../admin`
 * and `/%2e%2e/admin` are both `/admin`. Other escapes (`%2F`, `%20`) stay as sent; the query is untouched.
 * A path with nothing to normalise (the common case) is returned as it is, after one scan.
 */

const SLASH = 47
const DOT = 46
const PERCENT = 37

/** `target` is origin-form (starts with `/`), possibly with a query. */
export function normalizePath(target: string): string {
  const end = target.indexOf('?')
  const stop = end === -1 ? target.length : end
  let work = false
  for (let i = 0; i < stop; i++) {
    const c = target.charCodeAt(i)
    if (
      c === PERCENT ||
      (c === SLASH && (target.charCodeAt(i + 1) === SLASH || target.charCodeAt(i + 1) === DOT))
    ) {
      work = true
      break
    }
  }
  if (!work) return target
  const path = removeDotSegments(decodeUnreserved(target.slice(0, stop)))
  return end === -1 ? path : path + target.slice(end)
}

function isUnreserved(c: number): boolean {
  return (
    (c >= 0x41 && c <= 0x5a) || // A-Z
    (c >= 0x61 && c <= 0x7a) || // a-z
    (c >= 0x30 && c <= 0x39) || // 0-9
    c === 0x2d || // -
    c === DOT ||
    c === 0x5f || // _
    c === 0x7e // ~
  )
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30
  const l = c | 0x20
  return l >= 0x61 && l <= 0x66 ? l - 0x61 + 10 : -1
}

/** `%XX` of an unreserved character becomes the character (RFC 3986 6.2.2.2); other escapes stay. */
function decodeUnreserved(path: string): string {
  if (!path.includes('%')) return path
  let out = ''
  let from = 0
  for (let i = path.indexOf('%'); i !== -1 && i + 2 < path.length; i = path.indexOf('%', i + 1)) {
    const hi = hexValue(path.charCodeAt(i + 1))
    const lo = hexValue(path.charCodeAt(i + 2))
    if (hi < 0 || lo < 0) continue
    const c = hi * 16 + lo
    if (!isUnreserved(c)) continue
    out += path.slice(from, i) + String.fromCharCode(c)
    from = i + 3
    i += 2
  }
  return from === 0 ? path : out + path.slice(from)
}

/** Merge `//` and remove `.` and `..` segments; `..` never climbs above the root. */
function removeDotSegments(path: string): string {
  const kept: string[] = []
  const segments = path.split('/')
  // segments[0] is the empty text before the leading slash.
  let trailing = false
  for (let i = 1; i < segments.length; i++) {
    const s = segments[i]!
    const last = i === segments.length - 1
    if (s === '' || s === '.') {
      // An empty segment is a doubled slash, merged; at the end it is the path's trailing slash.
      trailing = last
      continue
    }
    if (s === '..') {
      kept.pop()
      trailing = last
      continue
    }
    kept.push(s)
    trailing = false
  }
  return `/${kept.join('/')}${trailing && kept.length > 0 ? '/' : ''}`
}
