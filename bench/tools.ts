// External tools: wrk for load and nginx as a C reference proxy. Each is used when it is on PATH, and
// installed from Debian only when asked (--install).
import { existsSync } from 'node:fs'
import { commandExists, runCapture } from './proc.ts'

export interface ToolStatus {
  available: boolean
  version: string | null
  note: string
}
async function wrkVersion(): Promise<string | null> {
  // `wrk -v` prints its version banner and exits non-zero.
  const r = await runCapture('wrk -v', 'wrk', ['-v'], null, 5000)
  return /wrk\s+([\w.~+/-]+)/.exec(r.stdout + r.stderr)?.[1] ?? null
}

/** apt-get install one Debian package; on a failure, `apt-get update` once and try again. */
async function aptInstall(pkg: string): Promise<string> {
  const tryInstall = () =>
    runCapture('apt-get install', 'apt-get', ['install', '-y', '--no-install-recommends', pkg], null, 300_000)
  let r = await tryInstall()
  if (r.code !== 0) {
    await runCapture('apt-get update', 'apt-get', ['update'], null, 300_000)
    r = await tryInstall()
  }
  return r.code === 0
    ? 'installed with apt-get'
    : `apt-get install failed (${r.code}): ${r.stderr.trim().slice(-200)}`
}

export async function findWrk(install: boolean): Promise<ToolStatus> {
  let note = 'found on PATH'
  if (!commandExists('wrk')) {
    if (!install)
      return { available: false, version: null, note: 'not on PATH (run with --install to apt-get it)' }
    if (!commandExists('apt-get')) return { available: false, version: null, note: 'not on PATH, no apt-get' }
    note = await aptInstall('wrk')
    if (!commandExists('wrk')) return { available: false, version: null, note }
  }
  return { available: true, version: await wrkVersion(), note }
}

/** Where nginx is: on PATH, or in /usr/sbin (Debian's place, off PATH for many non-root shells). */
export function nginxPath(): string | null {
  if (commandExists('nginx')) return 'nginx'
  return existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : null
}

export interface NginxStatus extends ToolStatus {
  /** the command to run, when available */
  path: string | null
}

export async function findNginx(install: boolean): Promise<NginxStatus> {
  let note = 'found'
  let path = nginxPath()
  if (path === null) {
    if (!install)
      return {
        available: false,
        path,
        version: null,
        note: 'not installed (run with --install to apt-get it)',
      }
    if (!commandExists('apt-get'))
      return { available: false, path, version: null, note: 'not installed, no apt-get' }
    // Debian starts the nginx service on install unless policy-rc.d forbids it (containers usually do);
    // the harness never uses that service, only its own nginx on a loopback port.
    note = await aptInstall('nginx')
    path = nginxPath()
    if (path === null) return { available: false, path, version: null, note }
  }
  // `nginx -v` prints "nginx version: nginx/1.22.1" on stderr.
  const r = await runCapture('nginx -v', path, ['-v'], null, 5000)
  const version = /nginx\/([\w.~+-]+)/.exec(r.stdout + r.stderr)?.[1] ?? null
  return { available: true, path, version, note }
}

/** h2load (Debian nghttp2-client), the HTTP/2 load generator of bench/h2.ts; never installed here. */
export async function findH2load(): Promise<ToolStatus> {
  if (!commandExists('h2load')) {
    return { available: false, version: null, note: 'not on PATH (apt-get install nghttp2-client)' }
  }
  // `h2load --version` prints "h2load nghttp2/1.52.0".
  const r = await runCapture('h2load --version', 'h2load', ['--version'], null, 5000)
  return {
    available: true,
    version: /nghttp2\/([\w.~+-]+)/.exec(r.stdout)?.[1] ?? null,
    note: 'found on PATH',
  }
}

/** haproxy on PATH or in /usr/sbin (Debian's place), with its version; never installed here. */
export async function findHaproxy(): Promise<NginxStatus> {
  const path = commandExists('haproxy')
    ? 'haproxy'
    : existsSync('/usr/sbin/haproxy')
      ? '/usr/sbin/haproxy'
      : null
  if (path === null) return { available: false, path, version: null, note: 'not installed' }
  // `haproxy -v` prints "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/".
  const r = await runCapture('haproxy -v', path, ['-v'], null, 5000)
  const version = /HAProxy version ([\w.~+-]+)/.exec(r.stdout + r.stderr)?.[1] ?? null
  return { available: true, path, version, note: 'found' }
}
