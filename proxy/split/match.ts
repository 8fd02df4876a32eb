/**
 * A/B match rules (`canaryMatch`): requests whose header, cookie or query parameter has the given
 * value go to the canary before weights apply, as Argo Rollouts' header routes and Flagger's A/B
 * matches do. Compiled once per snapshot; a request only compares strings.
 */
import type { CanaryMatch } from '../../config/types.ts'
import type { RequestHead } from '../listen/headers.ts'
import { cookieValue } from './sticky.ts'

export interface CompiledMatch {
  readonly kind: 'header' | 'cookie' | 'query'
  /** Lower case for a header; as written for a cookie or query parameter. */
  readonly name: string
  readonly value: string
}

export function compileMatches(rules: readonly CanaryMatch[]): readonly CompiledMatch[] {
  return Object.freeze(
    rules.map((r): CompiledMatch => {
      if (r.header !== undefined)
        return Object.freeze({ kind: 'header', name: r.header.toLowerCase(), value: r.value })
      if (r.cookie !== undefined) return Object.freeze({ kind: 'cookie', name: r.cookie, value: r.value })
      return Object.freeze({ kind: 'query', name: r.query!, value: r.value })
    }),
  )
}

/** Whether any rule matches the request (`url`: its path and query). */
export function matchesCanary(rules: readonly CompiledMatch[], head: RequestHead, url: string): boolean {
  for (const rule of rules) {
    if (rule.kind === 'header') {
      if (head.get(rule.name) === rule.value) return true
    } else if (rule.kind === 'cookie') {
      if (head.cookie !== undefined && cookieValue(head.cookie, rule.name) === rule.value) return true
    } else if (queryValue(url, rule.name) === rule.value) return true
  }
  return false
}

/** The first value of query parameter `name` in `url`, percent-decoded (`+` is a space); undefined if absent. */
export function queryValue(url: string, name: string): string | undefined {
  const q = url.indexOf('?')
  if (q === -1) return undefined
  let from = q + 1
  while (from < url.length) {
    let end = url.indexOf('&', from)
    if (end === -1) end = url.length
    const eq = url.indexOf('=', from)
    const keyEnd = eq === -1 || eq > end ? end : eq
    if (decode(url.slice(from, keyEnd)) === name)
      return keyEnd === end ? '' : decode(url.slice(keyEnd + 1, end))
    from = end + 1
  }
  return undefined
}

function decode(s: string): string | undefined {
  if (s.indexOf('%') === -1 && s.indexOf('+') === -1) return s
  try {
    return decodeURIComponent(s.replaceAll('+', ' '))
  } catch {
    return undefined
  }
}
