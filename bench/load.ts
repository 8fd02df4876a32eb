// Load generation: (1) max throughput, closed loop, with wrk when available or a Node/undici fallback;
// (2) fixed-rate open loop in Node, latency measured from each request's *scheduled* send time, so a
// stalled server is charged for the requests it delayed (no coordinated omission).
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { type Dispatcher, Pool } from 'undici'
import { LOAD_CORE, runCapture } from './proc.ts'
import { percentile } from './stats.ts'
import { startTicker } from './ticker.ts'

export interface Target {
  /** e.g. http://127.0.0.1:PORT (always loopback) */
  origin: string
  path: string
  /** Send `header: user-N` with N rotating over `users` values (sticky routing). */
  sticky?: { header: string; users: number }
}

export interface ThroughputResult {
  tool: 'wrk' | 'node'
  requests: number
  seconds: number
  rps: number
  /** socket errors, timeouts and non-2xx answers */
  errors: number
}

export interface LatencyResult {
  rate: number
  seconds: number
  scheduled: number
  completed: number
  errors: number
  /** requests still unanswered when the phase gave up waiting */
  timedOut: number
  p50Ms: number
  p99Ms: number
  maxMs: number
}

function assertLoopback(origin: string): void {
  const host = new URL(origin).hostname
  if (host !== '127.0.0.1' && host !== 'localhost' && host !== '[::1]') {
    throw new Error(`refusing to send load to ${origin}: loopback only`)
  }
}

function headerSets(target: Target): Array<Record<string, string>> {
  if (target.sticky === undefined) return [{}]
  const { header, users } = target.sticky
  return Array.from({ length: users }, (_, i) => ({ [header]: `user-${i}` }))
}

/** Minimal dispatch handler: reports (status, error) once, ignores the body. */
class Once implements Dispatcher.DispatchHandler {
  readonly done: (status: number, err: Error | null) => void
  status = 0
  constructor(done: (status: number, err: Error | null) => void) {
    this.done = done
  }
  onRequestStart(): void {}
  onResponseStart(_c: Dispatcher.DispatchController, status: number): void {
    this.status = status
  }
  onResponseData(): void {}
  onResponseEnd(): void {
    this.done(this.status, null)
  }
  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    this.done(0, err)
  }
}

// ---------- max throughput ----------

export interface ThroughputOptions {
  seconds: number
  connections: number
  useWrk: boolean
  tmpDir: string
}

export function maxThroughput(target: Target, opts: ThroughputOptions): Promise<ThroughputResult> {
  assertLoopback(target.origin)
  return opts.useWrk ? wrkThroughput(target, opts) : nodeThroughput(target, opts)
}

function wrkScript(target: Target, tmpDir: string): string | null {
  if (target.sticky === undefined) return null
  const path = join(tmpDir, `sticky-${target.sticky.users}.lua`)
  writeFileSync(
    path,
    [
      'local i = 0',
      'request = function()',
      '  i = i + 1',
      `  return wrk.format(nil, nil, { [${JSON.stringify(target.sticky.header)}] = "user-" .. (i % ${target.sticky.users}) })`,
      'end',
      '',
    ].join('\n'),
  )
  return path
}

/** Parse wrk's summary. Exported for a quick look in isolation. */
export function parseWrk(out: string): { requests: number; seconds: number; rps: number; errors: number } {
  const summary = /(\d+) requests in ([\d.]+)(us|ms|s|m|h)\b/.exec(out)
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out)
  if (summary === null || rps === null) throw new Error(`cannot parse wrk output:\n${out}`)
  const unit = { us: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 }[summary[3] as 'us' | 'ms' | 's' | 'm' | 'h']
  let errors = 0
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out)
  if (sock !== null) errors += sock.slice(1).reduce((a, b) => a + Number(b), 0)
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out)
  if (non2xx !== null) errors += Number(non2xx[1])
  return { requests: Number(summary[1]), seconds: Number(summary[2]) * unit, rps: Number(rps[1]), errors }
}

async function wrkThroughput(target: Target, opts: ThroughputOptions): Promise<ThroughputResult> {
  // wrk takes whole seconds only
  const seconds = Math.max(1, Math.round(opts.seconds))
  const args = ['-t1', `-c${opts.connections}`, `-d${seconds}s`, '--timeout', '5s']
  const script = wrkScript(target, opts.tmpDir)
  if (script !== null) args.push('-s', script)
  args.push(target.origin + target.path)
  const r = await runCapture('wrk', 'wrk', args, LOAD_CORE, (opts.seconds + 20) * 1000)
  if (r.code !== 0) throw new Error(`wrk exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 300)}`)
  return { tool: 'wrk', ...parseWrk(r.stdout) }
}

/** Closed loop: `connections` requests in flight, each completion immediately sends the next. */
async function nodeThroughput(target: Target, opts: ThroughputOptions): Promise<ThroughputResult> {
  const pool = new Pool(target.origin, { connections: opts.connections, pipelining: 1 })
  const headers = headerSets(target)
  let sent = 0
  let ok = 0
  let errors = 0
  let inflight = 0
  const start = performance.now()
  const deadline = start + opts.seconds * 1000
  let finish: () => void = () => {}
  const finished = new Promise<void>((resolve) => (finish = resolve))

  const fire = (): void => {
    if (performance.now() >= deadline) {
      if (--inflight === 0) finish()
      return
    }
    const h = headers[sent++ % headers.length]!
    pool.dispatch(
      { path: target.path, method: 'GET', headers: h },
      new Once((status, err) => {
        const late = performance.now() >= deadline
        if (err !== null || status < 200 || status >= 300) {
          if (!late) errors++
          // back off a little on errors so a refusing target does not become a busy loop
          setTimeout(fire, 1)
          return
        }
        if (!late) ok++
        fire()
      }),
    )
  }
  for (let i = 0; i < opts.connections; i++) {
    inflight++
    fire()
  }
  // Hard bound: never wait more than 10 s past the deadline for stragglers.
  const bound = new AbortController()
  const limit = sleep(opts.seconds * 1000 + 10_000, undefined, { signal: bound.signal }).catch(() => {})
  await Promise.race([finished, limit])
  bound.abort() // cancels the timer; its AbortError is swallowed above
  await pool.destroy()
  const seconds = opts.seconds
  return { tool: 'node', requests: ok, seconds, rps: ok / seconds, errors }
}

export interface CountResult {
  /** requests answered 2xx */
  ok: number
  /** socket errors, timeouts and non-2xx answers */
  errors: number
  seconds: number
}

/**
 * Closed loop of exactly `requests` GETs from `clients` clients (one connection each, opened cold as a
 * client's first request goes): each answer sends that client's next request. For counting what a
 * proxy does with a known number of requests (e.g. how many of them reached its shadow).
 */
export async function closedLoop(
  target: Target,
  opts: { requests: number; clients: number },
): Promise<CountResult> {
  assertLoopback(target.origin)
  const pool = new Pool(target.origin, { connections: opts.clients, pipelining: 1 })
  const headers = headerSets(target)
  let next = 0
  let ok = 0
  let errors = 0
  const start = performance.now()
  const client = async (): Promise<void> => {
    while (next < opts.requests) {
      const h = headers[next++ % headers.length]!
      const status = await new Promise<number>((resolve) =>
        pool.dispatch(
          { path: target.path, method: 'GET', headers: h, headersTimeout: 10_000, bodyTimeout: 10_000 },
          new Once((s, err) => resolve(err === null ? s : 0)),
        ),
      )
      if (status >= 200 && status < 300) ok++
      else errors++
    }
  }
  await Promise.all(Array.from({ length: opts.clients }, client))
  const seconds = (performance.now() - start) / 1000
  await pool.destroy()
  return { ok, errors, seconds }
}

// ---------- fixed rate, open loop ----------

export interface FixedRateOptions {
  rate: number
  seconds: number
  connections?: number
  /** how long to wait for outstanding answers after the last scheduled send */
  drainMs?: number
  /** seconds sent at the rate before recording starts (lets both ends settle into the pattern) */
  leadInSeconds?: number
}

export async function fixedRate(target: Target, opts: FixedRateOptions): Promise<LatencyResult> {
  assertLoopback(target.origin)
  const connections = opts.connections ?? 64
  const drainMs = opts.drainMs ?? 3000
  const lead = Math.round(opts.rate * (opts.leadInSeconds ?? 0.5))
  const total = lead + Math.round(opts.rate * opts.seconds)
  const pool = new Pool(target.origin, { connections, pipelining: 1 })
  const headers = headerSets(target)
  const reqTimeouts = { headersTimeout: drainMs + 2000, bodyTimeout: drainMs + 2000 }

  // Warm the client side (open connections) so connection setup is not charged to the first requests.
  await Promise.all(
    Array.from(
      { length: Math.min(connections, 32) },
      () =>
        new Promise<void>((resolve) =>
          pool.dispatch(
            { path: target.path, method: 'GET', headers: headers[0]!, ...reqTimeouts },
            new Once(() => resolve()),
          ),
        ),
    ),
  )

  const latencies = new Float64Array(total)
  let completed = 0
  let errors = 0
  let pending = 0 // recorded requests not yet answered
  let next = 0
  const interval = 1000 / opts.rate
  let t0 = Number.NaN // set at the first tick, once the ticker thread is running

  const send = (i: number, scheduled: number): void => {
    const recorded = i >= lead
    if (recorded) pending++
    pool.dispatch(
      { path: target.path, method: 'GET', headers: headers[i % headers.length]!, ...reqTimeouts },
      new Once((status, err) => {
        if (!recorded) return
        pending--
        if (err !== null || status < 200 || status >= 300) errors++
        else latencies[completed++] = performance.now() - scheduled
      }),
    )
  }

  // Each tick sends every request whose scheduled time has passed (ticks come every interval/2).
  await new Promise<void>((resolve) => {
    const tickMs = Math.max(0.05, interval / 2)
    let guard: NodeJS.Timeout | undefined
    let stopped = false
    const finish = () => {
      if (stopped) return
      stopped = true
      clearTimeout(guard)
      void ticker.stop().then(resolve)
    }
    const ticker = startTicker(tickMs, Math.ceil((opts.seconds * 1000 + 2000) / tickMs), () => {
      const now = performance.now()
      if (Number.isNaN(t0)) t0 = now
      const due = Math.min(total, Math.floor((now - t0) / interval) + 1)
      while (next < due) {
        send(next, t0 + next * interval)
        next++
      }
      if (next >= total) finish()
    })
    // Bounded even if ticks stop coming.
    guard = setTimeout(finish, opts.seconds * 1000 + 3000)
  })

  const drainDeadline = performance.now() + drainMs
  while (pending > 0 && performance.now() < drainDeadline) await sleep(5)
  const answered = completed
  const failed = errors
  const timedOut = pending
  await pool.destroy() // fails whatever is still outstanding; those are already counted as timedOut

  // Unanswered requests count as infinitely slow (they are in the tail, not left out of it);
  // failed ones are left out of the percentiles and reported as errors.
  const ok = new Float64Array(answered + timedOut).fill(Number.POSITIVE_INFINITY)
  ok.set(latencies.subarray(0, answered))
  ok.sort()
  return {
    rate: opts.rate,
    seconds: opts.seconds,
    scheduled: Math.max(0, next - lead),
    completed: answered,
    errors: failed,
    timedOut,
    p50Ms: percentile(ok, 0.5),
    p99Ms: percentile(ok, 0.99),
    maxMs: ok.length > 0 ? ok[ok.length - 1]! : Number.NaN,
  }
}
