/**
 * gRPC over the chain: a call's outcome is its `grpc-status` (in the trailers, or in the head of a
 * trailers-only answer), not its HTTP status, and the proxy's own errors reach a gRPC client as gRPC
 * errors (trailers-only, `grpc-status` and `grpc-message`), never as an HTTP 502 with a JSON body.
 */
import { GRPC_CODES } from '../../config/grpc-codes.ts'
import type { ProxyErrorCode } from '../errors.ts'

export { GRPC_CODES }

/** The access and shadow lines' `grpc_code` field of each status, serialised once (index = code). */
export const GRPC_CODE_FIELD: readonly string[] = GRPC_CODES.map((name) => `,"grpc_code":"${name}"`)

export const CANCELLED = 1
export const UNKNOWN = 2

/**
 * Whether a content-type is gRPC's (application/grpc, +proto, +json…). gRPC-Web (application/grpc-web…)
 * is not: its trailers travel in the body, so its status cannot be read from trailers.
 */
export function isGrpcType(value: string): boolean {
  return value.startsWith('application/grpc') && !value.startsWith('application/grpc-web')
}
export const DEADLINE_EXCEEDED = 4

/** A `grpc-status` field's value as a code; anything but 0..16 is UNKNOWN, as clients read it. */
export function grpcStatusOf(value: string | string[] | undefined): number {
  const v = typeof value === 'string' ? value : value?.[0]
  if (v === undefined || v.length === 0 || v.length > 2) return UNKNOWN
  const n = Number(v)
  return Number.isInteger(n) && n >= 0 && n < GRPC_CODES.length ? n : UNKNOWN
}

/** Which codes count as errors: a table indexed by code, from the config's names. */
export function grpcErrorTable(names: readonly string[]): Uint8Array {
  const table = new Uint8Array(GRPC_CODES.length)
  for (const name of names) {
    const code = (GRPC_CODES as readonly string[]).indexOf(name)
    if (code >= 0) table[code] = 1
  }
  return table
}

/**
 * The code a gRPC client gets for an answer the proxy made itself: the HTTP-to-gRPC mapping of
 * grpc/doc/http-grpc-status-mapping.md, with timeouts as DEADLINE_EXCEEDED.
 */
export function grpcCodeFor(code: ProxyErrorCode): number {
  switch (code) {
    case 'upstream_timeout':
    case 'request_timeout':
      return DEADLINE_EXCEEDED
    case 'no_route':
    case 'connect_not_supported':
      return 12 // UNIMPLEMENTED: no service here by that name
    case 'bad_request':
    case 'bad_request_target':
    case 'duplicate_host':
    case 'missing_host':
    case 'headers_too_large':
    case 'too_many_headers':
    case 'unsupported_transfer_coding':
      return 13 // INTERNAL, as a 400 maps
    default:
      return 14 // UNAVAILABLE: connect failed, reset, overloaded, no healthy upstream — the client may retry
  }
}

/**
 * Counts the length-prefixed messages of a gRPC body as it streams: each is a 5-byte prefix (a
 * compressed flag, then a 4-byte big-endian length) and that many bytes. Tells a unary call's one
 * message from a stream's several (gRPC over HTTP/2, "Length-Prefixed-Message").
 */
export class GrpcFrames {
  /** Messages begun so far. */
  messages = 0
  /** Bytes of the current prefix read (0..4), and the length it has given so far. */
  #prefix = 0
  #length = 0
  /** Bytes of the current message still to come. */
  #left = 0

  push(chunk: Buffer): void {
    const n = chunk.length
    let i = 0
    while (i < n) {
      if (this.#left > 0) {
        const take = Math.min(this.#left, n - i)
        this.#left -= take
        i += take
        continue
      }
      const p = this.#prefix++
      if (p === 0) this.messages++
      else this.#length = this.#length * 256 + chunk[i]!
      i++
      if (p === 4) {
        this.#left = this.#length
        this.#prefix = 0
        this.#length = 0
      }
    }
  }

  /** The body so far ends on a message boundary (no message cut short). */
  get whole(): boolean {
    return this.#prefix === 0 && this.#left === 0
  }
}

/** A body that is exactly one uncompressed message: its payload; otherwise the body as it is. */
export function grpcPayload(body: Buffer): Buffer {
  return body.length >= 5 && body[0] === 0 && body.readUInt32BE(1) === body.length - 5
    ? body.subarray(5)
    : body
}

const DIGITS = /^\d{1,8}$/
const UNITS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 }

/** A `grpc-timeout` value (`1-8 digits` and a unit, e.g. `100m`, `5S`) in ms; undefined when malformed. */
export function grpcTimeoutMs(value: string | undefined): number | undefined {
  if (value === undefined || value.length < 2 || value.length > 9) return undefined
  const unit = UNITS[value[value.length - 1]!]
  const digits = value.slice(0, -1)
  if (unit === undefined || !DIGITS.test(digits)) return undefined
  return Math.max(1, Math.ceil(Number(digits) * unit))
}
