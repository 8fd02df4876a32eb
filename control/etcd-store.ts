/**
 * Control's state in etcd (`veer control --etcd`), under a prefix (default `/veer/`):
 *
 *   <prefix>meta                   {"formatVersion":1,"revision":R,"seq":S}: the global revision and the
 *                                  last audit seq
 *   <prefix>routes/<name>          the route's record (JSON), as state.json holds it
 *   <prefix>audit/<seq, 12 digits> one audit line, as audit.log holds it (with the route it left)
 *   <prefix>election/control/<lease> the replicas' leader election (control/leader.ts)
 *
 * Every change is ONE transaction: it compares the mod revision of `meta` and of every route key it
 * writes with what this replica last saw (0: absent), and puts the routes, the audit lines and `meta`.
 * A concurrent writer has moved `meta` (or the route), so the transaction fails and nothing is written:
 * this replica waits until its watch has brought that change and the engine decides once more
 * (StaleStateError): a write to another route goes through, a stale If-Match is 412. A change and its
 * audit lines land together or not at all. The leader's clock writes also compare its election key
 * (a Fence): once its lease is gone they fail and write nothing (NotLeaderError).
 *
 * The state in memory follows an etcd watch on the prefix from the revision it was read at, so writes by
 * others show up here too, and are handed to `remote` (the engine publishes them to /v1/events and the
 * proxies' long polls). Watch events wait while a write of this replica is out, so its own changes are
 * recognised by their mod revision and never handed on as remote. While etcd cannot be reached, reads answer from that state and writes throw
 * StoreWriteError (503 with Retry-After); the watch resumes where it was when etcd is back.
 * Keys under the prefix outside these three are left alone (the election slice puts its own there).
 */
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { Etcd3, type ICompare, type IKeyValue, type IOptions, type IRequestOp, type Watcher } from 'etcd3'
import type { Logger } from 'pino'
import { type AuditPage, type AuditQuery, auditPage } from './audit-query.ts'
import {
  type ControlStore,
  type Fence,
  NotLeaderError,
  type RemoteEntry,
  StaleStateError,
} from './control-store.ts'
import { checkAuditLine, checkRecord, checkState } from './state-schema.ts'
import {
  type AuditDraft,
  type AuditEntry,
  type ControlState,
  emptyState,
  FORMAT_VERSION,
  type RouteRecord,
  StoreError,
  type StoreObserver,
  StoreWriteError,
} from './store.ts'

export interface EtcdSettings {
  /** Client URLs: http://HOST:PORT, https://HOST:PORT or unix:///PATH. */
  readonly endpoints: readonly string[]
  readonly prefix: string
  readonly tls: { readonly ca?: string; readonly cert?: string; readonly key?: string } | null
  /** The leader lease's TTL, seconds (control/leader.ts). */
  readonly leaseTtl?: number
}

/** Most audit entries kept in memory for GET /v1/audit (etcd keeps all), as the file store. */
const MEMORY = 10_000
/** How long start-up waits for etcd before it says it cannot be reached. */
const START_MS = 3000
/** A write's deadline: past it, 503 (a member without quorum holds a request until it times out). */
const WRITE_MS = 3000
/** Most operations in one import transaction (etcd's --max-txn-ops is 128 by default). */
const TXN_OPS = 100
/** Most bytes in one import transaction (etcd's --max-request-bytes is 1.5 MiB by default). */
const TXN_BYTES = 1024 * 1024

export interface Meta {
  readonly formatVersion: typeof FORMAT_VERSION
  readonly revision: number
  readonly seq: number
}

type AuditLine = RemoteEntry

/** A write etcd did not confirm: nothing of it was acknowledged; 503 with Retry-After (engine.ts). */
export class EtcdWriteError extends StoreWriteError {
  constructor(cause: unknown, endpoints: readonly string[], what = 'confirm the write') {
    super(cause)
    this.message = `etcd (${endpoints.join(',')}) did not ${what} (${reason(cause)}); retry later`
  }
}

/** A compare failed: another writer moved a key, at mod revision `revision` at most. */
class Behind extends Error {
  readonly revision: number
  constructor(revision: number) {
    super(`behind etcd revision ${revision}`)
    this.revision = revision
  }
}

export class EtcdStore implements ControlStore {
  state: ControlState
  observer: StoreObserver | null = null
  remote: ((entries: readonly RemoteEntry[], revision: number) => void) | null = null
  private readonly client: Etcd3
  private readonly settings: EtcdSettings
  private readonly log: Logger
  private readonly keys: Keys
  private readonly entries: AuditEntry[]
  private readonly last = new Map<string, AuditEntry>()
  /** The last audit seq seen. */
  private total: number
  /** Mod revision of each route key as last seen (absent: the key is absent). */
  private readonly mods = new Map<string, number>()
  private metaMod: number
  private watcher: Watcher | null = null
  private closed = false
  /** Settles once this replica's write in flight is booked; watch events wait for it. */
  #inflight: Promise<void> | null = null
  /** Watch events in order, each batch after the write in flight. */
  #applying: Promise<void> = Promise.resolve()
  /** The newest mod revision the watch has brought (taken or not). */
  #seen = 0
  readonly #catchUps = new Set<{ readonly rev: number; readonly done: () => void }>()
  readonly #replica: string | undefined

  private constructor(client: Etcd3, settings: EtcdSettings, log: Logger, snap: Snapshot, replica?: string) {
    this.client = client
    this.#replica = replica
    this.settings = settings
    this.log = log
    this.keys = keysOf(settings.prefix)
    this.state = snap.state
    this.entries = snap.entries
    this.total = snap.meta?.seq ?? 0
    this.metaMod = snap.metaMod
    this.#seen = snap.revision
    for (const [name, mod] of snap.mods) this.mods.set(name, mod)
    for (const e of snap.entries) this.#noteLast(e)
  }

  /** Connect, read and check everything under the prefix, and follow it. StoreError: refuse the start. */
  /** `replica`: this control replica's id, written into every audit entry it makes. */
  static async open(settings: EtcdSettings, log: Logger, replica?: string): Promise<EtcdStore> {
    const client = connect(settings)
    try {
      const snap = await readSnapshot(client, settings)
      const store = new EtcdStore(client, settings, log, snap, replica)
      await store.#watch(snap.revision + 1)
      return store
    } catch (err) {
      client.close()
      throw err
    }
  }

  async commit(
    next: ControlState,
    drafts: readonly AuditDraft[],
    now = Date.now(),
    fence: Fence | null = null,
  ): Promise<AuditEntry[]> {
    const release = this.#hold()
    try {
      return await this.#commit(next, drafts, now, fence)
    } catch (err) {
      release()
      throw await this.#behind(err)
    } finally {
      release()
    }
  }

  async #commit(
    next: ControlState,
    drafts: readonly AuditDraft[],
    now: number,
    fence: Fence | null,
  ): Promise<AuditEntry[]> {
    const out = this.#entries(drafts, now)
    const compare: ICompare[] = [modIs(this.keys.meta, this.metaMod)]
    const success: IRequestOp[] = []
    const changed: string[] = []
    for (const name of new Set([...Object.keys(this.state.routes), ...Object.keys(next.routes)])) {
      const r = next.routes[name]
      if (r === this.state.routes[name]) continue
      changed.push(name)
      const key = this.keys.route(name)
      compare.push(modIs(key, this.mods.get(name) ?? 0))
      success.push(
        r === undefined
          ? { request_delete_range: { key } }
          : { request_put: { key, value: Buffer.from(JSON.stringify(r)) } },
      )
    }
    for (const e of out) {
      const line: AuditLine =
        e.route !== null && e.revision !== undefined ? { ...e, record: next.routes[e.route] ?? null } : e
      success.push({ request_put: { key: this.keys.audit(e.seq), value: Buffer.from(JSON.stringify(line)) } })
    }
    const metaChanged = out.length > 0 || next.revision !== this.state.revision
    if (metaChanged) success.push(this.#metaPut(next.revision, this.total + out.length))
    if (success.length === 0) {
      this.state = next
      return out
    }
    const rev = await this.#txn(compare, success, fence)
    this.observer?.audited(out)
    // Our delta onto the state as it is now: a watch event may have come in while the write was out.
    const routes: Record<string, RouteRecord> = { ...this.state.routes }
    for (const name of changed) {
      const r = next.routes[name]
      if (r === undefined) {
        delete routes[name]
        this.mods.delete(name)
      } else {
        routes[name] = r
        this.mods.set(name, rev)
      }
    }
    if (metaChanged) this.metaMod = Math.max(this.metaMod, rev)
    this.state = { ...this.state, revision: Math.max(this.state.revision, next.revision), routes }
    this.#remember(out)
    return out
  }

  async append(drafts: readonly AuditDraft[], retried = false): Promise<AuditEntry[]> {
    const out = this.#entries(drafts)
    if (out.length === 0) return out
    const success: IRequestOp[] = out.map((e) => ({
      request_put: { key: this.keys.audit(e.seq), value: Buffer.from(JSON.stringify(e)) },
    }))
    success.push(this.#metaPut(this.state.revision, this.total + out.length))
    const release = this.#hold()
    try {
      const rev = await this.#txn([modIs(this.keys.meta, this.metaMod)], success)
      this.observer?.audited(out)
      this.metaMod = Math.max(this.metaMod, rev)
      this.#remember(out)
      return out
    } catch (err) {
      release()
      const why = await this.#behind(err)
      // Another replica's change came first: caught up, append after it (nothing to decide again).
      if (why instanceof StaleStateError && !retried) return this.append(drafts, true)
      throw why
    } finally {
      release()
    }
  }

  /** A quorum read of `meta`'s mod revision, then wait for the watch to bring it (both within WRITE_MS). */
  async current(): Promise<void> {
    let mod: number
    try {
      const res = await this.client.kv.range({ key: this.keys.meta }, { deadline: Date.now() + WRITE_MS })
      mod = Number(res.kvs[0]?.mod_revision ?? 0)
    } catch (err) {
      this.observer?.storageFailed('etcd')
      throw new EtcdWriteError(err, this.settings.endpoints, 'read the current state')
    }
    await this.#caughtUp(mod)
  }

  lastChange(route: string): AuditEntry | null {
    return this.last.get(route) ?? null
  }

  audit(query: AuditQuery): AuditPage {
    return auditPage(this.entries, this.total, query)
  }

  async close(): Promise<void> {
    this.closed = true
    await this.watcher?.cancel().catch(() => {})
    this.client.close()
  }

  #metaPut(revision: number, seq: number): IRequestOp {
    const meta: Meta = { formatVersion: FORMAT_VERSION, revision, seq }
    return { request_put: { key: this.keys.meta, value: Buffer.from(JSON.stringify(meta)) } }
  }

  /**
   * Hold watch events until the write about to go out is booked (so its own events are known by their
   * mod revision); the release is idempotent.
   */
  #hold(): () => void {
    let done!: () => void
    const held = new Promise<void>((ok) => {
      done = ok
    })
    this.#inflight = held
    return () => {
      if (this.#inflight === held) this.#inflight = null
      done()
    }
  }

  /**
   * One transaction; its etcd revision. A failed compare: Behind, with the mod revision the watch must
   * bring (or NotLeaderError when the fence is what failed); etcd not answering: EtcdWriteError.
   */
  async #txn(compare: ICompare[], success: IRequestOp[], fence: Fence | null = null): Promise<number> {
    let res: Awaited<ReturnType<Etcd3['kv']['txn']>>
    const started = performance.now()
    const all = [...compare]
    if (fence !== null)
      all.push({
        key: Buffer.from(fence.key),
        target: 'Create',
        result: 'Equal',
        create_revision: String(fence.createRevision),
      })
    // On failure: what moved, so that this replica waits for exactly that on its watch.
    const failure: IRequestOp[] = all.map((c) => ({ request_range: { key: c.key } }))
    try {
      res = await this.client.kv.txn({ compare: all, success, failure }, { deadline: Date.now() + WRITE_MS })
    } catch (err) {
      this.observer?.storageFailed('etcd')
      throw new EtcdWriteError(err, this.settings.endpoints)
    }
    this.observer?.auditWritten((performance.now() - started) / 1000)
    if (res.succeeded) return Number(res.header.revision)
    const kvs = res.responses.map((r) => r.response_range.kvs[0])
    if (fence !== null && Number(kvs.at(-1)?.create_revision ?? 0) !== fence.createRevision)
      throw new NotLeaderError(`the election key ${fence.key} is gone or another's`)
    let target = 0
    for (const kv of kvs) target = Math.max(target, Number(kv?.mod_revision ?? 0))
    throw new Behind(target)
  }

  /** A write refused as Behind: wait (watch events no longer held) for what moved, then StaleStateError. */
  async #behind(err: unknown): Promise<unknown> {
    if (!(err instanceof Behind)) return err
    try {
      await this.#caughtUp(err.revision)
    } catch (late) {
      return late
    }
    return new StaleStateError()
  }

  /** Resolves once the watch has brought mod revision `rev`; past the write deadline, EtcdWriteError. */
  async #caughtUp(rev: number): Promise<void> {
    if (this.#seen >= rev) return
    let timer: NodeJS.Timeout | undefined
    let entry: { rev: number; done: () => void } | undefined
    try {
      await new Promise<void>((ok, fail) => {
        entry = { rev, done: ok }
        this.#catchUps.add(entry)
        timer = setTimeout(() => fail(new Error(`the watch did not bring revision ${rev}`)), WRITE_MS)
      })
    } catch (err) {
      throw new EtcdWriteError(err, this.settings.endpoints)
    } finally {
      clearTimeout(timer)
      if (entry) this.#catchUps.delete(entry)
    }
  }

  #entries(drafts: readonly AuditDraft[], now = Date.now()): AuditEntry[] {
    const time = new Date(now).toISOString()
    const replica = this.#replica
    return drafts.map((d, i) => ({
      seq: this.total + i + 1,
      time,
      ...d,
      ...(replica !== undefined && { replica }),
    }))
  }

  /** Entries past the last seq seen, in order (a watch event may have brought some already). */
  #remember(out: readonly AuditEntry[]): void {
    for (const e of out) {
      if (e.seq <= this.total) continue
      this.total = e.seq
      this.entries.push(e)
      this.#noteLast(e)
    }
    if (this.entries.length > MEMORY) this.entries.splice(0, this.entries.length - MEMORY)
  }

  #noteLast(e: AuditEntry): void {
    if (e.route !== null && e.revision !== undefined) this.last.set(e.route, e)
  }

  async #watch(from: number): Promise<void> {
    const watcher = await this.client
      .watch()
      .prefix(this.settings.prefix)
      .startRevision(String(from))
      .create()
    this.watcher = watcher
    let lost = false
    watcher.on('data', (res) => {
      const events = res.events.map((e) => ({ type: e.type, kv: e.kv }))
      this.#applying = this.#applying
        .then(() => this.#inflight)
        .then(() => this.#apply(events))
        .catch((err) => this.log.error({ err }, 'etcd: a watch event could not be applied'))
    })
    watcher.on('disconnected', (err: unknown) => {
      if (lost) return
      lost = true
      this.log.warn(
        { endpoints: this.settings.endpoints, reason: reason(err) },
        'etcd watch lost: serving the last known state; writes answer 503 until etcd answers',
      )
    })
    watcher.on('connected', () => {
      if (!lost) return
      lost = false
      this.log.info({ endpoints: this.settings.endpoints }, 'etcd watch resumed')
    })
    // Cancelled by etcd (the revision it resumes from was compacted): read everything again.
    watcher.on('error', (err: unknown) => {
      this.log.warn({ reason: reason(err) }, 'etcd watch cancelled; reading the state again')
      void this.#resync()
    })
  }

  async #resync(): Promise<void> {
    while (!this.closed) {
      try {
        const snap = await readSnapshot(this.client, this.settings)
        const before = { revision: this.state.revision, seq: this.total }
        this.state = snap.state
        this.metaMod = snap.metaMod
        this.mods.clear()
        for (const [name, mod] of snap.mods) this.mods.set(name, mod)
        this.#remember(snap.entries)
        // What the lost stretch of the watch held: published as its events would have been (proxies'
        // watches wake, /v1/events has the audit entries).
        // (An entry read back carries no record: each versioned change is published with its route as
        // it is now.)
        const fresh = snap.entries
          .filter((e) => e.seq > before.seq && e.route !== null && e.revision !== undefined)
          .map((e) => ({ ...e, record: snap.state.routes[e.route!] ?? null }))
        if (fresh.length > 0 || snap.state.revision !== before.revision)
          this.remote?.(fresh, snap.state.revision)
        this.#seen = Math.max(this.#seen, snap.revision)
        for (const c of this.#catchUps) if (this.#seen >= c.rev) c.done()
        await this.#watch(snap.revision + 1)
        return
      } catch (err) {
        this.log.error({ reason: reason(err) }, 'etcd: cannot read the state again; retrying in 1 s')
        await new Promise((r) => setTimeout(r, 1000))
      }
    }
  }

  /**
   * Changes seen on the watch (ours too: those are skipped by their mod revision). A record that does
   * not pass the schema is logged and not taken: the route keeps its last good state here, and a write
   * to it fails its compare until the key is repaired.
   */
  #apply(events: readonly { type: string; kv: IKeyValue }[]): void {
    let routes: Record<string, RouteRecord> | null = null
    let revision = this.state.revision
    const audit: { entry: AuditEntry; record: RouteRecord | null | undefined }[] = []
    for (const { type, kv } of events) {
      const key = kv.key.toString()
      const mod = Number(kv.mod_revision)
      this.#seen = Math.max(this.#seen, mod)
      if (key === this.keys.metaText) {
        if (type !== 'Put' || mod <= this.metaMod) continue
        const meta = parseMeta(kv.value.toString())
        if (typeof meta === 'string') {
          this.log.error({ key, problem: meta }, 'etcd: a meta key this veer cannot read; not taken')
          continue
        }
        this.metaMod = mod
        revision = Math.max(revision, meta.revision)
      } else if (key.startsWith(this.keys.routesText)) {
        const name = key.slice(this.keys.routesText.length)
        if (mod <= (this.mods.get(name) ?? 0)) continue
        routes ??= { ...this.state.routes }
        if (type === 'Delete') {
          delete routes[name]
          this.mods.delete(name)
          continue
        }
        const checked = recordAt(kv, name)
        if ('problems' in checked) {
          this.log.error(
            { key, problems: checked.problems },
            'etcd: a route record that is not valid; not taken',
          )
          continue
        }
        routes[name] = checked.value
        this.mods.set(name, mod)
      } else if (key.startsWith(this.keys.auditText) && type === 'Put') {
        const checked = lineAt(kv)
        if ('problems' in checked) {
          this.log.error(
            { key, problems: checked.problems },
            'etcd: an audit line that is not valid; not taken',
          )
          continue
        }
        audit.push({ entry: checked.value, record: checked.record })
      }
    }
    const moved = revision !== this.state.revision
    if (routes !== null || moved)
      this.state = { ...this.state, revision, routes: routes ?? this.state.routes }
    const fresh = audit.filter((a) => a.entry.seq > this.total).sort((a, b) => a.entry.seq - b.entry.seq)
    this.#remember(fresh.map((a) => a.entry))
    if (fresh.length > 0 || moved)
      this.remote?.(
        fresh.map((a) => (a.record === undefined ? a.entry : { ...a.entry, record: a.record })),
        this.state.revision,
      )
    for (const c of this.#catchUps) if (this.#seen >= c.rev) c.done()
  }
}

interface Keys {
  readonly meta: Buffer
  readonly metaText: string
  readonly routesText: string
  readonly auditText: string
  route(name: string): Buffer
  audit(seq: number): Buffer
}

function keysOf(prefix: string): Keys {
  const metaText = `${prefix}meta`
  const routesText = `${prefix}routes/`
  const auditText = `${prefix}audit/`
  return {
    meta: Buffer.from(metaText),
    metaText,
    routesText,
    auditText,
    route: (name) => Buffer.from(routesText + name),
    audit: (seq) => Buffer.from(auditText + String(seq).padStart(12, '0')),
  }
}

/** The end of the range of keys that start with `prefix`. */
function rangeEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix)
  b[b.length - 1]! += 1
  return b
}

const modIs = (key: Buffer, mod: number): ICompare => ({
  key,
  target: 'Mod',
  result: 'Equal',
  mod_revision: String(mod),
})

/** Why etcd did not answer, in a few words (gRPC messages run on with resolution notes). */
function reason(err: unknown): string {
  return String((err as Error | null)?.message ?? err)
    .split('. ')[0]!
    .slice(0, 200)
}

/** The etcd3 client, bounded so that start-up and writes fail fast instead of waiting for good. */
export function connect(settings: EtcdSettings): Etcd3 {
  const tls = settings.tls
  const read = (what: string, path: string | undefined) => {
    if (path === undefined) return undefined
    try {
      return readFileSync(path)
    } catch (err) {
      throw new StoreError(
        `store.etcd.tls.${what} ${path}: cannot read it (${(err as NodeJS.ErrnoException).code})`,
      )
    }
  }
  const credentials =
    tls === null
      ? undefined
      : {
          rootCertificate: read('ca', tls.ca) as Buffer,
          privateKey: read('key', tls.key),
          certChain: read('cert', tls.cert),
        }
  // Resume the watch quickly when etcd is back (the default backs off to 30 s).
  type Backoff = NonNullable<NonNullable<IOptions['faultHandling']>['watchBackoff']>
  const backoff = (ms: number): Backoff => ({ duration: ms, next: () => backoff(Math.min(ms * 2, 2000)) })
  return new Etcd3({
    // etcd3 takes HOST:PORT (http), https://HOST:PORT (TLS) and unix:///PATH as gRPC targets.
    hosts: settings.endpoints.map((e) => e.replace(/^http:\/\//, '')),
    ...(credentials && { credentials }),
    grpcOptions: {
      'grpc.max_receive_message_length': 256 * 1024 * 1024,
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 2000,
    },
    faultHandling: { watchBackoff: backoff(200) },
  })
}

interface Snapshot {
  readonly revision: number
  readonly meta: Meta | null
  readonly metaMod: number
  readonly state: ControlState
  readonly mods: ReadonlyMap<string, number>
  /** The newest entries (at most MEMORY), oldest first. */
  readonly entries: AuditEntry[]
}

function parseMeta(text: string): Meta | string {
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch {
    return 'is not valid JSON'
  }
  const m = raw as Partial<Meta> | null
  if (m?.formatVersion !== FORMAT_VERSION)
    return `format ${JSON.stringify(m?.formatVersion ?? null)} is not one this veer reads (format ${FORMAT_VERSION})`
  const whole = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0
  if (!whole(m.revision) || !whole(m.seq)) return 'revision and seq must be whole numbers'
  return { formatVersion: FORMAT_VERSION, revision: m.revision!, seq: m.seq! }
}

function json(kv: IKeyValue): { value: unknown } | { problems: string[] } {
  try {
    return { value: JSON.parse(kv.value.toString()) }
  } catch {
    return { problems: ['is not valid JSON'] }
  }
}

function recordAt(kv: IKeyValue, name: string): { value: RouteRecord } | { problems: string[] } {
  const parsed = json(kv)
  if ('problems' in parsed) return parsed
  const checked = checkRecord(parsed.value)
  if ('problems' in checked) return checked
  if (checked.value.name !== name)
    return { problems: [`record.name: must be the key's route ${name} (got ${checked.value.name})`] }
  return checked
}

/** The audit entry at `kv`, and the route it left (the remote changes' view of it). */
function lineAt(
  kv: IKeyValue,
): { value: AuditEntry; record: RouteRecord | null | undefined } | { problems: string[] } {
  const parsed = json(kv)
  if ('problems' in parsed) return parsed
  const checked = checkAuditLine(parsed.value)
  if ('problems' in checked) return checked
  const { record, ...entry } = checked.value
  return { value: entry, record: record as RouteRecord | null | undefined }
}

/** Most problems listed; the rest are counted. */
const LISTED = 20

/**
 * Everything under the prefix, read in one transaction (one etcd revision) and checked with the state
 * dir's schemas: a hand-edited or damaged key refuses the start, naming the key.
 */
async function readSnapshot(client: Etcd3, settings: EtcdSettings): Promise<Snapshot> {
  const keys = keysOf(settings.prefix)
  const where = `--etcd ${settings.endpoints.join(',')}`
  let res: Awaited<ReturnType<Etcd3['kv']['txn']>>
  try {
    const range = (text: string, extra: object = {}): IRequestOp => ({
      request_range: { key: Buffer.from(text), range_end: rangeEnd(text), ...extra },
    })
    const call = client.kv.txn(
      {
        success: [
          { request_range: { key: keys.meta } },
          range(keys.routesText),
          range(keys.auditText, { sort_order: 'Descend', sort_target: 'Key', limit: MEMORY }),
        ],
      },
      { deadline: Date.now() + START_MS },
    )
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_, fail) => {
      timer = setTimeout(() => fail(new Error(`no answer within ${START_MS} ms`)), START_MS)
    })
    res = await Promise.race([call, late]).finally(() => clearTimeout(timer))
  } catch (err) {
    throw new StoreError(
      `${where}: cannot reach etcd (${reason(err)}); check the endpoints, TLS and that etcd is running`,
    )
  }
  const [metaKvs, routeKvs, auditKvs] = res.responses.map((r) => r.response_range.kvs)
  const problems: string[] = []
  let meta: Meta | null = null
  const metaKv = metaKvs![0]
  if (metaKv !== undefined) {
    const m = parseMeta(metaKv.value.toString())
    if (typeof m === 'string') problems.push(`${keys.metaText}: ${m}`)
    else meta = m
  } else if (routeKvs!.length + auditKvs!.length > 0)
    problems.push(
      `${keys.metaText}: is missing but ${settings.prefix} holds routes or audit entries (an --import that did not finish?)`,
    )
  const routes: Record<string, RouteRecord> = {}
  const mods = new Map<string, number>()
  for (const kv of routeKvs!) {
    const key = kv.key.toString()
    const name = key.slice(keys.routesText.length)
    const checked = recordAt(kv, name)
    if ('problems' in checked) problems.push(...checked.problems.map((p) => `${key}: ${p}`))
    else {
      routes[name] = checked.value
      mods.set(name, Number(kv.mod_revision))
    }
  }
  const entries: AuditEntry[] = []
  for (const kv of [...auditKvs!].reverse()) {
    const checked = lineAt(kv)
    if ('problems' in checked) problems.push(...checked.problems.map((p) => `${kv.key.toString()}: ${p}`))
    else entries.push(checked.value)
  }
  const revision = meta?.revision ?? 0
  const newest = entries.at(-1)
  if (meta !== null && (newest?.seq ?? 0) !== meta.seq)
    problems.push(`${keys.metaText}: seq ${meta.seq} but the newest audit entry is ${newest?.seq ?? 'none'}`)
  for (const r of Object.values(routes))
    if (r.revision > revision)
      problems.push(`${keys.route(r.name).toString()}: revision ${r.revision} is past meta's ${revision}`)
  const state = checkState({ ...emptyState(), revision, routes })
  if ('problems' in state) problems.push(...state.problems.map((p) => `${settings.prefix}: ${p}`))
  if (problems.length > 0 || 'problems' in state) {
    const lines = problems.slice(0, LISTED).map((p) => `${where}: ${p}`)
    if (problems.length > LISTED) lines.push(`${where}: and ${problems.length - LISTED} more problem(s)`)
    lines.push(
      `repair those keys (etcdctl), restore the prefix from an etcd snapshot, or point --etcd at an empty prefix; nothing was changed`,
    )
    throw new StoreError(lines.join('\n'))
  }
  return {
    revision: Number(res.header.revision),
    meta,
    metaMod: metaKv === undefined ? 0 : Number(metaKv.mod_revision),
    state: state.value,
    mods,
    entries,
  }
}

/** Put `ops` in transactions of at most TXN_OPS operations and TXN_BYTES, each only while `meta` is absent. */
export async function putAll(
  client: Etcd3,
  settings: EtcdSettings,
  ops: readonly IRequestOp[],
): Promise<void> {
  const meta = keysOf(settings.prefix).meta
  const absent: ICompare = { key: meta, target: 'Create', result: 'Equal', create_revision: '0' }
  let batch: IRequestOp[] = []
  let bytes = 0
  const flush = async () => {
    if (batch.length === 0) return
    const res = await client.kv.txn({ compare: [absent], success: batch }, { deadline: Date.now() + 10_000 })
    if (!res.succeeded)
      throw new StoreError(
        `--import: ${settings.prefix}meta appeared while importing (another writer); nothing more was written`,
      )
    batch = []
    bytes = 0
  }
  for (const op of ops) {
    const size = (op.request_put?.key?.length ?? 0) + (op.request_put?.value?.length ?? 0)
    if (batch.length >= TXN_OPS || (batch.length > 0 && bytes + size > TXN_BYTES)) await flush()
    batch.push(op)
    bytes += size
  }
  await flush()
}

export { keysOf, rangeEnd }
