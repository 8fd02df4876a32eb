// Shapes of the recorded figures, and their per-subject medians over the rounds.
import type { LatencyResult, ThroughputResult } from './load.ts'
import type { Machine } from './machine.ts'
import type { CanaryObservation } from './probe.ts'
import { median } from './stats.ts'
import type { TargetCheck } from './targets.ts'

export interface RoundResult {
  round: number
  small: ThroughputResult
  big: ThroughputResult
  latency: LatencyResult
  /** proxy CPU (utime+stime) per request over the ~100 B max-throughput phase; upstream's for `direct` */
  cpuUsPerReq: number
  /** the same over the 16 KiB phase */
  cpuUsPerReqBig: number
  /** upstream(s) CPU per request over the same phase */
  upstreamCpuUsPerReq: number
  /** proxy RSS after the round; upstream's for `direct` */
  rssMiB: number
  /** CPU used by processes other than the benchmark's own during the round, in % of one core */
  otherCpuPct: number
  /** hypervisor steal during the round, in % of one core */
  stealPct: number
  canary?: CanaryObservation
  /** subject-specific counters over the measured phases (shadow requests sent, trace exports, …) */
  observed?: Record<string, number>
}

export interface Medians {
  rpsSmall: number
  rpsBig: number
  p50Ms: number
  p99Ms: number
  cpuUsPerReq: number
  cpuUsPerReqBig: number
  rssMiB: number
  errors: number
}

export interface SubjectResult {
  name: string
  about: string
  status: 'ok' | 'unavailable'
  reason?: string
  rounds: RoundResult[]
  medians: Medians | null
}

/** What answers behind the proxies: bench/upstream.ts processes, or one nginx serving fixed answers. */
export type UpstreamKind = 'node' | 'nginx'

export interface Settings {
  rounds: number
  quick: boolean
  upstreams: UpstreamKind[]
  /** at least a published run's rounds, warm-up and phases (see run.ts) */
  publishable: boolean
  throughputSeconds: number
  /** the ~100 B phase in this many slices taken in turn across the round's subjects (1: one phase each) */
  slices?: number
  latencySeconds: number
  warmupSeconds: number
  connections: number
  rate: number
  loadTool: string
  pinning: string
}

export interface Report {
  date: string
  machine: Machine
  wrk: { used: boolean; version: string | null; note: string }
  nginx: { used: boolean; version: string | null; note: string }
  taskset: boolean
  settings: Settings
  /** one per upstream, in the order they ran */
  runs: UpstreamRun[]
  wallSeconds: number
}

export interface UpstreamRun {
  upstream: UpstreamKind
  about: string
  /** why this upstream could not be used (nginx missing); its subjects are then empty */
  unavailable?: string
  subjects: SubjectResult[]
  /** the goals and comparisons, paired within rounds (see targets.ts) */
  targets: TargetCheck[]
}

export function medians(rounds: readonly RoundResult[]): Medians | null {
  if (rounds.length === 0) return null
  const m = (f: (r: RoundResult) => number) => median(rounds.map(f))
  return {
    rpsSmall: m((r) => r.small.rps),
    rpsBig: m((r) => r.big.rps),
    p50Ms: m((r) => r.latency.p50Ms),
    p99Ms: m((r) => r.latency.p99Ms),
    cpuUsPerReq: m((r) => r.cpuUsPerReq),
    cpuUsPerReqBig: m((r) => r.cpuUsPerReqBig),
    rssMiB: m((r) => r.rssMiB),
    errors: rounds.reduce(
      (a, r) => a + r.small.errors + r.big.errors + r.latency.errors + r.latency.timedOut,
      0,
    ),
  }
}
