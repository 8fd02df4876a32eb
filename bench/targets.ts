// Issue 18's goals and the comparisons beside them, checked against one upstream's rounds. Every ratio
// is paired within a round (subject ÷ baseline measured in the same round), then the median of those
// ratios taken, with their min–max beside it; a goal's verdict is refused when that spread crosses it.
// Printed, never asserted. CPU µs per request comes first: it is steadier than req/s on a shared VM.
import { type Goal, paired, pairedExcess, type Spread, spread, verdict } from './paired.ts'
import type { RoundResult, SubjectResult, UpstreamKind } from './results.ts'

export interface TargetCheck {
  target: string
  goal: string
  /** the measured figure (a median), formatted; '—' when a subject it needs did not run */
  measured: string
  /** min–max of the paired figures, when there are some */
  spread?: string
  /** null: informational line, or not measurable in this run */
  pass: boolean | null
  /** the verdict in words (meets / misses / undecided …); overrides `pass` in the table */
  verdict?: string
  note: string
}

/** The subject the goals are about: veer with metrics, the analysis window, the access log and a 20% sticky canary. */
export const GOAL_SUBJECT = 'veer-canary-sticky'
/** The goals hold on this upstream (an outside harness's setup); on the other they are printed as info. */
export const GOAL_UPSTREAM: UpstreamKind = 'nginx'
export const FLOOR = 'undici-minimal'
/** The floor that also sends every request to the shadow upstream, fire-and-forget. */
export const TWICE = 'undici-twice'

export const GOALS = {
  /** CPU per request ≤ 1.15× the minimal undici proxy's */
  cpuVsFloor: { op: '≤', value: 1.15 },
  /** throughput (~100 B) ≥ 0.9× the minimal undici proxy's */
  rpsVsFloor: { op: '≥', value: 0.9 },
  /** throughput (~100 B) ≥ 2× http-proxy-3's */
  rpsVsHttpProxy3: { op: '≥', value: 2 },
  /** p99 at the fixed rate ≤ the minimal undici proxy's + 0.3 ms */
  p99VsFloorMs: { op: '≤', value: 0.3 },
  /** 100% shadow's CPU µs/req over plain veer ≤ 1.1× a second exchange's over undici-minimal (undici-twice) */
  shadowVsSecondExchange: { op: '≤', value: 1.1 },
} as const satisfies Record<string, Goal>

export type Fmt = (x: number) => string
export const times: Fmt = (x) => `${x.toFixed(2)}×`
const pct = (x: number) => `${x < 0 ? '−' : '+'}${Math.abs(x * 100).toFixed(1)}%`
const ms = (x: number) => `${x < 0 ? '−' : '+'}${Math.abs(x).toFixed(2)} ms`

const cpu = (r: RoundResult) => r.cpuUsPerReq
const rps = (r: RoundResult) => r.small.rps
const p99 = (r: RoundResult) => r.latency.p99Ms

/** `median` and `min–max`, formatted. */
export function formatSpread(s: Spread, fmt: Fmt): { measured: string; spread: string } {
  if (s.n === 0) return { measured: '—', spread: '' }
  return { measured: fmt(s.median), spread: `${fmt(s.min)} – ${fmt(s.max)} (${s.n})` }
}

export interface CheckOptions {
  fmt?: Fmt
  goal?: Goal
  note?: string
  /** with a goal: print this instead of the verdict (the goal is judged elsewhere), pass left null */
  offGoal?: string
}

const goalText = (goal: Goal | undefined, fmt: Fmt) =>
  goal === undefined ? '(info)' : `${goal.op} ${fmt(goal.value)}`

/** A target line from paired figures already taken: median, min–max and, with a goal, the verdict. */
export function spreadCheck(target: string, s: Spread, opts: CheckOptions = {}): TargetCheck {
  const fmt = opts.fmt ?? times
  const check: TargetCheck = {
    target,
    goal: goalText(opts.goal, fmt),
    ...formatSpread(s, fmt),
    pass: null,
    note: opts.note ?? '',
  }
  if (opts.goal === undefined) return check
  if (opts.offGoal !== undefined) {
    check.verdict = opts.offGoal
    return check
  }
  const v = verdict(s, opts.goal)
  check.verdict = v
  check.pass = v === 'meets goal' ? true : v === 'misses goal' ? false : null
  return check
}

/**
 * `a` against `b` (their rounds; null: the subject did not run), paired per round, as a target line.
 * When one did not run: a goal's line saying what it `needs`, or null for an informational one.
 */
export function pairedCheck<R extends { round: number }>(
  a: readonly R[] | null,
  b: readonly R[] | null,
  target: string,
  figure: (r: R) => number,
  opts: CheckOptions & { how?: 'ratio' | 'difference'; needs: string },
): TargetCheck | null {
  if (a === null || b === null) {
    if (opts.goal === undefined) return null
    return {
      target,
      goal: goalText(opts.goal, opts.fmt ?? times),
      measured: '—',
      pass: null,
      note: opts.needs,
    }
  }
  return spreadCheck(target, spread(paired(a, b, figure, opts.how)), opts)
}

export function checkTargets(
  subjects: readonly SubjectResult[],
  upstream: UpstreamKind,
  rate: number,
): TargetCheck[] {
  const rounds = (name: string) => subjects.find((s) => s.name === name)?.rounds ?? null
  const out: TargetCheck[] = []

  const offGoal =
    upstream === GOAL_UPSTREAM ? undefined : `info (the goal is on the ${GOAL_UPSTREAM} upstream)`
  /** One line: `a` against `b`, paired per round; with a goal, a verdict (on the goal's upstream). */
  const line = (
    a: string,
    b: string,
    target: string,
    figure: (r: RoundResult) => number,
    opts: { how?: 'ratio' | 'difference'; fmt?: Fmt; goal?: Goal; note?: string } = {},
  ) => {
    const check = pairedCheck(rounds(a), rounds(b), target, figure, {
      ...opts,
      offGoal,
      needs: `needs ${a} and ${b}`,
    })
    if (check !== null) out.push(check)
  }

  const rateText = rate.toLocaleString('en-US')
  for (const name of [GOAL_SUBJECT, 'veer']) {
    // The goals are about GOAL_SUBJECT; plain veer's lines are the same comparisons, for information.
    const goal = (g: Goal) => (name === GOAL_SUBJECT ? g : undefined)
    line(name, FLOOR, `${name} ÷ ${FLOOR}, CPU µs/req`, cpu, { goal: goal(GOALS.cpuVsFloor) })
    line(name, FLOOR, `${name} ÷ ${FLOOR}, req/s ~100 B`, rps, { goal: goal(GOALS.rpsVsFloor) })
    line(name, 'http-proxy-3', `${name} ÷ http-proxy-3, req/s ~100 B`, rps, {
      goal: goal(GOALS.rpsVsHttpProxy3),
    })
    line(name, FLOOR, `${name} − ${FLOOR}, p99 @${rateText}/s`, p99, {
      how: 'difference',
      fmt: ms,
      goal: goal(GOALS.p99VsFloorMs),
    })
  }

  line('veer', 'http-proxy-3', 'veer ÷ http-proxy-3, CPU µs/req', cpu)
  line('veer', 'fastify-http-proxy', 'veer ÷ fastify-http-proxy, req/s ~100 B', rps)
  shadowCost(rounds, offGoal, out)
  const cost = (name: string, label: string, note = '') => {
    const minusOne = (x: number) => pct(x - 1)
    line(name, 'veer', `${label}: CPU µs/req vs veer`, cpu, { fmt: minusOne, note })
    line(name, 'veer', `${label}: req/s ~100 B vs veer`, rps, { fmt: minusOne })
  }
  cost('veer-canary-sticky', '20% canary + sticky hashing')
  cost('veer-tracing', 'tracing at 1% sampling')
  cost('veer-shadow', '100% shadow', mirroredShare(subjects))
  cost('veer-nolog', 'access log off')
  line('veer', 'nginx', 'veer ÷ nginx, CPU µs/req', cpu)
  line('veer', 'direct', `veer − direct, p99 @${rateText}/s`, p99, { how: 'difference', fmt: ms })
  return out
}

/**
 * Issue 18's shadow goal: (veer-shadow − veer) ÷ (undici-twice − undici-minimal), CPU µs/req, the four
 * taken within each round; the median of those with their min–max, and a verdict on the goal upstream.
 */
function shadowCost(
  rounds: (name: string) => readonly RoundResult[] | null,
  offGoal: string | undefined,
  out: TargetCheck[],
): void {
  const goal = GOALS.shadowVsSecondExchange
  const names = ['veer-shadow', 'veer', TWICE, FLOOR] as const
  const target = `100% shadow cost ÷ a second exchange's, CPU µs/req`
  const [a, a0, b, b0] = names.map(rounds)
  const note = `(veer-shadow − veer) ÷ (${TWICE} − ${FLOOR}), per round`
  if (a == null || a0 == null || b == null || b0 == null) {
    out.push({
      target,
      goal: goalText(goal, times),
      measured: '—',
      pass: null,
      note: `needs ${names.join(', ')}`,
    })
    return
  }
  out.push(spreadCheck(target, spread(pairedExcess(a, a0, b, b0, cpu)), { goal, note, offGoal }))
}

/** How much of the traffic the shadow really got: veer drops (never queues) past its shadow limits. */
function mirroredShare(subjects: readonly SubjectResult[]): string {
  let sent = 0
  let dropped = 0
  for (const r of subjects.find((s) => s.name === 'veer-shadow')?.rounds ?? []) {
    sent += r.observed?.['shadow sent'] ?? 0
    dropped += r.observed?.['shadow dropped'] ?? 0
  }
  if (sent + dropped === 0) return ''
  const share = `mirrored ${(100 * (sent / (sent + dropped))).toFixed(1)}% of requests`
  if (dropped === 0) return `${share} (none dropped)`
  return (
    `${share} (${dropped.toLocaleString('en-US')} dropped at the shadow pool’s limits), so this is the ` +
    'cost of that share, not of a full 100%'
  )
}
