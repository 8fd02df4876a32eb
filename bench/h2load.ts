// HTTP/2 load with h2load (nghttp2-client): a closed loop of `clients` connections with `streams`
// requests in flight on each, for a fixed time, cleartext with prior knowledge. Used by bench/h2.ts.
import { LOAD_CORE, runCapture } from './proc.ts'

export interface H2loadOptions {
  /** http://127.0.0.1:PORT/path (loopback only) */
  url: string
  /** how long the load runs (`-D`); with `requests`, how long it may take at most */
  seconds: number
  /** send exactly this many requests (`-n`) instead of running for `seconds` */
  requests?: number
  clients: number
  streams: number
  /** extra request header fields, "name: value" */
  headers?: readonly string[]
  /** POST this file as every request's body */
  dataFile?: string
}

export interface H2loadResult {
  requests: number
  seconds: number
  rps: number
  /** failed streams (reset, errored, timed out) and non-2xx answers */
  errors: number
  /** streams started but not done: the ones in flight when h2load stopped at the end of -D (it resets them) */
  abandoned: number
  /** h2load's "time for request" (first byte sent to stream closed), ms */
  meanMs: number
  sdMs: number
  maxMs: number
}

const UNIT_MS: Record<string, number> = { us: 1e-3, ms: 1, s: 1000 }
const durationMs = (n: string, unit: string) => Number(n) * UNIT_MS[unit]!

/**
 * The summary h2load prints at the end:
 *   finished in 2.00s, 22920.00 req/s, 2.78MB/s
 *   requests: 45840 total, 45880 started, 45840 done, 45840 succeeded, 0 failed, 0 errored, 0 timeout
 *   status codes: 45840 2xx, 0 3xx, 0 4xx, 0 5xx
 *   time for request:      237us     38.69ms      1.73ms      2.07ms    95.66%   (min max mean sd ±sd)
 */
export function parseH2load(out: string): H2loadResult {
  const finished = /finished in ([\d.]+)(us|ms|s), ([\d.]+) req\/s/.exec(out)
  const requests = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed/.exec(out)
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out)
  const D = '([\\d.]+)(us|ms|s)'
  const time = new RegExp(`time for request:\\s+${D}\\s+${D}\\s+${D}\\s+${D}`).exec(out)
  if (finished === null || requests === null || codes === null || time === null) {
    throw new Error(`cannot parse h2load output:\n${out.trim().slice(-600)}`)
  }
  const succeeded = Number(requests[4])
  return {
    requests: succeeded,
    seconds: durationMs(finished[1]!, finished[2]!) / 1000,
    rps: Number(finished[3]),
    errors: Number(requests[5]) + Number(codes[2]) + Number(codes[3]) + Number(codes[4]),
    abandoned: Number(requests[2]) - Number(requests[3]),
    maxMs: durationMs(time[3]!, time[4]!),
    meanMs: durationMs(time[5]!, time[6]!),
    sdMs: durationMs(time[7]!, time[8]!),
  }
}

/** One h2load run on the load core; it stops by itself after `seconds` (or its `requests`). */
export async function h2load(opts: H2loadOptions): Promise<H2loadResult> {
  const host = new URL(opts.url).hostname
  if (host !== '127.0.0.1' && host !== 'localhost') throw new Error(`refusing to send load to ${opts.url}`)
  const length =
    opts.requests === undefined ? `-D${Math.max(1, Math.round(opts.seconds))}` : `-n${opts.requests}`
  const args = ['-t1', `-c${opts.clients}`, `-m${opts.streams}`, length]
  for (const h of opts.headers ?? []) args.push('-H', h)
  if (opts.dataFile !== undefined) args.push('-d', opts.dataFile)
  args.push(opts.url)
  const r = await runCapture('h2load', 'h2load', args, LOAD_CORE, (opts.seconds + 20) * 1000)
  if (r.code !== 0) throw new Error(`h2load exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(-300)}`)
  return parseH2load(r.stdout)
}
