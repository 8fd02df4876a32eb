/**
 * A `veer` process under test: spawned on the project's Node, its JSON-lines stdout parsed as it comes,
 * waits on log lines, and a stop that sends a signal and escalates to SIGKILL after 10 s.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { join } from 'node:path'

const ROOT = new URL('../../', import.meta.url).pathname
export const VEER_BIN = join(ROOT, 'bin/veer.js')

export type LogLine = Record<string, unknown>

export interface LoggedProcess {
  readonly child: ChildProcess
  /** Parsed JSON log lines so far. */
  readonly logs: LogLine[]
  /** stdout lines that were not JSON (a torn or interleaved line would land here). */
  readonly unparsed: string[]
  readonly stderr: () => string
  /** Resolves with the first log line for which `test` holds (waits up to `ms`). */
  waitForLog(test: (line: LogLine) => boolean, ms?: number): Promise<LogLine>
  stop(signal?: NodeJS.Signals): Promise<number | null>
  readonly exited: Promise<number | null>
}

export function spawnVeer(args: string[], env: NodeJS.ProcessEnv): LoggedProcess {
  return spawnLogged(process.execPath, [VEER_BIN, ...args], env)
}

/** Any command whose stdout is veer's JSON log lines (veer run inside a namespace, a container). */
export function spawnLogged(command: string, args: string[], env: NodeJS.ProcessEnv): LoggedProcess {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env })
  const logs: LogLine[] = []
  const unparsed: string[] = []
  const waiters: { test: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = []
  let stderr = ''
  let buffered = ''
  child.stderr!.on('data', (d) => (stderr += d))
  child.stdout!.on('data', (d: Buffer) => {
    buffered += d.toString()
    for (let nl = buffered.indexOf('\n'); nl !== -1; nl = buffered.indexOf('\n')) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      let parsed: LogLine
      try {
        parsed = JSON.parse(line)
      } catch {
        unparsed.push(line)
        continue
      }
      logs.push(parsed)
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i]!.test(parsed)) waiters.splice(i, 1)[0]!.resolve(parsed)
      }
    }
  })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const waitForLog = (test: (l: LogLine) => boolean, ms = 10_000) => {
    const hit = logs.find(test)
    if (hit) return Promise.resolve(hit)
    return new Promise<LogLine>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no matching log line within ${ms} ms; stderr: ${stderr}`)),
        ms,
      )
      waiters.push({
        test,
        resolve: (l) => {
          clearTimeout(timer)
          resolve(l)
        },
      })
    })
  }
  return {
    child,
    logs,
    unparsed,
    stderr: () => stderr,
    waitForLog,
    exited,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode
      child.kill(signal)
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
      const code = await exited
      clearTimeout(timer)
      return code
    },
  }
}

/** The process's `msg` line that says it started, or an error with its stderr if it exits first. */
export function started(p: LoggedProcess, msg: string): Promise<LogLine> {
  return Promise.race([
    p.waitForLog((l) => l.msg === msg),
    p.exited.then((code) => {
      throw new Error(`veer exited with ${code} before "${msg}": ${p.stderr()}`)
    }),
  ])
}
