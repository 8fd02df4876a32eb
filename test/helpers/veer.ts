/**
 * Start a real `veer proxy` process (bin/veer.js on the project's Node) and wait until it logs that it
 * listens; ports are ephemeral unless given. Stop it with `stop()` (SIGTERM, then SIGKILL after 10 s).
 */

import { spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'vitest'
import { stringify } from 'yaml'
import { type LoggedProcess, spawnVeer, started, VEER_BIN } from './process.ts'

export { VEER_BIN }

export interface VeerProcess extends LoggedProcess {
  readonly url: string
  readonly adminUrl: string
  readonly port: number
  readonly adminPort: number
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
  const p = spawnVeer(['proxy', ...withPorts], { ...process.env, ...env })
  return started(p, 'veer proxy started').then((line) => {
    const port = Number(String(line.listen).split(':').pop())
    const adminPort = Number(String(line.admin).split(':').pop())
    return {
      ...p,
      url: `http://127.0.0.1:${port}`,
      adminUrl: `http://127.0.0.1:${adminPort}`,
      port,
      adminPort,
    }
  })
}

/**
 * Run `veer proxy ARGS` (on ephemeral ports) expecting it to refuse to start: exit 2 and no start line.
 * Returns its stderr lines.
 */
export async function proxyRefuses(args: string[]): Promise<string[]> {
  const result = await runVeer(['proxy', ...args, '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0'])
  expect(result.code, result.stderr).toBe(2)
  expect(result.stdout).not.toContain('veer proxy started')
  return result.stderr.split('\n').filter((l) => l !== '')
}
