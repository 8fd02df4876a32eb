// A canary rollout under load: one scenario sends steady traffic through veer with a sticky user
// header, another shifts the canary weight step by step through the control API while it runs. Every
// answer's x-veer-version is counted per step, so the report shows the share each version really got
// at each weight, how long a weight change took to reach the proxy, per-version latency, and whether
// any user fell back from canary to stable while the weight only grew (sticky hashing promises not).
//
//   k6 run -e TARGET=http://127.0.0.1:8080 -e CONTROL=http://127.0.0.1:9900 -e TOKEN=… \
//          -e ADMIN=http://127.0.0.1:9901 -e STEPS=0,5,25,50,100 -e STEP=30s bench/k6/canary.ts
//
// The weight change is `PUT {CONTROL}/v1/routes/{ROUTE}/weights` with `{"canary": N}` and a bearer
// token (the contract's control API; the proxy runs with `--control`). Another control plane: set
// WEIGHT_PATH (with {route}) and WEIGHT_METHOD. Without CONTROL the weights are not changed and the
// script measures the split as it is (STEPS then names the expected weight, one value).
//
// Env: TARGET (veer's listener), CONTROL, TOKEN, ROUTE (default "default"), ADMIN (veer's admin
// listener: when set, each change is timed until GET /v1/config shows it), STEPS (weights, default
// 0,5,25,50,100), STEP (time per weight, default 30s), SETTLE (left out of the share figures after a
// change, default 2s), RATE (req/s, default 500), VUS (default 50), USERS (users per VU, default 50),
// STICKY_HEADER (default x-user-id; "" for weighted, non-sticky routing), VERSION_HEADER (default
// x-veer-version), TOLERANCE (allowed share error, default 0.03), SUMMARY_JSON.
import { check, sleep } from 'k6'
import exec from 'k6/execution'
import http from 'k6/http'
import { Counter, Gauge, Rate, Trend } from 'k6/metrics'
import type { Options } from 'k6/options'
import {
  baseUrl,
  duration,
  env,
  fmt,
  header,
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
const CONTROL = baseUrl('CONTROL', '')
const ADMIN = baseUrl('ADMIN', '')
const TOKEN = env('TOKEN', '')
const ROUTE = env('ROUTE', 'default')
const WEIGHT_PATH = env('WEIGHT_PATH', '/v1/routes/{route}/weights')
const WEIGHT_METHOD = env('WEIGHT_METHOD', 'PUT')
const STEPS = numbers('STEPS', [0, 5, 25, 50, 100])
const STEP = seconds(env('STEP', '30s'))
const SETTLE = seconds(env('SETTLE', '2s'))
const RATE = num('RATE', 500)
const VUS = num('VUS', 50)
const USERS = num('USERS', 50)
const STICKY_HEADER = env('STICKY_HEADER', 'x-user-id')
const VERSION_HEADER = env('VERSION_HEADER', 'x-veer-version')
const TOLERANCE = num('TOLERANCE', 0.03)

if (STEPS.some((w) => w < 0 || w > 100)) throw new Error('STEPS are weights in percent, 0..100')

const answers = new Counter('version_answers') // tags: version, step, phase
const canaryShare = new Rate('canary_share') // tags: step, phase
const latency = new Trend('version_duration', true) // tags: version
const weightSet = new Gauge('canary_weight_set')
const applyTime = new Trend('weight_apply_ms', true)
const stickyRegressions = new Counter('sticky_regressions')

const clamp = (x: number) => Math.min(1, Math.max(0, x))
const shareThresholds = Object.assign(
  {},
  ...STEPS.map((w, i) => ({
    [`canary_share{step:${i},phase:steady}`]: [
      `rate>=${clamp(w / 100 - TOLERANCE).toFixed(4)}`,
      `rate<=${clamp(w / 100 + TOLERANCE).toFixed(4)}`,
    ],
  })),
)

export const options: Options = {
  scenarios: {
    traffic: {
      executor: 'constant-arrival-rate',
      exec: 'traffic',
      rate: RATE,
      timeUnit: '1s',
      duration: duration(STEPS.length * STEP),
      preAllocatedVUs: VUS,
      maxVUs: VUS * 4,
    },
    ...(CONTROL === ''
      ? {}
      : {
          shift: {
            executor: 'per-vu-iterations',
            exec: 'shift',
            vus: 1,
            iterations: 1,
            maxDuration: duration(STEPS.length * STEP + 30),
          },
        }),
  },
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'med', 'p(90)', 'p(99)', 'max'],
  thresholds: Object.assign(
    {
      http_req_failed: ['rate<0.01'],
      ...(STICKY_HEADER === '' ? {} : { sticky_regressions: ['count==0'] }),
    },
    shareThresholds,
    ...STEPS.flatMap((_, i) =>
      ['stable', 'canary', 'none'].map((v) =>
        visible('version_answers', { version: v, step: String(i), phase: 'steady' }, 'counter'),
      ),
    ),
    visible('version_duration', { version: 'stable' }, 'trend'),
    visible('version_duration', { version: 'canary' }, 'trend'),
  ),
}

function stepNow(): { i: number; phase: 'settle' | 'steady' } {
  const elapsed = (Date.now() - exec.scenario.startTime) / 1000
  const i = Math.min(STEPS.length - 1, Math.max(0, Math.floor(elapsed / STEP)))
  return { i, phase: elapsed - i * STEP < SETTLE ? 'settle' : 'steady' }
}

// Per VU: its own users (keys carry the VU number, so no two VUs share a user) and what each got last.
const lastSeen = new Map<string, { canary: boolean; weight: number }>()
let n = 0

export function traffic(): void {
  const { i, phase } = stepNow()
  const headers: Record<string, string> = {}
  const user = `vu${__VU}-user${n++ % USERS}`
  if (STICKY_HEADER !== '') headers[STICKY_HEADER] = user
  const res = http.get(`${TARGET}/`, { headers, tags: { step: String(i), phase } })
  check(res, { 'status is 2xx': (r) => r.status >= 200 && r.status < 300 })
  const version = header(res.headers, VERSION_HEADER) ?? 'none'
  const tags = { version, step: String(i), phase }
  answers.add(1, tags)
  latency.add(res.timings.duration, { version })
  if (version !== 'stable' && version !== 'canary') return
  const isCanary = version === 'canary'
  canaryShare.add(isCanary, { step: String(i), phase })
  if (STICKY_HEADER === '' || phase !== 'steady') return
  const weight = STEPS[i]!
  const before = lastSeen.get(user)
  // Sticky and monotone: a canary user stays on canary as long as the weight does not go down.
  if (before?.canary && !isCanary && weight >= before.weight) stickyRegressions.add(1)
  lastSeen.set(user, { canary: isCanary, weight })
}

function configuredWeight(): number | null {
  const res = http.get(`${ADMIN}/v1/config`, { responseType: 'text', tags: { name: 'admin config' } })
  if (res.status !== 200 || typeof res.body !== 'string') return null
  const config = JSON.parse(res.body) as { routes?: Array<{ name: string; weights?: { canary?: number } }> }
  return config.routes?.find((r) => r.name === ROUTE)?.weights?.canary ?? null
}

export function shift(): void {
  const start = Date.now()
  const url = `${CONTROL}${WEIGHT_PATH.replace('{route}', encodeURIComponent(ROUTE))}`
  STEPS.forEach((weight, i) => {
    const wait = start + i * STEP * 1000 - Date.now()
    if (wait > 0) sleep(wait / 1000)
    const sent = Date.now()
    const res = http.request(WEIGHT_METHOD, url, JSON.stringify({ canary: weight }), {
      headers: {
        'content-type': 'application/json',
        ...(TOKEN === '' ? {} : { authorization: `Bearer ${TOKEN}` }),
      },
      responseType: 'text',
      tags: { name: 'set weight' },
    })
    check(res, { 'weight accepted (2xx)': (r) => r.status >= 200 && r.status < 300 })
    weightSet.add(weight)
    if (ADMIN === '') return
    // Poll the proxy until it serves the new weight (within the settle time, then give up).
    while (Date.now() - sent < Math.max(SETTLE, 1) * 1000 * 5) {
      if (configuredWeight() === weight) {
        applyTime.add(Date.now() - sent)
        return
      }
      sleep(0.05)
    }
  })
}

export function handleSummary(data: SummaryData): Record<string, string> {
  const rows = STEPS.map((w, i) => {
    const count = (v: string) =>
      value(data, `version_answers{version:${v},step:${i},phase:steady}`, 'count') || 0
    const stable = count('stable')
    const canary = count('canary')
    const share = stable + canary === 0 ? Number.NaN : canary / (stable + canary)
    return [String(i), `${w}%`, fmt.int(stable), fmt.int(canary), fmt.int(count('none')), fmt.pct(share)]
  })
  const d = (v: string, k: string) => fmt.ms(value(data, `version_duration{version:${v}}`, k))
  const text = [
    `canary: ${RATE} req/s through ${TARGET}, weights ${STEPS.join(' → ')} % for ${STEP} s each` +
      (CONTROL === '' ? ' (not changed: CONTROL unset)' : ` via ${WEIGHT_METHOD} ${CONTROL}${WEIGHT_PATH}`) +
      (STICKY_HEADER === '' ? ', weighted' : `, sticky on ${STICKY_HEADER}`),
    `(answers counted after the first ${SETTLE} s of each step)`,
    '',
    table(['step', 'weight', 'stable', 'canary', 'no header', 'canary share'], rows),
    '',
    `latency stable: p50 ${d('stable', 'med')}, p99 ${d('stable', 'p(99)')}; ` +
      `canary: p50 ${d('canary', 'med')}, p99 ${d('canary', 'p(99)')}`,
    ADMIN === '' || CONTROL === ''
      ? 'weight change → proxy: not timed (set CONTROL and ADMIN)'
      : `weight change → proxy: median ${fmt.ms(value(data, 'weight_apply_ms', 'med'))}, ` +
        `max ${fmt.ms(value(data, 'weight_apply_ms', 'max'))}`,
    STICKY_HEADER === ''
      ? ''
      : `users sent back from canary to stable while the weight grew: ${fmt.int(value(data, 'sticky_regressions', 'count') || 0)}`,
  ]
  return summaryOutput(text.join('\n'), data)
}
