/**
 * Durable state in --state-dir: `state.json` (every route, its weights and rollout, and the global
 * revision) and `audit.log` (JSON lines). A change is acknowledged only after both are on disk: the
 * audit lines are appended and fsynced first (a write-ahead record that also holds each route as the
 * change left it), then state.json is written to a temp file, fsynced, renamed over the old one and
 * the directory fsynced. After `kill -9` at any point state.json is either the old or the new whole file.
 *
 * The audit is append-only: no acknowledged line is ever cut or rewritten. On start, a torn last line (a
 * crash mid-append) is the one repair made unasked; a change whose audit lines landed but whose state
 * did not is completed from those lines. Any other disagreement between the two files (a state.json
 * restored from an older backup, or missing, or an audit that is behind) refuses the start, naming
 * both files and the ways out: `veer control --recover` rebuilds state.json from the audit.
 */

import { closeSync, constants, fsyncSync, openSync } from 'node:fs'
import { access, mkdir, open, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import type { ReleasePair, Upstream } from '../config/wire.ts'
import { type AuditPage, type AuditQuery, auditPage } from './audit-query.ts'
import type { ControlStore } from './control-store.ts'
import type { Rollout } from './rollout.ts'
import { checkAuditLine, checkRecord, checkState } from './state-schema.ts'

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
  /**
   * An automatic rollback: why, as a metric label (the failed check: errors, outcome, latency-p95,
   * latency-p99; or inconclusive, fuse, smoke). Proxies are told it with the weights (config/wire.ts).
   */
  readonly rollback?: string
  /** A change a proxy's registration made (a route adopted, a release change): which proxy. */
  readonly proxy?: string
  /** A refusal entry that stands for this many refusals of its key in one interval (control/denials.ts). */
  readonly count?: number
  /** etcd: the control replica that wrote it (leader.ts replicaId). */
  readonly replica?: string
}

export type AuditDraft = Omit<AuditEntry, 'seq' | 'time'>

/**
 * An audit line as written: the entry, and on a committed change of a route the route as that change
 * left it (`record`; null when it removed the route), so the audit alone rebuilds the state. Views
 * and the API get the entry without it.
 */
type AuditLine = AuditEntry & { readonly record?: RouteRecord | null }

/** Why the state dir cannot be used: one line for the operator. */
export class StoreError extends Error {}

/**
 * A write that failed (a full disk, an I/O error) and was undone: none of it is on disk or in memory,
 * so control can answer 503 and go on; the next write tries again.
 */
export class StoreWriteError extends Error {
  readonly code: string | undefined
  constructor(cause: unknown) {
    const code = (cause as NodeJS.ErrnoException | null)?.code
    super(`the state dir could not be written (${code ?? String(cause)}); nothing was changed`)
    this.code = code
  }
}

/** What the store tells control's metrics (control/metrics.ts): it is told after the fact, never waited on. */
export interface StoreObserver {
  /** One append and fsync of audit lines took `seconds`. */
  auditWritten(seconds: number): void
  /** These entries are on disk (a commit's or an append's). */
  audited(entries: readonly AuditEntry[]): void
  /** A write failed (undone or not), with its errno code. */
  storageFailed(code: string | undefined): void
}

/** Most audit entries kept in memory for GET /v1/audit (the file keeps all). */
const MEMORY = 10_000

/** What `Store.recover` rebuilt. */
export interface Recovery {
  /** state.json's revision before, null when it was missing or unreadable. */
  readonly from: number | null
  /** The revision the audit's last change had, which the rebuilt state is at before its `recovered` entry. */
  readonly revision: number
  readonly routes: number
}

/** What `Store.inspect` found: the revision and routes a start would serve, and what it would repair. */
export interface Inspection {
  /** False: the dir is missing and a start would create it. */
  readonly exists: boolean
  readonly revision: number
  readonly routes: number
  readonly repairs: readonly string[]
}

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
  /** Told of every write (control/metrics.ts); null: nobody listens. */
  observer: StoreObserver | null = null
  /** The state dir has one writer: nothing is ever remote. */
  remote: ControlStore['remote'] = null

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

  /**
   * Open the state dir. state.json and audit.log must agree (see the file's comment); a change
   * interrupted between its two writes is completed from its audit lines, with a warning.
   */
  static open(dir: string, log: Logger): Promise<Store> {
    return holding(dir, () => Store.#open(dir, log))
  }

  static async #open(dir: string, log: Logger): Promise<Store> {
    const statePath = join(dir, 'state.json')
    const found = await readState(statePath)
    const audit = await readAudit(join(dir, 'audit.log'))
    const state = reconcile(found, audit, dir, log)
    await cutTorn(audit.torn, log)
    const store = new Store(dir, state ?? found ?? emptyState(), audit.entries, audit.total)
    // Completed from the audit: saved now, as the interrupted commit would have.
    if (state !== null) {
      try {
        await store.#save(state)
      } catch (err) {
        await rm(`${statePath}.tmp`, { force: true }).catch(() => {})
        const code = (err as NodeJS.ErrnoException).code ?? String(err)
        const left =
          (err as { renamed?: boolean }).renamed === true
            ? 'it was renamed into place but the directory could not be synced'
            : 'state.json is as it was'
        throw new StoreError(
          `${statePath}: cannot save the change completed from audit.log (${code}); ${left}; free space or fix ${dir} (permissions, disk) and start again, which completes it then`,
        )
      }
    }
    return store
  }

  /**
   * What `open` would find in `dir`, with no lock taken and nothing created, cut or written (`veer
   * control --dry-run`): the StoreError a start would refuse with, or what it would start from.
   */
  static async inspect(dir: string, log: Logger): Promise<Inspection> {
    const found = await stat(dir).catch((err: NodeJS.ErrnoException) => err)
    if (found instanceof Error) {
      if (found.code !== 'ENOENT')
        throw new StoreError(`--state-dir ${dir}: cannot create it (${found.code})`)
      // mkdir -p would start from the nearest existing directory on the way.
      let at = dirname(dir)
      for (;;) {
        const s = await stat(at).catch((err: NodeJS.ErrnoException) => err)
        if (!(s instanceof Error)) break
        if (s.code !== 'ENOENT' || dirname(at) === at)
          throw new StoreError(`--state-dir ${dir}: cannot create it (${s.code})`)
        at = dirname(at)
      }
      const creatable = await access(at, constants.W_OK | constants.X_OK).then(
        () => null,
        (err: NodeJS.ErrnoException) => err.code ?? 'EACCES',
      )
      if (creatable !== null) throw new StoreError(`--state-dir ${dir}: cannot create it (${creatable})`)
      return { exists: false, revision: 0, routes: 0, repairs: [] }
    }
    if (!found.isDirectory()) throw new StoreError(`--state-dir ${dir}: is not a directory`)
    const writable = await access(dir, constants.W_OK | constants.X_OK).then(
      () => null,
      (err: NodeJS.ErrnoException) => err.code ?? 'EACCES',
    )
    if (writable !== null) throw new StoreError(`--state-dir ${dir}: cannot write in it (${writable})`)
    const pid = Number((await readFile(join(dir, 'control.lock'), 'utf8').catch(() => '')).trim())
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid))
      throw new StoreError(`--state-dir: another veer control (pid ${pid}) is using it; stop it first`)
    const state = await readState(join(dir, 'state.json'))
    const audit = await readAudit(join(dir, 'audit.log'))
    const completed = reconcile(state, audit, dir, log)
    const repairs: string[] = []
    if (audit.torn !== null)
      repairs.push(`a torn last line of audit.log (${audit.torn.bytes} bytes) would be cut`)
    if (completed !== null)
      repairs.push(`the interrupted change of revision ${completed.revision} would be completed`)
    const start = completed ?? state ?? emptyState()
    return { exists: true, revision: start.revision, routes: Object.keys(start.routes).length, repairs }
  }

  /**
   * `veer control --recover`: rebuild state.json from audit.log (each route as its last audited change
   * left it) whatever state.json holds, and append a `recovered` entry. The store stays open.
   */
  static recover(dir: string, log: Logger): Promise<{ store: Store; recovery: Recovery }> {
    return holding(dir, () => Store.#recover(dir, log))
  }

  static async #recover(dir: string, log: Logger): Promise<{ store: Store; recovery: Recovery }> {
    const statePath = join(dir, 'state.json')
    let found: ControlState | null
    try {
      found = await readState(statePath)
    } catch {
      found = null
    }
    const auditPath = join(dir, 'audit.log')
    const audit = await readAudit(auditPath)
    const routes: Record<string, RouteRecord> = {}
    const bad: string[] = []
    for (const [name, { line, record }] of audit.records) {
      const checked = recordOf(record, name, line)
      if ('problems' in checked) bad.push(...checked.problems)
      else if (checked.value !== null) routes[name] = checked.value
    }
    if (bad.length > 0)
      throw refusal(
        auditPath,
        bad,
        `--recover rebuilds each route from its last change: repair those lines, or restore state.json from a backup and start without --recover; nothing was changed`,
      )
    // A route whose last change an older veer audited (without the route) is taken from state.json.
    const lost = [...audit.unrecorded].filter((name) => found === null || !Object.hasOwn(found.routes, name))
    if (lost.length > 0)
      throw new StoreError(
        `--recover: audit.log's last changes of ${lost.sort().join(', ')} were written by an older veer and do not hold the route, and state.json has none; restore state.json from a backup instead`,
      )
    for (const name of audit.unrecorded) routes[name] = found!.routes[name]!
    const from = found?.revision ?? null
    const checked = checkState({ formatVersion: FORMAT_VERSION, revision: audit.revision, routes })
    if ('problems' in checked)
      throw refusal(
        statePath,
        checked.problems,
        `--recover: the state rebuilt from ${auditPath} is not valid (above); repair the audit lines of those routes, or restore state.json from a backup; nothing was changed`,
      )
    const rebuilt = checked.value
    await cutTorn(audit.torn, log)
    const store = new Store(dir, rebuilt, audit.entries, audit.total)
    const revision = audit.revision + 1
    await store.commit({ ...rebuilt, revision }, [
      {
        who: 'control',
        role: 'system',
        action: 'recovered',
        route: null,
        from: { stateRevision: from },
        to: { revision: audit.revision, routes: Object.keys(routes).length },
        why: 'veer control --recover: state.json rebuilt from audit.log',
        revision,
      },
    ])
    return { store, recovery: { from, revision: audit.revision, routes: Object.keys(routes).length } }
  }

  /**
   * Make a change durable: audit lines first, then the whole state. Resolves once both are on disk.
   * A failure undoes the audit lines (they were never acknowledged) and throws StoreWriteError; one
   * that cannot be undone throws as it came, and the process must stop. `now`: the entries' time.
   */
  async commit(next: ControlState, drafts: readonly AuditDraft[], now = Date.now()): Promise<AuditEntry[]> {
    const out = this.#entries(drafts, now)
    const size = await this.#auditSize()
    try {
      if (out.length > 0)
        await this.#write(
          out.map((e) =>
            e.route !== null && e.revision !== undefined ? { ...e, record: next.routes[e.route] ?? null } : e,
          ),
        )
      await this.#save(next)
    } catch (err) {
      this.observer?.storageFailed((err as NodeJS.ErrnoException | null)?.code)
      // Once state.json is renamed over, the change is in place and cannot be undone.
      if ((err as { renamed?: boolean }).renamed === true) throw err
      await this.#undo(size, err)
    }
    this.#remember(out)
    return out
  }

  /** Append audit entries (fsynced) that change no state, such as refused calls. Fails as `commit`. */
  async append(drafts: readonly AuditDraft[]): Promise<AuditEntry[]> {
    const out = this.#entries(drafts)
    const size = await this.#auditSize()
    try {
      await this.#write(out)
    } catch (err) {
      this.observer?.storageFailed((err as NodeJS.ErrnoException | null)?.code)
      await this.#undo(size, err)
    }
    this.#remember(out)
    return out
  }

  #entries(drafts: readonly AuditDraft[], now = Date.now()): AuditEntry[] {
    const time = new Date(now).toISOString()
    return drafts.map((d, i) => ({ seq: this.total + i + 1, time, ...d }))
  }

  async #auditSize(): Promise<number> {
    try {
      return (await stat(this.auditPath)).size
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0
      throw new StoreWriteError(err)
    }
  }

  async #write(lines: readonly AuditLine[]): Promise<void> {
    const started = performance.now()
    const file = await open(this.auditPath, 'a', 0o600)
    try {
      await file.writeFile(lines.map((l) => `${JSON.stringify(l)}\n`).join(''))
      await file.datasync()
    } finally {
      await file.close()
    }
    this.observer?.auditWritten((performance.now() - started) / 1000)
  }

  /** Cut what a failed write left in audit.log (a part of it may have landed) and drop the temp state. */
  async #undo(size: number, err: unknown): Promise<never> {
    await truncate(this.auditPath, size)
    await rm(`${this.statePath}.tmp`, { force: true })
    throw new StoreWriteError(err)
  }

  #remember(out: readonly AuditEntry[]): void {
    this.observer?.audited(out)
    this.total += out.length
    this.entries.push(...out)
    for (const e of out) this.#noteLast(e)
    if (this.entries.length > MEMORY) this.entries.splice(0, this.entries.length - MEMORY)
  }

  /** state.json, whole or not at all: temp file, fsync, rename, fsync the directory. */
  async #save(next: ControlState): Promise<void> {
    const tmp = `${this.statePath}.tmp`
    const file = await open(tmp, 'w', 0o600)
    try {
      await file.writeFile(`${JSON.stringify(next)}\n`)
      await file.sync()
    } finally {
      await file.close()
    }
    await rename(tmp, this.statePath)
    try {
      const d = openSync(this.dir, 'r')
      try {
        fsyncSync(d)
      } finally {
        closeSync(d)
      }
    } catch (err) {
      throw Object.assign(err as Error, { renamed: true })
    }
    this.state = next
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

async function prepare(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true })
  } catch (err) {
    throw new StoreError(`--state-dir ${dir}: cannot create it (${(err as NodeJS.ErrnoException).code})`)
  }
  if (!(await stat(dir)).isDirectory()) throw new StoreError(`--state-dir ${dir}: is not a directory`)
  await lock(join(dir, 'control.lock'))
}

/** Run `fn` holding the dir's lock; a failure lets go of it, so a refused start leaves the dir as it was. */
async function holding<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  await prepare(dir)
  try {
    return await fn()
  } catch (err) {
    await rm(join(dir, 'control.lock'), { force: true })
    throw err
  }
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

/** state.json, or null when there is none. */
async function readState(path: string): Promise<ControlState | null> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw new StoreError(`${path}: cannot read it (${(err as NodeJS.ErrnoException).code})`)
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch {
    throw new StoreError(
      `${path}: is not valid JSON; run veer control --recover to rebuild it from audit.log, or restore it from a backup`,
    )
  }
  const format = (raw as { formatVersion?: unknown } | null)?.formatVersion
  if (format !== FORMAT_VERSION)
    throw new StoreError(
      `${path}: state format ${JSON.stringify(format ?? null)} is not one this veer reads (format ${FORMAT_VERSION}); run the veer version that wrote it, or move the state dir away to start empty`,
    )
  // Fields added within format 1 are optional in the file: a state written before them reads as "none".
  const checked = checkState(raw)
  if ('problems' in checked) {
    const dir = dirname(path)
    throw refusal(
      path,
      checked.problems,
      `fix those fields in ${path}, run veer control --recover --state-dir ${dir} to rebuild it from audit.log, or move ${dir} away to start empty; nothing was changed`,
    )
  }
  return checked.value
}

/** Most problems listed of one file; the rest are counted. */
const LISTED = 20

/** A refusal of `file`: one line per problem (`FILE: PATH: MESSAGE`), then what to do. */
function refusal(file: string, problems: readonly string[], ways: string): StoreError {
  const lines = problems.slice(0, LISTED).map((p) => `${file}: ${p}`)
  if (problems.length > LISTED) lines.push(`${file}: and ${problems.length - LISTED} more problem(s)`)
  return new StoreError([...lines, ways].join('\n'))
}

/** An audit line's `record` of `route`, checked; problems name the line. */
function recordOf(
  record: unknown,
  route: string,
  line: number,
): { value: RouteRecord | null } | { problems: string[] } {
  if (record === null) return { value: null }
  const checked = checkRecord(record)
  if ('problems' in checked) return { problems: checked.problems.map((p) => `line ${line}: ${p}`) }
  if (checked.value.name !== route)
    return {
      problems: [`line ${line}: record.name: must be the line's route ${route} (got ${checked.value.name})`],
    }
  return checked
}

/** audit.log as read at start. */
interface AuditRead {
  /** The newest entries (at most MEMORY), without their records. */
  readonly entries: AuditEntry[]
  readonly total: number
  /** The highest revision a committed change has (0: none). */
  readonly revision: number
  /** Each route's last recorded change: its line number and record (null: removed), not checked yet. */
  readonly records: Map<string, { readonly line: number; readonly record: unknown }>
  /** Routes whose last committed change has no record (written by an older veer). */
  readonly unrecorded: Set<string>
  /** The lines of the last committed revision, when they are the file's last lines, with their numbers. */
  readonly tail: readonly (AuditLine & { readonly line: number })[]
  /** A torn last line (a write cut by a crash), cut by `cutTorn` once nothing refuses the start. */
  readonly torn: Torn | null
}

interface Torn {
  readonly path: string
  /** Where it starts: the file is cut back to this many bytes. */
  readonly at: number
  readonly bytes: number
  readonly text: string
}

/** The one repair made without asking: a torn last line is cut, and logged with what was cut. */
async function cutTorn(torn: Torn | null, log: Logger): Promise<void> {
  if (torn === null) return
  log.warn(
    { file: torn.path, keptBytes: torn.at, cut: torn.text.slice(0, 200) },
    `audit.log: dropped a torn last line (${torn.bytes} bytes) from an interrupted write`,
  )
  await truncate(torn.path, torn.at)
}

/**
 * Read audit.log; it changes nothing. A torn last line (no newline: a crash mid-append, never
 * acknowledged) is handed back as `torn`, for `cutTorn` once the start is not refused.
 */
async function readAudit(path: string): Promise<AuditRead> {
  let buf: Buffer
  const records = new Map<string, { line: number; record: unknown }>()
  const unrecorded = new Set<string>()
  try {
    buf = await readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      return { entries: [], total: 0, revision: 0, records, unrecorded, tail: [], torn: null }
    throw new StoreError(`${path}: cannot read it (${(err as NodeJS.ErrnoException).code})`)
  }
  const entries: AuditEntry[] = []
  let total = 0
  let revision = 0
  let tail: (AuditLine & { line: number })[] = []
  let torn: Torn | null = null
  let offset = 0
  while (offset < buf.length) {
    const nl = buf.indexOf(10, offset)
    if (nl === -1) {
      torn = { path, at: offset, bytes: buf.length - offset, text: buf.subarray(offset).toString('utf8') }
      break
    }
    let raw: unknown
    try {
      raw = JSON.parse(buf.subarray(offset, nl).toString('utf8'))
    } catch {
      throw new StoreError(`${path}: line ${total + 1} is not valid JSON; repair or move the file`)
    }
    offset = nl + 1
    total++
    const checked = checkAuditLine(raw)
    if ('problems' in checked)
      throw refusal(
        path,
        checked.problems.map((p) => `line ${total}: ${p}`),
        `repair that line, or move ${dirname(path)} away to start empty; nothing was changed`,
      )
    const line = checked.value
    const { record, ...entry } = line
    entries.push(entry)
    if (entries.length > 2 * MEMORY) entries.splice(0, entries.length - MEMORY)
    if (entry.revision === undefined) {
      tail = []
      continue
    }
    if (entry.revision !== revision) tail = []
    tail.push({ ...line, line: total })
    revision = Math.max(revision, entry.revision)
    if (entry.route === null) continue
    if (record === undefined) unrecorded.add(entry.route)
    else {
      unrecorded.delete(entry.route)
      records.set(entry.route, { line: total, record })
    }
  }
  return { entries: entries.slice(-MEMORY), total, revision, records, unrecorded, tail, torn }
}

/**
 * Check that state.json and the audit agree. Null when they do; the completed state when the audit's
 * last change never reached state.json (a crash between the two writes). Anything else is a StoreError
 * naming both files, what differs and the ways out.
 */
function reconcile(
  found: ControlState | null,
  audit: AuditRead,
  dir: string,
  log: Logger,
): ControlState | null {
  const statePath = join(dir, 'state.json')
  const auditPath = join(dir, 'audit.log')
  const ways = `run veer control --recover --state-dir ${dir} to rebuild state.json from the audit, or move ${dir} away to start empty`
  const stateRevision = found?.revision ?? 0
  if (found === null && audit.revision > 0)
    throw new StoreError(
      `${statePath} is missing but ${auditPath} holds changes up to revision ${audit.revision}; ${ways}`,
    )
  if (stateRevision === audit.revision) return null
  if (stateRevision > audit.revision)
    throw new StoreError(
      `${statePath} is at revision ${stateRevision} but ${auditPath} ends at revision ${audit.revision}: the audit lacks changes (restored from an older backup?); restore the audit that goes with this state, or ${ways} (changes after revision ${audit.revision} are then lost)`,
    )
  const tail = audit.tail
  const interrupted =
    found !== null &&
    audit.revision === stateRevision + 1 &&
    tail.length > 0 &&
    tail.every((l) => l.route === null || l.record !== undefined)
  if (!interrupted)
    throw new StoreError(
      `${statePath} is at revision ${stateRevision} but ${auditPath} goes on to revision ${audit.revision}: state.json is older than the audit (restored from a backup?); ${ways}`,
    )
  const routes: Record<string, RouteRecord> = { ...found.routes }
  const bad: string[] = []
  for (const l of tail) {
    if (l.route === null) continue
    const checked = recordOf(l.record, l.route, l.line)
    if ('problems' in checked) bad.push(...checked.problems)
    else if (checked.value === null) delete routes[l.route]
    else routes[l.route] = checked.value
  }
  if (bad.length > 0)
    throw refusal(
      auditPath,
      bad,
      `the change of revision ${audit.revision} never reached state.json and cannot be completed from these lines; repair them, or move ${dir} away to start empty; nothing was changed`,
    )
  const completed = checkState({ ...found, revision: audit.revision, routes })
  if ('problems' in completed)
    throw refusal(
      statePath,
      completed.problems,
      `those are problems of the state that completing the change of revision ${audit.revision} from ${auditPath} gives; ${ways}; nothing was changed`,
    )
  log.warn(
    { file: statePath, revision: audit.revision, entries: tail.map((l) => l.seq) },
    'state.json: completed a change whose audit lines were saved but whose state was not (interrupted)',
  )
  return completed.value
}
