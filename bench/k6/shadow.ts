// Shadow mirroring under load: constant-rate traffic through a veer route that mirrors to a shadow
// upstream, optionally after the same load straight to the upstream as a baseline. Users must never
// feel the shadow: the report puts veer's latency next to direct's, and reads veer's own shadow
// counters (sent, dropped at the shadow's limits, compared, mismatches) from the admin listener before
// and after, so it also shows how much of the traffic the shadow really got.
//
//   k6 run -e TARGET=http://127.0.0.1:8080 -e DIRECT=http://127.0.0.1:3000 \
//          -e ADMIN=http://127.0.0.1:9901 -e METHOD=POST -e BODY_BYTES=2048 bench/k6/shadow.ts
//
// (veer started with e.g. `--stable http://127.0.0.1:3000 --shadow http://127.0.0.1:3100`.)
//
// Env: TARGET (required), DIRECT (optional baseline), ADMIN (veer's admin listener, for the shadow
// counters), ROUTE (default "default"), URL_PATH (default /), METHOD (GET or POST, default GET; POST
// sends a JSON body, which veer tees to the shadow), BODY_BYTES (POST body size, default 1024), RATE
// (default 1000), DURATION (per target, default 60s), VUS (default 100), SUMMARY_JSON.
import { check } from 'k6'
import http from 'k6/http'
import { Counter } from 'k6/metrics'
import type { Options, Scenario } from 'k6/options'
import {
  baseUrl,
  duration,
  env,
  fmt,
  num,
  type SummaryData,
  seconds,
  summaryOutput,
  table,
  value,
  visible,
} from './lib.ts'

const TARGET = baseUrl('TARGET', 'http://127.0.0.1:8080')
const DIRECT = baseUrl('DIRECT', '')
const ADMIN = baseUrl('ADMIN', '')
const ROUTE = env('ROUTE', 'default')
const URL_PATH = env('URL_PATH', '/')
const METHOD = env('METHOD', 'GET').toUpperCase()
const BODY_BYTES = num('BODY_BYTES', 1024)
const RATE = num('RATE', 1000)
const DURATION = env('DURATION', '60s')
const VUS = num('VUS', 100)
const GAP_SECONDS = 5

if (METHOD !== 'GET' && METHOD !== 'POST') throw new Error('METHOD must be GET or POST')

const COUNTERS = ['sent', 'dropped', 'errors', 'compared', 'mismatches'] as const
type ShadowCounts = Record<(typeof COUNTERS)[number], number>
const shadowCounters = Object.fromEntries(COUNTERS.map((k) => [k, new Counter(`shadow_${k}`)])) as Record<
  (typeof COUNTERS)[number],
  Counter
>

const targets: Array<{ name: 'direct' | 'veer'; url: string }> = []
if (DIRECT !== '') targets.push({ name: 'direct', url: DIRECT })
targets.push({ name: 'veer', url: TARGET })

function scenario(name: string, startSeconds: number): Scenario {
  return {
    executor: 'constant-arrival-rate',
    exec: name,
    rate: RATE,
    timeUnit: '1s',
    duration: DURATION,
    preAllocatedVUs: VUS,
    maxVUs: VUS * 10,
    startTime: duration(startSeconds),
    tags: { target: name },
  }
}

const scenarios: Record<string, Scenario> = {}
targets.forEach((t, i) => {
  scenarios[t.name] = scenario(t.name, i * (seconds(DURATION) + GAP_SECONDS))
})

export const options: Options = {
  scenarios,
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'med', 'p(90)', 'p(99)', 'max'],
  thresholds: Object.assign(
    { 'http_req_failed{target:veer}': ['rate<0.01'] },
    ...targets.flatMap((t) => [
      visible('http_req_duration', { target: t.name }, 'trend'),
      visible('http_reqs', { target: t.name }, 'counter'),
      visible('http_req_failed', { target: t.name }, 'rate'),
    ]),
  ),
}

// A JSON body of about BODY_BYTES, built once in the init context.
const body = JSON.stringify({ order: 42, items: ['a', 'b'], pad: 'x'.repeat(Math.max(0, BODY_BYTES - 40)) })

function hit(base: string): void {
  const url = `${base}${URL_PATH}`
  const res =
    METHOD === 'POST'
      ? http.post(url, body, { headers: { 'content-type': 'application/json' } })
      : http.get(url)
  check(res, { 'status is 2xx': (r) => r.status >= 200 && r.status < 300 })
}

export function veer(): void {
  hit(TARGET)
}

export function direct(): void {
  hit(DIRECT)
}

function readShadow(): ShadowCounts | null {
  if (ADMIN === '') return null
  const res = http.get(`${ADMIN}/v1/stats`, { responseType: 'text', tags: { name: 'admin stats' } })
  if (res.status !== 200 || typeof res.body !== 'string') return null
  const stats = JSON.parse(res.body) as {
    routes?: Array<{ name: string; shadow?: Partial<ShadowCounts> | null }>
  }
  const shadow = stats.routes?.find((r) => r.name === ROUTE)?.shadow
  if (shadow === undefined || shadow === null) return null
  return Object.fromEntries(COUNTERS.map((k) => [k, shadow[k] ?? 0])) as ShadowCounts
}

export function setup(): { before: ShadowCounts | null } {
  return { before: readShadow() }
}

/** The counters' growth over the test, recorded as k6 counters so the summary can show them. */
export function teardown(data: { before: ShadowCounts | null }): void {
  const after = readShadow()
  if (data.before === null || after === null) return
  for (const k of COUNTERS) shadowCounters[k].add(after[k] - data.before[k])
}

export function handleSummary(data: SummaryData): Record<string, string> {
  const rows = targets.map((t) => {
    const d = `http_req_duration{target:${t.name}}`
    return [
      t.name,
      fmt.int(value(data, `http_reqs{target:${t.name}}`, 'count') / seconds(DURATION)),
      fmt.ms(value(data, d, 'med')),
      fmt.ms(value(data, d, 'p(90)')),
      fmt.ms(value(data, d, 'p(99)')),
      fmt.ms(value(data, d, 'max')),
      fmt.pct(value(data, `http_req_failed{target:${t.name}}`, 'rate')),
    ]
  })
  const lines = [
    `shadow: ${RATE} req/s ${METHOD} ${URL_PATH}${METHOD === 'POST' ? ` (${BODY_BYTES} B JSON)` : ''} for ${DURATION} per target`,
    '',
    table(['target', 'req/s', 'p50', 'p90', 'p99', 'max', 'failed'], rows),
  ]
  if (DIRECT !== '') {
    const added = (k: string) =>
      value(data, 'http_req_duration{target:veer}', k) - value(data, 'http_req_duration{target:direct}', k)
    lines.push(
      '',
      `added by veer with its shadow: p50 ${fmt.signedMs(added('med'))}, p99 ${fmt.signedMs(added('p(99)'))}`,
    )
  }
  const c = (k: string) => value(data, `shadow_${k}`, 'count') || 0
  if (ADMIN === '') {
    lines.push('', 'shadow counters: not read (set ADMIN to veer’s admin listener)')
  } else {
    const offered = c('sent') + c('dropped')
    lines.push(
      '',
      `shadow: sent ${fmt.int(c('sent'))}, dropped ${fmt.int(c('dropped'))} ` +
        `(mirrored ${fmt.pct(offered === 0 ? Number.NaN : c('sent') / offered)} of what the route offered), ` +
        `errors ${fmt.int(c('errors'))}, compared ${fmt.int(c('compared'))}, mismatches ${fmt.int(c('mismatches'))}`,
    )
  }
  return summaryOutput(lines.join('\n'), data)
}
