/**
 * gRPC's pure parts: reading grpc-status and grpc-timeout as clients and servers do, the error table,
 * and counting a body's length-prefixed messages (the mirror's unary test).
 */
import { describe, expect, it } from 'vitest'
import {
  GrpcFrames,
  grpcCodeFor,
  grpcErrorTable,
  grpcPayload,
  grpcStatusOf,
  grpcTimeoutMs,
  isGrpcType,
} from '../../proxy/chain/grpc.ts'

describe('grpcStatusOf', () => {
  it('reads 0..16 and takes anything else as UNKNOWN', () => {
    expect(grpcStatusOf('0')).toBe(0)
    expect(grpcStatusOf('14')).toBe(14)
    expect(grpcStatusOf(['16', '3'])).toBe(16)
    for (const bad of ['17', '-1', '', 'x', '1.5', '007', undefined]) expect(grpcStatusOf(bad)).toBe(2)
  })
})

describe('grpcTimeoutMs', () => {
  it('reads every unit, rounding sub-millisecond deadlines up to 1 ms', () => {
    expect(grpcTimeoutMs('2H')).toBe(7_200_000)
    expect(grpcTimeoutMs('3M')).toBe(180_000)
    expect(grpcTimeoutMs('5S')).toBe(5000)
    expect(grpcTimeoutMs('250m')).toBe(250)
    expect(grpcTimeoutMs('1500u')).toBe(2)
    expect(grpcTimeoutMs('10n')).toBe(1)
  })
  it('refuses what the spec does not allow (more than 8 digits, no unit, signs, exponents)', () => {
    for (const bad of ['123456789m', '100', 'm', '-5S', '1e3m', '5s', ' 5S', undefined])
      expect(grpcTimeoutMs(bad)).toBeUndefined()
  })
})

describe('grpcErrorTable and grpcCodeFor', () => {
  it('marks the named codes only', () => {
    const t = grpcErrorTable(['UNAVAILABLE', 'INTERNAL'])
    expect([...t.keys()].filter((k) => t[k] === 1)).toEqual([13, 14])
  })
  it('maps timeouts to DEADLINE_EXCEEDED, no_route to UNIMPLEMENTED, the rest to UNAVAILABLE or INTERNAL', () => {
    expect(grpcCodeFor('upstream_timeout')).toBe(4)
    expect(grpcCodeFor('no_route')).toBe(12)
    expect(grpcCodeFor('bad_request')).toBe(13)
    expect(grpcCodeFor('upstream_connect_failed')).toBe(14)
    expect(grpcCodeFor('upstream_tls_failed')).toBe(14)
    expect(grpcCodeFor('no_healthy_upstream')).toBe(14)
  })
})

describe('isGrpcType', () => {
  it('takes gRPC content types, not gRPC-Web (its trailers are in the body)', () => {
    for (const t of ['application/grpc', 'application/grpc+proto', 'application/grpc+json'])
      expect(isGrpcType(t)).toBe(true)
    for (const t of [
      'application/grpc-web',
      'application/grpc-web+proto',
      'application/grpc-web-text',
      'application/json',
    ])
      expect(isGrpcType(t)).toBe(false)
  })
})

/** A length-prefixed message: flag 0, 4-byte big-endian length, payload. */
function frame(payload: string): Buffer {
  const p = Buffer.from(payload)
  const prefix = Buffer.alloc(5)
  prefix.writeUInt32BE(p.length, 1)
  return Buffer.concat([prefix, p])
}

function framesOf(chunks: Buffer[]): GrpcFrames {
  const f = new GrpcFrames()
  for (const c of chunks) f.push(c)
  return f
}

describe('GrpcFrames', () => {
  it('counts one message however the body is cut into chunks, and knows when it is whole', () => {
    const one = frame('{"text":"hello"}')
    for (let cut = 0; cut <= one.length; cut++) {
      const f = framesOf([one.subarray(0, cut), one.subarray(cut)])
      expect([f.messages, f.whole]).toEqual([1, true])
      const part = framesOf([one.subarray(0, cut)])
      expect(part.whole).toBe(cut === 0 || cut === one.length)
      expect(part.messages).toBe(cut === 0 ? 0 : 1)
    }
    // Byte by byte, and an empty message (a prefix alone).
    expect(framesOf([...one].map((b) => Buffer.from([b]))).messages).toBe(1)
    expect(framesOf([frame('')])).toMatchObject({ messages: 1, whole: true })
  })

  it('counts a stream of messages, a length above 2^24 included', () => {
    const two = Buffer.concat([frame('a'), frame(''), frame('bc')])
    expect(framesOf([two])).toMatchObject({ messages: 3, whole: true })
    const big = Buffer.from([0, 0x01, 0x00, 0x00, 0x00]) // 2^24 bytes announced, none sent
    expect(framesOf([big])).toMatchObject({ messages: 1, whole: false })
  })
})

describe('grpcPayload', () => {
  it('unwraps exactly one uncompressed message, and leaves anything else as it is', () => {
    expect(grpcPayload(frame('{"a":1}')).toString()).toBe('{"a":1}')
    const compressed = frame('x')
    compressed[0] = 1
    for (const other of [compressed, Buffer.concat([frame('a'), frame('b')]), frame('abc').subarray(0, 6)])
      expect(grpcPayload(other)).toBe(other)
  })
})
