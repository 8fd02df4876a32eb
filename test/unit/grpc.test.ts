/** gRPC's pure parts: reading grpc-status and grpc-timeout as clients and servers do, the error table. */
import { describe, expect, it } from 'vitest'
import {
  grpcCodeFor,
  grpcErrorTable,
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
