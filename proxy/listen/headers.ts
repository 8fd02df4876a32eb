/**
 * Request and response header rewriting (RFC 9110 section 7.6): hop-by-hop fields and every field named
 * in Connection are removed both ways; X-Forwarded-For/Proto/Host, Forwarded and Via are set with a
 * configured count of trusted hops, so a client cannot forge its address.
 */

import type { OutgoingHttpHeaders } from 'node:http'
import { isGrpcType } from '../chain/grpc.ts'

/**
 * A lookup table by field name with no prototype: a client's field named `__proto__`, `constructor` or
 * `toString` finds nothing in it, as any other unknown name.
 */
function byName<T>(entries: Record<string, T>): Readonly<Record<string, T>> {
  return Object.freeze(Object.assign(Object.create(null) as Record<string, T>, entries))
}

/** Hop-by-hop fields (RFC 9110 7.6.1, RFC 9112 9.6) plus Expect, which the proxy answers itself. */
const HOP_BY_HOP = byName<true>({
  connection: true,
  'keep-alive': true,
  'proxy-connection': true,
  te: true,
  'transfer-encoding': true,
  upgrade: true,
  expect: true,
  'http2-settings': true,
})

/** Fields the proxy itself rewrites on the way to the upstream. */
const FORWARDING = byName<1 | 2 | 3 | 4 | 5>({
  'x-forwarded-for': 1,
  'x-forwarded-proto': 2,
  'x-forwarded-host': 3,
  forwarded: 4,
  via: 5,
})

/** Names listed in a Connection header, other than the framing options every proxy handles. */
export function connectionTokens(value: string): Set<string> | null {
  let tokens: Set<string> | null = null
  for (const part of value.split(',')) {
    const t = part.trim().toLowerCase()
    if (t === '' || t === 'close' || t === 'keep-alive' || t === 'upgrade') continue
    if (tokens === null) tokens = new Set()
    tokens.add(t)
  }
  return tokens
}

/** The protocol version a message came in with, as Via's received-protocol writes it (RFC 9110 7.6.3). */
export type ReceivedProtocol = '1.0' | '1.1' | '2'

/** veer's Via hop for a message received with each protocol version. */
export const VIA_HOP: Readonly<Record<ReceivedProtocol, string>> = byName({
  '1.0': '1.0 veer',
  '1.1': '1.1 veer',
  '2': '2 veer',
})

export interface ForwardingPolicy {
  readonly trustedHops: number
  /** Add veer's Via hop (config `via`). */
  readonly via: boolean
  /** Lower-cased override header name, or null. */
  readonly overrideHeader: string | null
}

/**
 * What a request head says, gathered in one pass over `rawHeaders`, and the header list for the
 * upstream. One instance per request; the caller reads the fields right after `parse()`.
 */
export class RequestHead {
  headers: string[] = []
  /** The request target as routed and sent upstream: normalised (listen/path.ts) unless the config says raw. */
  target = ''
  host: string | undefined = undefined
  hostCount = 0
  hasBody = false
  /** A transfer coding other than chunked was sent (answered 501). */
  otherCoding = false
  override: string | undefined = undefined
  cookie: string | undefined = undefined
  connection: string | undefined = undefined
  xff: string | undefined = undefined
  xfp: string | undefined = undefined
  xfh: string | undefined = undefined
  forwarded: string | undefined = undefined
  via: string | undefined = undefined
  traceparentAt = -1
  tracestateAt = -1
  /** A gRPC call (content-type application/grpc, +proto, +json…): its errors are answered the gRPC way. */
  grpc = false
  /** The client sent `TE: trailers`. */
  teTrailers = false
  /** The call's deadline as the client wrote it (`100m`, `5S`), unparsed. */
  grpcTimeout: string | undefined = undefined
  /** HTTP/2's `:authority`, which stands for Host (RFC 9113 8.3.1). */
  authority: string | undefined = undefined

  parse(raw: string[], policy: ForwardingPolicy): void {
    const out = this.headers
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase()
      const value = raw[i + 1]!
      // HTTP/2 pseudo-header fields (an HTTP/1.1 parser never lets a name start with a colon): the
      // method and path travel apart, :scheme is the proxy's to set, :authority becomes the Host.
      if (name.charCodeAt(0) === 58 /* : */) {
        if (name === ':authority') this.authority = value
        continue
      }
      if (HOP_BY_HOP[name] === true) {
        // TE is hop-by-hop, but on a gRPC call `trailers` goes on (below): gRPC servers want it, and
        // RFC 9113 8.2.2 lets HTTP/2 carry exactly this value.
        if (name === 'te') {
          if (value.toLowerCase().includes('trailers')) this.teTrailers = true
        } else if (name === 'connection')
          this.connection = this.connection === undefined ? value : `${this.connection}, ${value}`
        else if (name === 'transfer-encoding') {
          this.hasBody = true
          // Node's parser undoes only the chunking (RFC 9112 6.1); any other coding would reach the
          // upstream as if it were the body.
          if (value.trim().toLowerCase() !== 'chunked') this.otherCoding = true
        }
        continue
      }
      const fwd = FORWARDING[name]
      if (fwd !== undefined) {
        if (fwd === 1) this.xff = join(this.xff, value)
        else if (fwd === 2) this.xfp = join(this.xfp, value)
        else if (fwd === 3) this.xfh = join(this.xfh, value)
        else if (fwd === 4) this.forwarded = join(this.forwarded, value)
        else this.via = join(this.via, value)
        continue
      }
      if (name === 'host') {
        // Added back by `setHost`: the client's, or the upstream's when the route rewrites it.
        this.hostCount++
        this.host ??= value
        continue
      }
      if (name === 'content-length') {
        if (value !== '0') this.hasBody = true
      } else if (name === 'cookie') {
        this.cookie = this.cookie === undefined ? value : `${this.cookie}; ${value}`
      } else if (name === policy.overrideHeader) {
        this.override = value
      } else if (name === 'content-type') {
        if (isGrpcType(value)) this.grpc = true
      } else if (name === 'grpc-timeout') {
        this.grpcTimeout = value
      } else if (name === 'traceparent') {
        this.traceparentAt = out.length
      } else if (name === 'tracestate') {
        this.tracestateAt = out.length
      }
      out.push(name, value)
    }
    if (this.connection !== undefined && PLAIN_CONNECTION[this.connection] !== true) {
      this.dropConnectionNamed(connectionTokens(this.connection))
    }
    if (this.teTrailers && this.grpc) out.push('te', 'trailers')
    if (this.authority !== undefined) {
      // A Host beside :authority must say the same; a different one is a duplicate Host.
      if (this.host === undefined) this.hostCount = 1
      else if (this.hostCount === 1 && this.host === this.authority) return
      else this.hostCount++
      this.host = this.authority
    }
  }

  /** The first value of a (lower-cased) field, e.g. the route's sticky header. */
  get(name: string): string | undefined {
    const h = this.headers
    for (let i = 0; i < h.length; i += 2) if (h[i] === name) return h[i + 1]
    return undefined
  }

  setHost(host: string | undefined): void {
    if (host !== undefined) this.headers.push('host', host)
  }

  /** Replace the host `setHost` added (a retry on another upstream, when the route rewrites Host). */
  replaceHost(host: string): void {
    const h = this.headers
    for (let i = h.length - 2; i >= 0; i -= 2) {
      if (h[i] === 'host') {
        h[i + 1] = host
        return
      }
    }
    h.push('host', host)
  }

  /** RFC 9110 7.6.1: a field named in Connection applies to this hop only. */
  dropConnectionNamed(tokens: Set<string> | null): void {
    if (tokens === null) return
    const kept: string[] = []
    const h = this.headers
    for (let i = 0; i < h.length; i += 2) if (!tokens.has(h[i]!)) kept.push(h[i]!, h[i + 1]!)
    this.headers = kept
    this.traceparentAt = kept.indexOf('traceparent')
    this.tracestateAt = kept.indexOf('tracestate')
  }

  /**
   * Append the forwarding fields; `peer` is the client socket's address, `host` the request's Host,
   * `scheme` how the client reached veer (http or https), `received` the version of its request.
   */
  addForwarding(
    policy: ForwardingPolicy,
    peer: string,
    family: string,
    scheme: string,
    received: ReceivedProtocol,
  ): void {
    const out = this.headers
    const hops = policy.trustedHops
    // Proto and host are single values: the nearest trusted proxy's is the last entry of the list.
    const proto = (hops > 0 && this.xfp !== undefined && lastEntry(this.xfp)) || scheme
    out.push('x-forwarded-for', hops > 0 && this.xff ? `${lastEntries(this.xff, hops)}, ${peer}` : peer)
    out.push('x-forwarded-proto', proto)
    const fwdHost = (hops > 0 && this.xfh !== undefined && lastEntry(this.xfh)) || this.host
    if (fwdHost !== undefined) out.push('x-forwarded-host', fwdHost)
    const node = family === 'IPv6' ? `"[${peer}]"` : peer
    let element = `for=${node};proto=${proto}`
    if (this.host !== undefined) element += `;host=${quoteIfNeeded(this.host)}`
    out.push(
      'forwarded',
      hops > 0 && this.forwarded ? `${lastEntries(this.forwarded, hops)}, ${element}` : element,
    )
    if (policy.via) {
      const hop = VIA_HOP[received]
      out.push('via', this.via === undefined ? hop : `${this.via}, ${hop}`)
    }
  }
}

function join(a: string | undefined, b: string): string {
  return a === undefined ? b : `${a}, ${b}`
}

/** The last comma-separated entry of a list header, trimmed. */
function lastEntry(list: string): string {
  return list.slice(list.lastIndexOf(',') + 1).trim()
}

/** The last `n` comma-separated entries of a list header (the ones trusted proxies added). */
export function lastEntries(list: string, n: number): string {
  const parts = list.split(',')
  return parts
    .slice(Math.max(0, parts.length - n))
    .map((p) => p.trim())
    .join(', ')
}

function quoteIfNeeded(host: string): string {
  return host.includes(':') || host.includes('[') ? `"${host}"` : host
}

/** Connection values that name no field: the common case needs no token parsing. */
const PLAIN_CONNECTION = byName<true>({
  'keep-alive': true,
  close: true,
  'Keep-Alive': true,
  Close: true,
})

/**
 * Response fields for the client: the upstream's fields (undici's parsed object: lower-case names, a
 * list for a repeated field) minus hop-by-hop and Connection-named ones, as the flat [name, value, …]
 * list `writeHead` takes. Reading the parsed object avoids a second Buffer → string pass over the raw
 * head; names go out in lower case, as Envoy sends them.
 */
export function responseHeaders(
  fields: Record<string, string | string[] | undefined>,
  out: string[],
): string[] {
  let connection: string | string[] | undefined
  for (const name in fields) {
    const value = fields[name]
    if (value === undefined) continue
    if (HOP_BY_HOP[name] === true) {
      if (name === 'connection') connection = value
      continue
    }
    out.push(name, value as string)
  }
  if (connection !== undefined && (typeof connection !== 'string' || PLAIN_CONNECTION[connection] !== true)) {
    const tokens = connectionTokens(typeof connection === 'string' ? connection : connection.join(','))
    if (tokens !== null) {
      const kept: string[] = []
      for (let i = 0; i < out.length; i += 2) if (!tokens.has(out[i]!)) kept.push(out[i]!, out[i + 1]!)
      return kept
    }
  }
  return out
}

/** Append a hop to a response's Via (RFC 9110 7.6.3). */
export function appendVia(out: string[], via: string): void {
  for (let i = 0; i < out.length; i += 2) {
    if (out[i]!.length === 3 && out[i]!.toLowerCase() === 'via') {
      const prior = out[i + 1] as string | string[]
      out[i + 1] = `${typeof prior === 'string' ? prior : prior.join(', ')}, ${via}`
      return
    }
  }
  out.push('via', via)
}

/** Query strings may carry secrets: logs and spans get the path only. */
export function pathOf(url: string): string {
  const q = url.indexOf('?')
  return q === -1 ? url : url.slice(0, q)
}

/**
 * A flat field list as the header object node:http2 sends: names lower case (HTTP/2 has no other),
 * repeated names as one list, and no prototype, so a field named `__proto__` is an ordinary field.
 */
export function fieldObject(fields: readonly string[]): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = Object.create(null)
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i]!.toLowerCase()
    const value = fields[i + 1] as string | string[]
    const prior = out[name]
    if (prior === undefined) out[name] = value
    else out[name] = ([] as string[]).concat(prior as string | string[], value)
  }
  return out
}
