/**
 * What every benchmark script sets up the same way: the repo's paths, a temp dir removed on exit, a
 * stderr logger, cleanup of every process it started on Ctrl-C or a kill, and a watchdog that gives up.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { roundOrder } from './paired.ts'
import { installCleanup, stopAll } from './proc.ts'
import { Unavailable } from './subjects.ts'

export interface Harness {
  readonly root: string
  readonly resultsDir: string
  readonly tmpDir: string
  readonly startedAt: number
  log(line: string): void
  /** True once Ctrl-C or a kill asked the run to stop. */
  interrupted(): boolean
}

/** `name` names the temp dir and the messages; the run gives up after `watchdogMinutes`. */
export function startHarness(name: string, watchdogMinutes: number): Harness {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
  const tmpDir = mkdtempSync(join(tmpdir(), `${name}-`))
  const log = (line: string) => process.stderr.write(`${line}\n`)
  let interrupted = false
  installCleanup(() => {
    interrupted = true
    log(`\ninterrupted: stopping every process ${name} started`)
  })
  process.on('exit', () => rmSync(tmpDir, { recursive: true, force: true }))
  setTimeout(() => {
    log(`watchdog: ${name} ran for ${watchdogMinutes} minutes, giving up`)
    stopAll().finally(() => process.exit(1))
  }, watchdogMinutes * 60_000).unref()
  return {
    root,
    resultsDir: join(root, 'bench/results'),
    tmpDir,
    startedAt: performance.now(),
    log,
    interrupted: () => interrupted,
  }
}

export function positiveInt(text: string | undefined, fallback: number, max: number): number {
  const n = Number.parseInt(text ?? '', 10)
  return Number.isInteger(n) && n > 0 ? Math.min(n, max) : fallback
}

/** What the round loop keeps of a subject: whether it can be measured, why not, and its rounds. */
export interface Measured<R> {
  readonly name: string
  status: 'ok' | 'unavailable'
  reason?: string
  rounds: R[]
}

/**
 * `rounds` rounds, each measuring every subject still available in turn: forward in odd rounds, in
 * reverse in even ones (roundOrder), so order effects cancel in ratios paired within a round. A subject
 * that fails is unavailable from then on, with its reason, and keeps the rounds it completed; Ctrl-C
 * ends the loop.
 * `line` describes a round's figures for the log.
 */
export async function runRounds<S extends { readonly name: string }, R>(
  harness: Harness,
  rounds: number,
  subjects: readonly S[],
  results: readonly Measured<R>[],
  measure: (subject: S, round: number) => Promise<R>,
  line: (r: R) => string,
  /** Runs first in each round, with the round's subjects still available, in their order (run.ts --slices). */
  prepareRound?: (order: readonly S[], round: number) => Promise<void>,
): Promise<void> {
  const { log, interrupted } = harness
  const width = Math.max(...subjects.map((s) => s.name.length)) + 1
  const available = (s: S) => results.find((r) => r.name === s.name)?.status !== 'unavailable'
  for (const s of results) if (s.status === 'unavailable') log(`${s.name}: unavailable (${s.reason})`)
  for (let round = 1; round <= rounds && !interrupted(); round++) {
    if (prepareRound !== undefined) await prepareRound(roundOrder(subjects, round).filter(available), round)
    for (const subject of roundOrder(subjects, round)) {
      const res = results.find((r) => r.name === subject.name)!
      if (res.status === 'unavailable') continue
      const t = performance.now()
      try {
        const r = await measure(subject, round)
        res.rounds.push(r)
        log(
          `[round ${round}/${rounds}] ${subject.name.padEnd(width)} ${line(r)} · ` +
            `${((performance.now() - t) / 1000).toFixed(1)} s`,
        )
      } catch (err) {
        if (interrupted()) break
        const message = (err as Error).message
        res.status = 'unavailable'
        res.reason = err instanceof Unavailable ? message : `error: ${message}`
        log(`[round ${round}/${rounds}] ${subject.name}: unavailable (${res.reason})`)
      }
    }
  }
  for (const r of results)
    if (r.rounds.length > 0 && r.status === 'unavailable')
      r.reason = `${r.reason ?? ''} (after ${r.rounds.length} completed round(s))`
}
