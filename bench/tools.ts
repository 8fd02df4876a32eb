// External load tool: use wrk when it is on PATH; install it from Debian only when asked (--install).
import { commandExists, runCapture } from './proc.ts'

export interface WrkStatus {
  available: boolean
  version: string | null
  note: string
}

async function wrkVersion(): Promise<string | null> {
  // `wrk -v` prints its version banner and exits non-zero.
  const r = await runCapture('wrk -v', 'wrk', ['-v'], null, 5000)
  return /wrk\s+([\w.~+/-]+)/.exec(r.stdout + r.stderr)?.[1] ?? null
}

async function aptInstallWrk(): Promise<string> {
  const tryInstall = () =>
    runCapture(
      'apt-get install',
      'apt-get',
      ['install', '-y', '--no-install-recommends', 'wrk'],
      null,
      300_000,
    )
  let r = await tryInstall()
  if (r.code !== 0) {
    await runCapture('apt-get update', 'apt-get', ['update'], null, 300_000)
    r = await tryInstall()
  }
  return r.code === 0
    ? 'installed with apt-get'
    : `apt-get install failed (${r.code}): ${r.stderr.trim().slice(-200)}`
}

export async function findWrk(install: boolean): Promise<WrkStatus> {
  let note = 'found on PATH'
  if (!commandExists('wrk')) {
    if (!install)
      return { available: false, version: null, note: 'not on PATH (run with --install to apt-get it)' }
    if (!commandExists('apt-get')) return { available: false, version: null, note: 'not on PATH, no apt-get' }
    note = await aptInstallWrk()
    if (!commandExists('wrk')) return { available: false, version: null, note }
  }
  return { available: true, version: await wrkVersion(), note }
}
