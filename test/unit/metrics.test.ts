import { describe, expect, it } from 'vitest'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { parseMetrics as parse } from '../helpers/metrics.ts'

describe('proxy metrics', () => {
  it('exposes counts by code (error for no response) and a cumulative histogram', async () => {
    const m = new ProxyMetrics()
    const canary = m.bind('shop', 'canary')
    canary.record(200, 0.003)
    canary.record(200, 0.2)
    canary.record(0, 1.5)
    canary.record(503, 40)
    const text = await m.registry.metrics()
    const s = parse(text)
    expect(s.get('veer_requests_total{route="shop",version="canary",code="200"}')).toBe(2)
    expect(s.get('veer_requests_total{route="shop",version="canary",code="error"}')).toBe(1)
    expect(s.get('veer_requests_total{route="shop",version="canary",code="503"}')).toBe(1)
    const bucket = (le: string) =>
      s.get(`veer_request_duration_seconds_bucket{le="${le}",route="shop",version="canary"}`)
    expect(bucket('0.0025')).toBe(0)
    expect(bucket('0.005')).toBe(1)
    expect(bucket('0.25')).toBe(2)
    expect(bucket('2.5')).toBe(3)
    expect(bucket('30')).toBe(3)
    expect(bucket('+Inf')).toBe(4)
    expect(s.get('veer_request_duration_seconds_count{route="shop",version="canary"}')).toBe(4)
    expect(s.get('veer_request_duration_seconds_sum{route="shop",version="canary"}')).toBeCloseTo(41.703)
    expect(text).toContain('# TYPE veer_request_duration_seconds histogram')
    expect(text).toMatch(/# HELP veer_requests_total \S/)
  })

  it('has the contract names with their label sets', async () => {
    const m = new ProxyMetrics()
    m.bind('r', 'stable').record(200, 0.01)
    m.weight.labels('r', 'canary').set(20)
    m.releaseInfo.labels('r', 'stable', 'v1').set(1)
    const s = parse(await m.registry.metrics())
    expect(s.get('veer_route_weight{route="r",version="canary"}')).toBe(20)
    expect(s.get('veer_release_info{route="r",version="stable",release="v1"}')).toBe(1)
    expect(s.get('veer_requests_total{route="r",version="stable",code="200"}')).toBe(1)
  })
})
