/**
 * Start a real `veer proxy` process (bin/veer.js on the project's Node) and wait until it logs that it
 * listens; ports are ephemeral unless given. Stop it with `stop()` (SIGTERM, then SIGKILL after 10 s).
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'

const ROOT = new URL('../../', import.meta.url).pathname
export const VEER_BIN = join(ROOT, 'bin/veer.js')

export interface VeerProcess {
  readonly child: ChildProcess
  readonly url: string
  readonly adminUrl: string
  readonly port: number
  readonly adminPort: number
  /** Parsed JSON log lines so far. */
  readonly logs: Record<string, unknown>[]
  readonly stderr: () => string
  /** Resolves with the first log line for which `test` holds (waits up to `ms`). */
  waitForLog(test: (line: Record<string, unknown>) => boolean, ms?: number): Promise<Record<string, unknown>>
  stop(signal?: NodeJS.Signals): Promise<number | null>
  exited: Promise<number | null>
}

export interface RunResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Run `veer ARGS` to completion (for commands expected to fail fast). */
export function runVeer(args: string[], timeoutMs = 10_000, env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [VEER_BIN, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`veer ${args.join(' ')} did not exit within ${timeoutMs} ms; stdout: ${stdout}`))
    }, timeoutMs)
    child.on('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

/** Write a YAML config to a fresh temp dir and return its path. */
export function writeConfig(config: unknown, dir = mkdtempSync(join(tmpdir(), 'veer-test-'))): string {
  const file = join(dir, 'veer.yaml')
  writeFileSync(file, stringify(config))
  return file
}

export function startVeer(args: string[], env: NodeJS.ProcessEnv = {}): Promise<VeerProcess> {
  const withPorts = [...args]
  if (!args.includes('--listen')) withPorts.push('--listen', '127.0.0.1:0')
  if (!args.includes('--admin')) withPorts.push('--admin', '127.0.0.1:0')
  const child = spawn(process.execPath, [VEER_BIN, 'proxy', ...withPorts], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  })
  const logs: Record<string, unknown>[] = []
  const waiters: {
    test: (l: Record<string, unknown>) => boolean
    resolve: (l: Record<string, unknown>) => void
  }[] = []
  let stderr = ''
  let buffered = ''
  child.stderr!.on('data', (d) => (stderr += d))
  child.stdout!.on('data', (d: Buffer) => {
    buffered += d.toString()
    let nl = buffered.indexOf('\n')
    while (nl !== -1) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      nl = buffered.indexOf('\n')
      let parsed: Record<string, unknown>
      try {
        parsed = JSON.parse(line)
      } catch {
        continue
      }
      logs.push(parsed)
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i]!.test(parsed)) waiters.splice(i, 1)[0]!.resolve(parsed)
      }
    }
  })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const waitForLog = (test: (l: Record<string, unknown>) => boolean, ms = 10_000) => {
    const hit = logs.find(test)
    if (hit) return Promise.resolve(hit)
    return new Promise<Record<string, unknown>>((resolve, reject) => {
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
  return Promise.race([
    waitForLog((l) => l.msg === 'veer proxy started'),
    exited.then((code) => {
      throw new Error(`veer exited with ${code} before it started: ${stderr}`)
    }),
  ]).then((started) => {
    const port = Number(String(started.listen).split(':').pop())
    const adminPort = Number(String(started.admin).split(':').pop())
    return {
      child,
      url: `http://127.0.0.1:${port}`,
      adminUrl: `http://127.0.0.1:${adminPort}`,
      port,
      adminPort,
      logs,
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
  })
}
