/**
 * Durable state in --state-dir: `state.json` (every route, its weights and rollout, and the global
 * revision) and `audit.log` (JSON lines). A change is acknowledged only after both are on disk: the
 * audit lines are appended and fsynced first (a write-ahead record), then state.json is written to a
 * temp file, fsynced, renamed over the old one and the directory fsynced. After `kill -9` at any point
 * state.json is either the old or the new whole file; audit lines of a change whose state never landed
 * (revision above state.json's) and a torn last line are cut off on the next start, with a warning.
 */

import { closeSync, fsyncSync, openSync } from 'node:fs'
import { mkdir, open, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import type { ReleasePair, Upstream } from '../config/wire.ts'
import { type AuditPage, type AuditQuery, auditPage } from './audit-query.ts'
import type { Rollout } from './rollout.ts'

export const FORMAT_VERSION = 1

export type UpstreamInfo = Upstream

export interface RouteRecord {
  readonly name: string
  /** The route's config version (ETag): +1 on every versioned change of this route. */
  readonly version: number
  /** The global revision of this route's last versioned change. */
  readonly revision: number
  readonly canary: number
  /** Percent of requests the proxies mirror to the shadow; null: each proxy's file setting. */
  readonly shadow: number | null
  readonly stable: UpstreamInfo | null
  /** The canary the proxies serve: as announced, or the shadow's when `canaryFromShadow`. */
  readonly canaryUpstream: UpstreamInfo | null
  readonly shadowUpstream: UpstreamInfo | null
  /**
   * The canary is the shadow (`promote-shadow`): proxies are told to serve `shadowUpstream` as the
   * canary and mirror nothing. Stays through abort and completion (the proxies keep that canary, at
   * weight 0 after an abort); cleared when a proxy registers with a different shadow or none (link.ts).
   */
  readonly canaryFromShadow: boolean
  /**
   * Release pairs (stable, canary served) this route moved away from, newest first: a proxy announcing
   * one of them again without having just changed to it runs a stale config (control/release.ts).
   */
  readonly superseded: readonly ReleasePair[]
  readonly rollout: Rollout | null
  readonly createdAt: number
  readonly updatedAt: number
}

export interface ControlState {
  readonly formatVersion: typeof FORMAT_VERSION
  readonly revision: number
  readonly routes: Readonly<Record<string, RouteRecord>>
}

export interface AuditEntry {
  readonly seq: number
  readonly time: string
  readonly who: string
  readonly role: string
  readonly action: string
  readonly route: string | null
  readonly from: unknown
  readonly to: unknown
  readonly why: string | null
  /** The revision the change was committed as; absent on denied attempts, which change nothing. */
  readonly revision?: number
  /** Automatic rollbacks: the analysis verdict with its figures (proxy/analysis/judge.ts Judgement). */
  readonly evidence?: unknown
  /** Automatic rollbacks: canary failures users saw during the rollout, and those the fallback rescued. */
  readonly harm?: { readonly harmed: number; readonly saved: number; readonly canaryRequests: number }
  /** A rollback by a proxy's fuse: what tripped it, where. */
  readonly fuse?: unknown
  /** A change a proxy's registration made (a route adopted, a release change): which proxy. */
  readonly proxy?: string
}

export type AuditDraft = Omit<AuditEntry, 'seq' | 'time'>

/** Why the state dir cannot be used: one line for the operator. */
export class StoreError extends Error {}

/** Most audit entries kept in memory for GET /v1/audit (the file keeps all). */
const MEMORY = 10_000

export class Store {
  readonly dir: string
  state: ControlState
  private readonly entries: AuditEntry[]
  /** Each route's newest versioned change: what the views show as how its state came to be. */
  private readonly last = new Map<string, AuditEntry>()
  private total: number
  private readonly auditPath: string
  private readonly statePath: string
  private readonly lockPath: string

  private constructor(dir: string, state: ControlState, entries: AuditEntry[], total: number) {
    this.dir = dir
    this.state = state
    this.entries = entries
    for (const e of entries) this.#noteLast(e)
    this.total = total
    this.auditPath = join(dir, 'audit.log')
    this.statePath = join(dir, 'state.json')
    this.lockPath = join(dir, 'control.lock')
  }

  static async open(dir: string, log: Logger): Promise<Store> {
    try {
      await mkdir(dir, { recursive: true })
    } catch (err) {
      throw new StoreError(`--state-dir ${dir}: cannot create it (${(err as NodeJS.ErrnoException).code})`)
    }
    if (!(await stat(dir)).isDirectory()) throw new StoreError(`--state-dir ${dir}: is not a directory`)
    await lock(join(dir, 'control.lock'))
    const state = await readState(join(dir, 'state.json'))
    const { entries, total } = await readAudit(join(dir, 'audit.log'), state.revision, log)
    return new Store(dir, state, entries, total)
  }

  /** Make a change durable: audit lines first, then the whole state. Resolves once both are on disk. */
  async commit(next: ControlState, drafts: readonly AuditDraft[]): Promise<AuditEntry[]> {
    const written = drafts.length > 0 ? await this.append(drafts) : []
    const tmp = `${this.statePath}.tmp`
    const file = await open(tmp, 'w', 0o600)
    try {
      await file.writeFile(`${JSON.stringify(next)}\n`)
      await file.sync()
    } finally {
      await file.close()
    }
    await rename(tmp, this.statePath)
    const d = openSync(this.dir, 'r')
    try {
      fsyncSync(d)
    } finally {
      closeSync(d)
    }
    this.state = next
    return written
  }

  /** Append audit entries (fsynced) that change no state, such as denied attempts. */
  async append(drafts: readonly AuditDraft[]): Promise<AuditEntry[]> {
    const time = new Date().toISOString()
    const out = drafts.map((d, i) => ({ seq: this.total + i + 1, time, ...d }))
    const file = await open(this.auditPath, 'a', 0o600)
    try {
      await file.writeFile(out.map((e) => `${JSON.stringify(e)}\n`).join(''))
      await file.datasync()
    } finally {
      await file.close()
    }
    this.total += out.length
    this.entries.push(...out)
    for (const e of out) this.#noteLast(e)
    if (this.entries.length > MEMORY) this.entries.splice(0, this.entries.length - MEMORY)
    return out
  }

  /** The route's newest versioned audit entry (among those kept in memory), or null. */
  lastChange(route: string): AuditEntry | null {
    return this.last.get(route) ?? null
  }

  #noteLast(e: AuditEntry): void {
    if (e.route !== null && e.revision !== undefined) this.last.set(e.route, e)
  }

  /** A page of the audit kept in memory (the newest 10000 entries): control/audit-query.ts. */
  audit(query: AuditQuery): AuditPage {
    return auditPage(this.entries, this.total, query)
  }

  async close(): Promise<void> {
    await rm(this.lockPath, { force: true })
  }
}

export function emptyState(): ControlState {
  return { formatVersion: FORMAT_VERSION, revision: 0, routes: {} }
}

/** One writer per state dir: a lock file with the pid, taken over when that process is gone. */
async function lock(path: string): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(path, `${process.pid}\n`, { flag: 'wx', mode: 0o600 })
      return
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    const pid = Number((await readFile(path, 'utf8').catch(() => '')).trim())
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid))
      throw new StoreError(`--state-dir: another veer control (pid ${pid}) is using it; stop it first`)
    await rm(path, { force: true })
  }
  throw new StoreError('--state-dir: cannot take the lock file control.lock')
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

async function readState(path: string): Promise<ControlState> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyState()
    throw new StoreError(`${path}: cannot read it (${(err as NodeJS.ErrnoException).code})`)
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch {
    throw new StoreError(`${path}: is not valid JSON; restore it from a backup or move the state dir away`)
  }
  const format = (raw as { formatVersion?: unknown } | null)?.formatVersion
  if (format !== FORMAT_VERSION)
    throw new StoreError(
      `${path}: state format ${JSON.stringify(format ?? null)} is not one this veer reads (format ${FORMAT_VERSION}); run the veer version that wrote it, or move the state dir away to start empty`,
    )
  const state = raw as ControlState
  if (!Number.isInteger(state.revision) || typeof state.routes !== 'object' || state.routes === null)
    throw new StoreError(`${path}: lacks revision or routes; restore it from a backup`)
  // Fields added within format 1 are optional in the file: a state written before them reads as "none".
  const routes: Record<string, RouteRecord> = {}
  for (const [name, r] of Object.entries(state.routes))
    routes[name] = {
      ...r,
      shadow: r.shadow ?? null,
      shadowUpstream: r.shadowUpstream ?? null,
      canaryFromShadow: r.canaryFromShadow ?? false,
      superseded: r.superseded ?? [],
    }
  return { ...state, routes }
}

/**
 * Read audit.log. A torn last line (no newline: a crash mid-append) and whole lines of a change that
 * never reached state.json are cut off, so the log stays exactly the acknowledged history.
 */
async function readAudit(
  path: string,
  revision: number,
  log: Logger,
): Promise<{ entries: AuditEntry[]; total: number }> {
  let buf: Buffer
  try {
    buf = await readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { entries: [], total: 0 }
    throw new StoreError(`${path}: cannot read it (${(err as NodeJS.ErrnoException).code})`)
  }
  const entries: AuditEntry[] = []
  let offset = 0
  let keep = 0
  let cut: string | null = null
  while (offset < buf.length) {
    const nl = buf.indexOf(10, offset)
    const end = nl === -1 ? buf.length : nl
    let entry: AuditEntry | null = null
    try {
      entry = JSON.parse(buf.subarray(offset, end).toString('utf8')) as AuditEntry
    } catch {
      entry = null
    }
    if (nl === -1 || entry === null) {
      if (nl !== -1 && buf.indexOf(10, nl + 1) !== -1)
        throw new StoreError(`${path}: line ${entries.length + 1} is not valid JSON; repair or move the file`)
      cut = `a torn last line (${buf.length - offset} bytes) from an interrupted write`
      break
    }
    if (entry.revision !== undefined && entry.revision > revision) {
      cut = `${countLines(buf, offset)} line(s) of a change interrupted before it was saved (it did not take effect)`
      break
    }
    entries.push(entry)
    offset = end + 1
    keep = offset
  }
  if (cut !== null) {
    log.warn({ file: path, keptBytes: keep }, `audit.log: dropped ${cut}`)
    await truncate(path, keep)
  }
  const total = entries.length
  return { entries: entries.slice(-MEMORY), total }
}

function countLines(buf: Buffer, from: number): number {
  let n = 0
  for (let i = from; i < buf.length; i++) if (buf[i] === 10) n++
  return Math.max(1, n)
}
