/**
 * What every benchmark script sets up the same way: the repo's paths, a temp dir removed on exit, a
 * stderr logger, cleanup of every process it started on Ctrl-C or a kill, and a watchdog that gives up.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { installCleanup, stopAll } from './proc.ts'

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
