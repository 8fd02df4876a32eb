// Child-process bookkeeping for the benchmark: start, pin, wait for readiness, read CPU time and RSS,
// and make sure every process we start is gone when the harness exits (normally, on error or on Ctrl-C).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs'
import { request } from 'node:http'
import { connect, createServer } from 'node:net'
import { availableParallelism } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'

export interface Managed {
  readonly name: string
  readonly pid: number
  readonly logPath: string
  readonly child: ChildProcess
  /** Resolves with the exit code (or signal name) once the process is gone. */
  readonly exited: Promise<number | string>
  exitedWith: number | string | null
}

const live = new Set<Managed>()

export function commandExists(name: string): boolean {
  return spawnSync('sh', ['-c', 'command -v "$0"', name], { stdio: 'ignore' }).status === 0
}

/** Clock ticks per second for /proc/PID/stat (getconf CLK_TCK, 100 almost everywhere). */
export const clockTicks: number = (() => {
  const out = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })
  const n = Number.parseInt(out.stdout ?? '', 10)
  return Number.isFinite(n) && n > 0 ? n : 100
})()

/** Pinning is used when taskset exists and there are at least two cores to separate. */
export const pinning: boolean = commandExists('taskset') && availableParallelism() >= 2
export const PROXY_CORE = 1
export const LOAD_CORE = 0

/** Pin this process (all its threads, and so every thread it creates later) to one core. */
export function pinSelf(core: number): boolean {
  if (!pinning) return false
  const r = spawnSync('taskset', ['-a', '-p', '-c', String(core), String(process.pid)], { stdio: 'ignore' })
  return r.status === 0
}

/**
 * Pin the harness (its load generator threads included) to LOAD_CORE, leaving PROXY_CORE to `subject`.
 * Call describeMachine() first: availableParallelism() follows this process's affinity.
 */
export function pinHarness(subject: string): { pinned: boolean; description: string } {
  const pinned = pinSelf(LOAD_CORE)
  return {
    pinned,
    description: pinned
      ? `taskset — ${subject} on core ${PROXY_CORE}; upstream(s), load generator and harness on core ${LOAD_CORE}`
      : 'none (taskset missing or fewer than 2 cores)',
  }
}

function pinned(core: number | null, command: string, args: readonly string[]): [string, string[]] {
  if (core === null || !pinning) return [command, [...args]]
  return ['taskset', ['-c', String(core), command, ...args]]
}

export interface StartOptions {
  core: number | null
  logPath: string
  env?: NodeJS.ProcessEnv
  cwd?: string
}

/** Start a long-running child; its stdout+stderr go to a log file (no pipe for us to drain). */
export function startProcess(
  name: string,
  command: string,
  args: readonly string[],
  opts: StartOptions,
): Managed {
  const [cmd, argv] = pinned(opts.core, command, args)
  const fd = openSync(opts.logPath, 'w')
  let child: ChildProcess
  try {
    child = spawn(cmd, argv, { stdio: ['ignore', fd, fd], env: opts.env ?? process.env, cwd: opts.cwd })
  } finally {
    closeSync(fd)
  }
  if (child.pid === undefined) throw new Error(`${name}: spawn failed (${cmd})`)
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => {
      m.exitedWith = code ?? signal ?? 'unknown'
      live.delete(m)
      resolve(m.exitedWith)
    })
    child.once('error', (err) => {
      m.exitedWith = err.message
      live.delete(m)
      resolve(m.exitedWith)
    })
  })
  const m: Managed = { name, pid: child.pid, logPath: opts.logPath, child, exited, exitedWith: null }
  live.add(m)
  return m
}

/** SIGTERM, then SIGKILL after graceMs. Resolves when the process has exited. */
export async function stopProcess(m: Managed, graceMs = 2000): Promise<void> {
  if (m.exitedWith !== null) return
  m.child.kill('SIGTERM')
  const timer = setTimeout(() => m.child.kill('SIGKILL'), graceMs)
  await m.exited
  clearTimeout(timer)
}

export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((m) => stopProcess(m, 1000)))
}

/** Last resort (process 'exit' handler): synchronous SIGKILL of whatever is still running. */
export function killAllSync(): void {
  for (const m of live) {
    try {
      process.kill(m.pid, 'SIGKILL')
    } catch {
      // already gone
    }
  }
  live.clear()
}

/** Install exit/Ctrl-C/crash handlers that stop every child before the harness exits. */
export function installCleanup(onSignal?: () => void): void {
  process.on('exit', killAllSync)
  let stopping = false
  const bail = (code: number) => {
    if (stopping) return
    stopping = true
    onSignal?.()
    stopAll().finally(() => process.exit(code))
  }
  process.on('SIGINT', () => bail(130))
  process.on('SIGTERM', () => bail(143))
  process.on('SIGHUP', () => bail(129))
  process.on('uncaughtException', (err) => {
    console.error(err)
    bail(1)
  })
  process.on('unhandledRejection', (err) => {
    console.error(err)
    bail(1)
  })
}

/** Run a short-lived command to completion, tracked like the others, capturing stdout. */
export function runCapture(
  name: string,
  command: string,
  args: readonly string[],
  core: number | null,
  timeoutMs: number,
): Promise<{ code: number | string; stdout: string; stderr: string }> {
  const [cmd, argv] = pinned(core, command, args)
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
  if (child.pid === undefined) return Promise.reject(new Error(`${name}: spawn failed`))
  let stdout = ''
  let stderr = ''
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const m: Managed = {
    name,
    pid: child.pid,
    logPath: '',
    child,
    exited: Promise.resolve(0),
    exitedWith: null,
  }
  live.add(m)
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      m.exitedWith = code ?? signal ?? 'unknown'
      live.delete(m)
      resolve({ code: m.exitedWith, stdout, stderr })
    })
  })
}

export function logTail(m: Managed, bytes = 600): string {
  try {
    const text = readFileSync(m.logPath, 'utf8')
    return text.slice(-bytes).trim()
  } catch {
    return ''
  }
}

/** A port the kernel just handed out on 127.0.0.1 (tiny race before the child binds it; fine here). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0
      srv.close(() => resolve(port))
    })
  })
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port })
    sock.once('connect', () => {
      sock.destroy()
      resolve(true)
    })
    sock.once('error', () => resolve(false))
  })
}

function getStatus(url: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request(url, { method: 'GET', timeout: 1000 }, (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.once('timeout', () => req.destroy())
    req.once('error', () => resolve(0))
    req.end()
  })
}

/** Poll until the port accepts (and, if given, healthUrl answers 200); throws on timeout or child exit. */
export async function waitReady(
  m: Managed,
  port: number,
  timeoutMs: number,
  healthUrl?: string,
): Promise<void> {
  const deadline = performance.now() + timeoutMs
  while (performance.now() < deadline) {
    if (m.exitedWith !== null) {
      throw new Error(`${m.name} exited (${m.exitedWith}) before it was ready: ${logTail(m) || 'no output'}`)
    }
    const up = (await canConnect(port)) && (healthUrl === undefined || (await getStatus(healthUrl)) === 200)
    if (up) return
    await sleep(50)
  }
  throw new Error(`${m.name} not ready after ${timeoutMs} ms: ${logTail(m) || 'no output'}`)
}

function childrenOf(pid: number): number[] {
  const out: number[] = []
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim()
      if (text !== '') for (const c of text.split(/\s+/)) out.push(Number(c))
    }
  } catch {
    // process gone or /proc/.../children unavailable
  }
  return out
}

/** pid and all its descendants (a bounded walk: at most 64 processes). */
function processTree(pid: number): number[] {
  const seen: number[] = []
  const todo = [pid]
  while (todo.length > 0 && seen.length < 64) {
    const p = todo.pop()!
    seen.push(p)
    todo.push(...childrenOf(p))
  }
  return seen
}

/** utime+stime in microseconds, summed over the process tree. */
export function cpuMicros(pid: number): number {
  let ticks = 0
  for (const p of processTree(pid)) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8')
      // Fields after "(comm)": state is field 3, utime 14, stime 15 (1-based).
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      ticks += Number(fields[11]) + Number(fields[12])
    } catch {
      // exited between listing and reading
    }
  }
  return (ticks * 1e6) / clockTicks
}

/** Resident memory in KiB, summed over the process tree, read once from each /proc/PID/status. */
export interface RssKiB {
  /** VmRSS */
  rss: number
  /** RssAnon: heaps, buffers, stacks (what the process itself allocated) */
  anon: number
  /** RssFile: the node binary and libraries mapped in (shared with other node processes) */
  file: number
}

const STATUS_KIB = /^(VmRSS|RssAnon|RssFile):\s+(\d+)\s+kB/gm
const PART: Record<string, keyof RssKiB> = { VmRSS: 'rss', RssAnon: 'anon', RssFile: 'file' }

export function rssParts(pid: number): RssKiB {
  const kib: RssKiB = { rss: 0, anon: 0, file: 0 }
  for (const p of processTree(pid)) {
    try {
      const status = readFileSync(`/proc/${p}/status`, 'utf8')
      for (const m of status.matchAll(STATUS_KIB)) kib[PART[m[1]!]!] += Number(m[2])
    } catch {
      // exited
    }
  }
  return kib
}

/** Resident set size in KiB (VmRSS), summed over the process tree. */
export function rssKiB(pid: number): number {
  return rssParts(pid).rss
}

/** CPU time of this process plus its reaped children (wrk ends up here), in microseconds. */
export function selfAndReapedMicros(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // utime, stime, cutime, cstime are fields 14-17 (1-based), i.e. 11-14 after "(comm) ".
  return ((Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * 1e6) / clockTicks
}

/**
 * Machine-wide user+system time (all processes, kernel threads included) and hypervisor steal, in
 * microseconds. irq/softirq time is left out: on this kind of kernel it is not part of any process's
 * utime/stime, so leaving it out keeps "machine minus our processes" comparable (to about ±10% of a core).
 */
export function machineMicros(): { busy: number; steal: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? ''
  // cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
  const [user = 0, nice = 0, system = 0, , , , , steal = 0] = line.trim().split(/\s+/).slice(1).map(Number)
  const toUs = (ticks: number) => (ticks * 1e6) / clockTicks
  return { busy: toUs(user + nice + system), steal: toUs(steal) }
}
