/**
 * The proxy registry in etcd, so that every control replica knows every proxy. Each replica writes its
 * own record of each of its proxies, `<prefix>proxies/<replica>/<proxy id>` (state-schema.ts
 * `ProxyRecord`), on its own lease (`store.etcd.leaseTtl`): when the proxy registers, acks or refuses a
 * revision, and when it stops or starts being live (ProxyRegistry.sweep); it deletes it when it forgets
 * the proxy. No replica ever writes another's key, so writes are plain puts and need no compare: a
 * write retried after a timeout only puts the newest state again, and after the lease was lost every
 * record is put again under a new one. A replica that dies takes its records with it when its lease runs
 * out (at once when it stops cleanly: the lease is revoked).
 *
 * Every replica follows `proxies/` with a watch and keeps the others' records in its registry; a proxy
 * that moved has a record from each replica it talked to until the old one forgets it, and the registry
 * lets the live one with the newest applied revision stand for it. So the leader counts a step applied
 * once every live proxy of any replica has acked it, and a new leader knows every proxy at once.
 *
 * Writes never hold up a proxy's answer: they are queued per proxy (the newest state wins), flushed a
 * batch at a time, one write per proxy in flight; failed ones are tried again every second. A replica
 * whose lease has not been renewed for longer than its TTL (cut off from etcd) is not `healthy()`: its
 * records may be gone, so it sends its proxies to another replica (api.ts answers their watch and
 * registration 503).
 */
import type { Etcd3, IKeyValue, Lease, Watcher } from 'etcd3'
import type { Logger } from 'pino'
import type { ProxyEntry, ProxyRegistry } from './proxies.ts'
import { checkProxyRecord, type ProxyRecord } from './state-schema.ts'

/** A write (a batch of them) that etcd does not confirm in this long is tried again. */
const WRITE_MS = 3000
const RETRY_MS = 1000
/** Revoking the lease at shutdown waits this long at most (etcd may be away). */
const CLOSE_MS = 1000

export class EtcdProxyBook {
  readonly #client: Etcd3
  readonly #dir: string
  readonly #mine: string
  readonly #replica: string
  readonly #ttlMs: number
  readonly #registry: ProxyRegistry
  readonly #log: Logger
  /** Another replica's record came or changed (`rec`), or went (null). */
  readonly #changed: (id: string, replica: string, rec: ProxyRecord | null) => void
  #lease: Lease | null = null
  #granting: Promise<Lease> | null = null
  #watcher: Watcher | null = null
  /** Which start() is current: an older one's watcher is cancelled. */
  #generation = 0
  /** Records to write: the proxy as it is now (null: delete this replica's record of it). */
  readonly #pending = new Map<string, ProxyEntry | null>()
  #flushing = false
  #retry: NodeJS.Timeout | null = null
  /** When etcd last confirmed the lease (its grant or a keepalive); null: no lease now. */
  #renewedAt: number | null = null
  /** Since when writes have been failing (null: the last flush wrote everything). */
  #failingSince: number | null = null
  #warned = false
  #closed = false

  constructor(
    client: Etcd3,
    prefix: string,
    replica: string,
    ttl: number,
    registry: ProxyRegistry,
    log: Logger,
    changed: (id: string, replica: string, rec: ProxyRecord | null) => void,
  ) {
    this.#client = client
    this.#dir = `${prefix}proxies/`
    this.#mine = `${this.#dir}${replica}/`
    this.#replica = replica
    this.#ttlMs = ttl * 1000
    this.#registry = registry
    this.#log = log
    this.#changed = changed
    registry.changed = (p) => this.#queue(p.id, p)
    registry.forgotten = (id) => this.#queue(id, null)
    // Until the first read of every record: a new leader must not count a step on its own proxies.
    registry.ready = false
  }

  /**
   * False once this replica may have lost its records in etcd, or cannot write them: its lease not
   * confirmed for two thirds of its TTL (etcd expires it at the TTL), or writes failing for as long.
   */
  healthy(now = Date.now()): boolean {
    const within = (this.#ttlMs * 2) / 3
    if (this.#renewedAt !== null && now - this.#renewedAt > within) return false
    return this.#failingSince === null || now - this.#failingSince <= within
  }

  /** Read every record, then follow them. Failures are retried; the registry works meanwhile. */
  async start(): Promise<void> {
    const generation = ++this.#generation
    while (!this.#closed && generation === this.#generation) {
      try {
        const res = await this.#client
          .getAll()
          .prefix(this.#dir)
          .options({ deadline: Date.now() + WRITE_MS })
          .exec()
        const there = new Set<string>()
        for (const kv of res.kvs) {
          there.add(kv.key.toString())
          this.#take('Put', kv)
        }
        // Read again after a lost watch: records that went meanwhile go here too.
        for (const [id, replica] of this.#registry.recordKeys())
          if (!there.has(`${this.#dir}${replica}/${id}`) && this.#registry.dropRecord(id, replica))
            this.#changed(id, replica, null)
        this.#registry.ready = true
        const watcher = await this.#client
          .watch()
          .prefix(this.#dir)
          .startRevision(String(Number(res.header.revision) + 1))
          .create()
        if (this.#closed || generation !== this.#generation) {
          await watcher.cancel().catch(() => {})
          return
        }
        void this.#watcher?.cancel().catch(() => {})
        this.#watcher = watcher
        watcher.on('data', (w) => {
          for (const e of w.events) this.#take(e.type, e.kv)
        })
        // Cancelled (a compaction past where it was): read everything again.
        watcher.on('error', () => {
          if (!this.#closed && generation === this.#generation) void this.start()
        })
        return
      } catch (err) {
        this.#log.warn(
          { reason: (err as Error).message },
          'etcd: cannot read the proxy registry; retrying in 1 s',
        )
        await new Promise((r) => setTimeout(r, RETRY_MS).unref())
      }
    }
  }

  async close(): Promise<void> {
    this.#closed = true
    if (this.#retry !== null) clearTimeout(this.#retry)
    // Revoked: this replica's records go at once; its proxies register with another replica. Bounded:
    // with etcd away, the lease simply runs out.
    const closing = (async () => {
      await this.#watcher?.cancel().catch(() => {})
      const lease = this.#lease ?? (await this.#granting?.catch(() => null)) ?? null
      await lease?.revoke().catch(() => {})
    })()
    await Promise.race([closing, new Promise((r) => setTimeout(r, CLOSE_MS).unref())])
    this.#client.close()
  }

  /** Another replica's record seen on the watch (or the first read); this replica's own are skipped. */
  #take(type: string, kv: IKeyValue): void {
    const key = kv.key.toString()
    const rest = key.slice(this.#dir.length)
    const slash = rest.indexOf('/')
    if (slash <= 0 || key.startsWith(this.#mine)) return
    const replica = rest.slice(0, slash)
    const id = rest.slice(slash + 1)
    if (type === 'Delete') {
      if (this.#registry.dropRecord(id, replica)) this.#changed(id, replica, null)
      return
    }
    let value: unknown
    try {
      value = JSON.parse(kv.value.toString())
    } catch {
      value = null
    }
    const checked = checkProxyRecord(value)
    if ('problems' in checked || checked.value.id !== id || checked.value.replica !== replica) {
      this.#log.error(
        { key, problems: 'problems' in checked ? checked.problems : ['id or replica is not the key’s'] },
        'etcd: a proxy record that is not valid; not taken',
      )
      return
    }
    this.#registry.takeRecord(checked.value, Date.now())
    this.#changed(id, replica, checked.value)
  }

  #queue(id: string, p: ProxyEntry | null): void {
    if (this.#closed) return
    this.#pending.set(id, p)
    void this.#flush()
  }

  /** One batch at a time, so that no proxy has two writes in flight; what failed goes back in the queue. */
  async #flush(): Promise<void> {
    if (this.#flushing || this.#retry !== null) return
    this.#flushing = true
    try {
      while (this.#pending.size > 0 && !this.#closed) {
        const batch = [...this.#pending]
        this.#pending.clear()
        let failed: unknown = null
        try {
          const lease = await this.#leased()
          const done = await Promise.allSettled(batch.map(([id, p]) => this.#write(lease, id, p)))
          done.forEach((d, i) => {
            if (d.status === 'fulfilled') return
            failed = d.reason
            const [id, p] = batch[i]!
            if (!this.#pending.has(id)) this.#pending.set(id, p)
          })
        } catch (err) {
          failed = err
          for (const [id, p] of batch) if (!this.#pending.has(id)) this.#pending.set(id, p)
        }
        if (failed === null) {
          this.#warned = false
          this.#failingSince = null
          continue
        }
        this.#failingSince ??= Date.now()
        if (!this.#warned) {
          this.#warned = true
          this.#log.warn(
            { reason: (failed as Error).message, proxies: this.#pending.size },
            'etcd: proxy records not written; retrying every second',
          )
        }
        this.#retry = setTimeout(() => {
          this.#retry = null
          void this.#flush()
        }, RETRY_MS)
        this.#retry.unref()
        return
      }
    } finally {
      this.#flushing = false
    }
  }

  #leased(): Promise<Lease> {
    if (this.#lease !== null) return Promise.resolve(this.#lease)
    this.#granting ??= this.#grant().finally(() => {
      this.#granting = null
    })
    return this.#granting
  }

  async #grant(): Promise<Lease> {
    const lease = this.#client.lease(this.#ttlMs / 1000, {
      autoKeepAlive: true,
      deadline: Date.now() + WRITE_MS,
    } as Parameters<Etcd3['lease']>[1])
    lease.on('lost', () => {
      if (this.#lease !== lease) return
      this.#lease = null
      this.#renewedAt = null
      this.#log.warn('etcd: the proxy registry lease was lost; writing this replica’s proxies again')
      // Every proxy of this replica, under a new lease (its records went with the old one).
      for (const p of this.#registry.own()) this.#queue(p.id, p)
    })
    lease.on('keepaliveSucceeded', () => {
      if (this.#lease === lease) this.#renewedAt = Date.now()
    })
    try {
      await lease.grant()
    } catch (err) {
      void lease.release()
      throw err
    }
    if (this.#closed) {
      await lease.revoke().catch(() => {})
      throw new Error('closed')
    }
    this.#lease = lease
    this.#renewedAt = Date.now()
    return lease
  }

  async #write(lease: Lease, id: string, p: ProxyEntry | null): Promise<void> {
    const key = this.#mine + id
    const deadline = { deadline: Date.now() + WRITE_MS }
    if (p === null) {
      await this.#client.delete().key(key).options(deadline).exec()
      return
    }
    const rec: ProxyRecord = {
      id,
      who: p.who,
      routes: p.routes,
      appliedRevision: p.appliedRevision,
      lastError: p.lastError,
      registeredAt: p.registeredAt,
      replica: this.#replica,
      live: p.live,
    }
    await lease.put(key).value(JSON.stringify(rec)).options(deadline).exec()
  }
}
