// Step load: the arrival rate climbs in steps (ramp, then hold), to find where veer stops keeping up.
// Per step and target it reports the rate achieved while holding, latency quantiles, failures; k6's
// dropped_iterations says when it could not even start requests on time. With DIRECT set, the same
// steps run against the upstream first, so each step has its baseline.
//
//   k6 run -e TARGET=http://127.0.0.1:8080 -e DIRECT=http://127.0.0.1:3000 \
//          -e STEPS=1000,2000,4000,8000 -e HOLD=30s bench/k6/step.ts
//
// Env: TARGET (required), DIRECT (optional), URL_PATH (default /), STEPS (req/s, default
// 500,1000,2000,4000,8000), RAMP (default 5s), HOLD (default 30s), VUS (pre-allocated, default 200;
// up to 10× are started), SUMMARY_JSON.
import { check } from 'k6'
import exec from 'k6/execution'
import http from 'k6/http'
import type { Options, Scenario, Stage } from 'k6/options'
import {
  baseUrl,
  duration,
  env,
  fmt,
  num,
  numbers,
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
const STEPS = numbers('STEPS', [500, 1000, 2000, 4000, 8000])
const RAMP = seconds(env('RAMP', '5s'))
const HOLD = seconds(env('HOLD', '30s'))
const VUS = num('VUS', 200)
const GAP_SECONDS = 5
const STEP_SECONDS = RAMP + HOLD
const TOTAL_SECONDS = STEPS.length * STEP_SECONDS

const targets: Array<{ name: 'direct' | 'veer'; url: string }> = []
if (DIRECT !== '') targets.push({ name: 'direct', url: DIRECT })
targets.push({ name: 'veer', url: TARGET })

const stages: Stage[] = STEPS.flatMap((rate) => [
  { target: rate, duration: duration(RAMP) },
  { target: rate, duration: duration(HOLD) },
])

function scenario(name: string, startSeconds: number): Scenario {
  return {
    executor: 'ramping-arrival-rate',
    exec: name,
    startRate: 0,
    timeUnit: '1s',
    stages,
    preAllocatedVUs: VUS,
    maxVUs: VUS * 10,
    startTime: duration(startSeconds),
    tags: { target: name },
  }
}

const scenarios: Record<string, Scenario> = {}
targets.forEach((t, i) => {
  scenarios[t.name] = scenario(t.name, i * (TOTAL_SECONDS + GAP_SECONDS))
})

const perStep = targets.flatMap((t) =>
  STEPS.flatMap((_, i) => {
    const tags = { target: t.name, step: String(i), phase: 'hold' }
    return [
      visible('http_req_duration', tags, 'trend'),
      visible('http_reqs', tags, 'counter'),
      visible('http_req_failed', tags, 'rate'),
    ]
  }),
)

export const options: Options = {
  scenarios,
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'max'],
  thresholds: Object.assign(
    {},
    ...perStep,
    ...targets.map((t) => visible('dropped_iterations', { scenario: t.name }, 'counter')),
  ),
}

/** Which step this moment is in, and whether the rate is still ramping or holding. */
function where(): { step: string; phase: 'ramp' | 'hold' } {
  const elapsed = (Date.now() - exec.scenario.startTime) / 1000
  const i = Math.min(STEPS.length - 1, Math.floor(elapsed / STEP_SECONDS))
  return { step: String(i), phase: elapsed - i * STEP_SECONDS < RAMP ? 'ramp' : 'hold' }
}

function hit(base: string): void {
  const res = http.get(`${base}${URL_PATH}`, { tags: where() })
  check(res, { 'status is 2xx': (r) => r.status >= 200 && r.status < 300 })
}

export function veer(): void {
  hit(TARGET)
}

export function direct(): void {
  hit(DIRECT)
}

export function handleSummary(data: SummaryData): Record<string, string> {
  const rows: string[][] = []
  for (const t of targets) {
    STEPS.forEach((rate, i) => {
      const sel = `{target:${t.name},step:${i},phase:hold}`
      rows.push([
        i === 0 ? t.name : '',
        String(rate),
        fmt.int(value(data, `http_reqs${sel}`, 'count') / HOLD),
        fmt.ms(value(data, `http_req_duration${sel}`, 'med')),
        fmt.ms(value(data, `http_req_duration${sel}`, 'p(90)')),
        fmt.ms(value(data, `http_req_duration${sel}`, 'p(99)')),
        fmt.ms(value(data, `http_req_duration${sel}`, 'max')),
        fmt.pct(value(data, `http_req_failed${sel}`, 'rate')),
      ])
    })
  }
  const dropped = targets
    .map((t) => `${t.name} ${fmt.int(value(data, `dropped_iterations{scenario:${t.name}}`, 'count') || 0)}`)
    .join(', ')
  const text = [
    `step: ${STEPS.join(' → ')} req/s, ${RAMP} s ramp + ${HOLD} s hold each, GET ${URL_PATH} (figures over the holds)`,
    '',
    table(['target', 'rate', 'achieved', 'p50', 'p90', 'p99', 'max', 'failed'], rows),
    '',
    `iterations k6 could not start on time (dropped_iterations): ${dropped}`,
  ].join('\n')
  return summaryOutput(text, data)
}
