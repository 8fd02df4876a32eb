// End-to-end automatic rollback on loopback:  npm run bench:rollback [-- --runs N] [--grace MS]
// A real `veer control`, a real `veer proxy --control`, a stable upstream failing 0.1% of requests and
// a canary failing 5%, open-loop GET load at 400 req/s. A rollout puts the canary at 20% (default
// analysis); we measure, per run, from the rollout start: when control decided (audit time), when the
// last canary answer reached a user, and the errors users saw — with the fallback to stable on (the
// default) and off. Medians and max over the runs; writes bench/results/rollback-e2e.md and .json.
import { writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { Pool } from 'undici'
import { positiveInt, startHarness } from './harness.ts'
import { describeMachine } from './machine.ts'
import { freePort, startProcess, stopProcess, waitReady } from './proc.ts'
import { percentile } from './stats.ts'
import { startTicker } from './ticker.ts'

const RATE = 400
const WEIGHT = 20
const STABLE_ERRORS = 0.001
const CANARY_ERRORS = 0.05
/** Load runs this long before the rollout starts (the proxies' reports are flowing), and at most this long after. */
const LEAD_MS = 2000
const MAX_MS = 20_000
const TOKEN = 'e2e-operator-token-0123456789abcdef'
const PROXY_TOKEN = 'e2e-proxy-token-0123456789abcdef0'

const { values } = parseArgs({ options: { runs: { type: 'string' }, grace: { type: 'string' } } })
/** Control's start-up grace (VEER_CONTROL_GRACE_MS): 0 by default here; 10000 is what a fresh control has. */
const GRACE_MS = values.grace === undefined ? 0 : positiveInt(values.grace, 0, 600_000)
const RUNS = positiveInt(values.runs, 5, 50)
const h = startHarness('veer-rollback-e2e', 15)
const BIN = join(h.root, 'bin/veer.js')

/** An upstream failing `rate` of its requests (every 1/rate-th, so a run's rate is exact). */
function upstream(rate: number): Promise<{ server: Server; url: string }> {
  let n = 0
  const every = Math.round(1 / rate)
  const server = createServer((req, res) => {
    req.resume()
    const fail = ++n % every === 0
    res
      .writeHead(fail ? 500 : 200, { 'content-type': 'application/json' })
      .end(fail ? '{"error":1}' : '{"ok":1}')
  })
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const a = server.address() as { port: number }
      resolve({ server, url: `http://127.0.0.1:${a.port}` })
    }),
  )
}

interface Run {
  fallback: boolean
  /** ms from the rollout start until control's audit entry of the rollback */
  decidedMs: number | null
  /** ms from the rollout start until the last answer a user got from canary */
  lastCanaryMs: number | null
  canaryAnswers: number
  /** 5xx answers users saw that canary served, and that stable served */
  canaryErrorsSeen: number
  stableErrorsSeen: number
  /** control's harm account of the rollout */
  harmed: number
  saved: number
  reason: string
}

async function api(control: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${control}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await res.text()
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`)
  return JSON.parse(text)
}

async function oneRun(fallback: boolean, index: number): Promise<Run> {
  const stable = await upstream(STABLE_ERRORS)
  const canary = await upstream(CANARY_ERRORS)
  const dir = join(h.tmpDir, `run-${index}-${fallback ? 'fallback' : 'plain'}`)
  const tokens = join(h.tmpDir, `tokens-${index}-${fallback}`)
  writeFileSync(tokens, `${TOKEN} operator bench\n${PROXY_TOKEN} proxy edge\n`)
  const proxyToken = join(h.tmpDir, `proxy-token-${index}-${fallback}`)
  writeFileSync(proxyToken, `${PROXY_TOKEN}\n`)
  const controlPort = await freePort()
  const listen = await freePort()
  const admin = await freePort()
  const control = startProcess(
    'control',
    process.execPath,
    [
      BIN,
      'control',
      '--listen',
      `127.0.0.1:${controlPort}`,
      '--state-dir',
      `${dir}-state`,
      '--token-file',
      tokens,
    ],
    {
      core: null,
      logPath: `${dir}-control.log`,
      env: { ...process.env, VEER_CONTROL_GRACE_MS: String(GRACE_MS) },
    },
  )
  const controlUrl = `http://127.0.0.1:${controlPort}`
  await waitReady(control, controlPort, 10_000, `${controlUrl}/healthz`)
  const config = join(h.tmpDir, `config-${index}-${fallback}.json`)
  writeFileSync(
    config,
    JSON.stringify({
      listen: `127.0.0.1:${listen}`,
      admin: `127.0.0.1:${admin}`,
      log: { access: false },
      routes: [
        {
          name: 'shop',
          stable: { url: stable.url, release: 'v1' },
          canary: { url: canary.url, release: 'v2' },
          analysis: { fallback: { enabled: fallback } },
        },
      ],
    }),
  )
  const proxy = startProcess(
    'proxy',
    process.execPath,
    [BIN, 'proxy', '--config', config, '--control', controlUrl, '--token-file', proxyToken],
    { core: null, logPath: `${dir}-proxy.log` },
  )
  await waitReady(proxy, admin, 10_000, `http://127.0.0.1:${admin}/readyz`)
  for (let i = 0; ; i++) {
    const r = await fetch(`${controlUrl}/v1/routes/shop`, { headers: { authorization: `Bearer ${TOKEN}` } })
    await r.text()
    if (r.ok) break
    if (i > 200) throw new Error('the proxy never registered its route with control')
    await new Promise((r) => setTimeout(r, 25))
  }

  const pool = new Pool(`http://127.0.0.1:${listen}`, { connections: 32 })
  let rolloutAt = Number.POSITIVE_INFINITY
  const seen = { canaryAnswers: 0, canaryErrors: 0, stableErrors: 0, lastCanary: 0 }
  const send = () => {
    pool
      .request({ path: '/item', method: 'GET' })
      .then(async (res) => {
        await res.body.dump()
        const now = performance.now()
        if (now < rolloutAt) return
        const bad = res.statusCode >= 500
        if (res.headers['x-veer-version'] === 'canary') {
          seen.canaryAnswers++
          seen.lastCanary = now
          if (bad) seen.canaryErrors++
        } else if (bad) seen.stableErrors++
      })
      .catch(() => {})
  }
  const ticker = startTicker(1000 / RATE, Math.ceil(((LEAD_MS + MAX_MS) / 1000) * RATE), send)
  await new Promise((r) => setTimeout(r, LEAD_MS))
  const startWall = Date.now()
  rolloutAt = performance.now()
  await api(controlUrl, 'POST', '/v1/routes/shop/rollout', {
    steps: [{ weight: WEIGHT, pause: '1h' }, { weight: 100 }],
    reason: 'bench',
  })
  let route: {
    rollout: { phase: string; reason: string | null; analysis: { harmed: number; saved: number } }
  }
  for (;;) {
    route = await api(controlUrl, 'GET', '/v1/routes/shop')
    if (route.rollout.phase === 'aborted' || performance.now() - rolloutAt > MAX_MS) break
    await new Promise((r) => setTimeout(r, 20))
  }
  // A little more load, so the last canary answer is really the last one.
  await new Promise((r) => setTimeout(r, 500))
  await ticker.stop()
  route = await api(controlUrl, 'GET', '/v1/routes/shop')
  const audit = await api(controlUrl, 'GET', '/v1/audit?route=shop&limit=1')
  const entry = audit.entries[0] as { action: string; time: string; why: string }
  const decided = entry.action === 'rollout-abort' ? Date.parse(entry.time) - startWall : null
  await pool.close()
  await Promise.all([stopProcess(proxy), stopProcess(control)])
  stable.server.close()
  canary.server.close()
  return {
    fallback,
    decidedMs: decided,
    lastCanaryMs: seen.lastCanary === 0 ? null : Math.round(seen.lastCanary - rolloutAt),
    canaryAnswers: seen.canaryAnswers,
    canaryErrorsSeen: seen.canaryErrors,
    stableErrorsSeen: seen.stableErrors,
    harmed: route.rollout.analysis.harmed,
    saved: route.rollout.analysis.saved,
    reason: route.rollout.reason ?? '(not rolled back)',
  }
}

const runs: Run[] = []
for (let i = 0; i < RUNS && !h.interrupted(); i++) {
  for (const fallback of [true, false]) {
    const r = await oneRun(fallback, i)
    runs.push(r)
    h.log(
      `run ${i + 1}/${RUNS} fallback ${fallback ? 'on ' : 'off'}: decided ${r.decidedMs ?? '—'} ms, last canary answer ${r.lastCanaryMs ?? '—'} ms, ` +
        `users saw ${r.canaryErrorsSeen} canary + ${r.stableErrorsSeen} stable errors; harmed ${r.harmed}, saved ${r.saved}`,
    )
  }
}

const med = (xs: number[]) =>
  xs.length === 0
    ? null
    : percentile(
        [...xs].sort((a, b) => a - b),
        0.5,
      )
const max = (xs: number[]) => (xs.length === 0 ? null : Math.max(...xs))
const fmt = (v: number | null, unit = '') => (v === null ? '—' : `${Math.round(v)}${unit}`)
const rows = [true, false].map((fallback) => {
  const rs = runs.filter((r) => r.fallback === fallback)
  const decided = rs.flatMap((r) => (r.decidedMs === null ? [] : [r.decidedMs]))
  const last = rs.flatMap((r) => (r.lastCanaryMs === null ? [] : [r.lastCanaryMs]))
  const seenErr = rs.map((r) => r.canaryErrorsSeen)
  return {
    fallback,
    runs: rs.length,
    rolledBack: decided.length,
    decidedMedianMs: med(decided),
    decidedMaxMs: max(decided),
    lastCanaryMedianMs: med(last),
    lastCanaryMaxMs: max(last),
    canaryErrorsSeenMedian: med(seenErr),
    canaryErrorsSeenMax: max(seenErr),
    savedMedian: med(rs.map((r) => r.saved)),
    harmedMedian: med(rs.map((r) => r.harmed)),
  }
})
const m = describeMachine()
const machine = `${m.nproc} cores, ${m.cpuModel}, Node ${m.node}`
const md = [
  `# Automatic rollback end to end (${new Date().toISOString().slice(0, 16)}Z)`,
  '',
  `${machine}. Canary fails ${CANARY_ERRORS * 100}% of requests, stable ${STABLE_ERRORS * 100}%; GET load ${RATE} req/s open loop; rollout at ${WEIGHT}% with default analysis; ${RUNS} runs each. Times from the rollout's start (the POST).`,
  '',
  '| fallback | rolled back | decided, median / max | last canary answer, median / max | canary errors users saw, median / max | saved by fallback, median | harmed (control), median |',
  '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ...rows.map(
    (r) =>
      `| ${r.fallback ? 'on' : 'off'} | ${r.rolledBack}/${r.runs} | ${fmt(r.decidedMedianMs, ' ms')} / ${fmt(r.decidedMaxMs, ' ms')} | ${fmt(r.lastCanaryMedianMs, ' ms')} / ${fmt(r.lastCanaryMaxMs, ' ms')} | ${fmt(r.canaryErrorsSeenMedian)} / ${fmt(r.canaryErrorsSeenMax)} | ${fmt(r.savedMedian)} | ${fmt(r.harmedMedian)} |`,
  ),
  '',
  `Reason of the last run: ${runs.at(-1)?.reason ?? '—'}`,
  '',
].join('\n')
writeFileSync(join(h.resultsDir, 'rollback-e2e.md'), md)
writeFileSync(
  join(h.resultsDir, 'rollback-e2e.json'),
  `${JSON.stringify({ machine: m, runs, rows }, null, 2)}\n`,
)
process.stdout.write(md)
process.exit(0)
