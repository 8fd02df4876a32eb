// Steady load through veer and straight to the upstream, at the same constant arrival rate (open
// model: k6 starts RATE requests a second whatever the answers do, so a slow proxy shows up as latency
// and dropped iterations, not as a politely lower rate). By default the two run one after the other
// (direct first), so they never compete for the upstream; PARALLEL=1 runs them at once.
//
//   k6 run -e TARGET=http://127.0.0.1:8080 -e DIRECT=http://127.0.0.1:3000 bench/k6/steady.ts
//
// Env: TARGET (veer's listener, required), DIRECT (the upstream veer forwards to; optional), URL_PATH
// (request path, default /), RATE (req/s, default 2000), DURATION (per target, default 60s), VUS
// (pre-allocated, default 100; up to 10× are started when answers slow down), STICKY_HEADER and USERS
// (send STICKY_HEADER: user-N over USERS values; default none), PARALLEL (1: both at once),
// SUMMARY_JSON (also write the raw end-of-test data to this file).
import { check } from 'k6'
import http from 'k6/http'
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
const URL_PATH = env('URL_PATH', '/')
const RATE = num('RATE', 2000)
const DURATION = env('DURATION', '60s')
const VUS = num('VUS', 100)
const STICKY_HEADER = env('STICKY_HEADER', '')
const USERS = num('USERS', 1000)
const PARALLEL = env('PARALLEL', '0') === '1'
const GAP_SECONDS = 5

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
  scenarios[t.name] = scenario(t.name, PARALLEL ? 0 : i * (seconds(DURATION) + GAP_SECONDS))
})

export const options: Options = {
  scenarios,
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'p(99.9)', 'max'],
  thresholds: Object.assign(
    { 'http_req_failed{target:veer}': ['rate<0.01'] },
    ...targets.flatMap((t) => [
      visible('http_req_duration', { target: t.name }, 'trend'),
      visible('http_reqs', { target: t.name }, 'counter'),
      visible('http_req_failed', { target: t.name }, 'rate'),
      visible('dropped_iterations', { scenario: t.name }, 'counter'),
    ]),
  ),
}

let sent = 0
function hit(base: string): void {
  const headers: Record<string, string> = {}
  if (STICKY_HEADER !== '') headers[STICKY_HEADER] = `user-${(__VU * 7919 + sent++) % USERS}`
  const res = http.get(`${base}${URL_PATH}`, { headers })
  check(res, { 'status is 2xx': (r) => r.status >= 200 && r.status < 300 })
}

export function veer(): void {
  hit(TARGET)
}

export function direct(): void {
  hit(DIRECT)
}

export function handleSummary(data: SummaryData): Record<string, string> {
  const rows = targets.map((t) => {
    const d = `http_req_duration{target:${t.name}}`
    const count = value(data, `http_reqs{target:${t.name}}`, 'count')
    return [
      t.name,
      fmt.int(count / seconds(DURATION)),
      fmt.ms(value(data, d, 'med')),
      fmt.ms(value(data, d, 'p(90)')),
      fmt.ms(value(data, d, 'p(99)')),
      fmt.ms(value(data, d, 'p(99.9)')),
      fmt.ms(value(data, d, 'max')),
      fmt.pct(value(data, `http_req_failed{target:${t.name}}`, 'rate')),
      fmt.int(value(data, `dropped_iterations{scenario:${t.name}}`, 'count') || 0),
    ]
  })
  const lines = [
    `steady: ${RATE} req/s for ${DURATION} per target${PARALLEL ? ' (in parallel)' : ' (one after the other)'}, GET ${URL_PATH}`,
    '',
    table(['target', 'req/s', 'p50', 'p90', 'p99', 'p99.9', 'max', 'failed', 'dropped'], rows),
  ]
  if (DIRECT !== '') {
    const added = (key: string) =>
      value(data, 'http_req_duration{target:veer}', key) -
      value(data, 'http_req_duration{target:direct}', key)
    lines.push(
      '',
      `added by veer: p50 ${fmt.signedMs(added('med'))}, p90 ${fmt.signedMs(added('p(90)'))}, ` +
        `p99 ${fmt.signedMs(added('p(99)'))}, p99.9 ${fmt.signedMs(added('p(99.9)'))}`,
    )
  }
  return summaryOutput(lines.join('\n'), data)
}
