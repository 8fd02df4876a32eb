/**
 * The proxy registry in etcd, so that every control replica knows every proxy: `<prefix>proxies/<id>`
 * holds a proxy as the replica it talks to last wrote it (state-schema.ts `ProxyRecord`), on that
 * replica's own lease (`store.etcd.leaseTtl`), so a replica that dies takes its records with it.
 *
 * Only the replica a proxy talks to writes its record: when it registers, acks or refuses a revision,
 * and when it stops or starts being live (ProxyRegistry.sweep). The first write of a proxy on this
 * replica is a plain put (the proxy is here now, wherever it was before); the later ones compare the
 * record's mod revision with the one this replica wrote: when another replica wrote it since (the proxy
 * moved there), nothing is written, and the watch hands the proxy over to that replica. Every replica follows `proxies/` with a watch and keeps the
 * others' records in its registry: the leader counts a step applied once every live proxy of any
 * replica has acked it, and a new leader knows every proxy the moment it is elected.
 *
 * Writes never hold up a proxy's answer: they are queued per proxy (the newest state wins) and flushed
 * one batch at a time; while etcd cannot be reached they are tried again every second, and the lease is
 * granted again (and every record of this replica written again) when etcd lost it.
 */
import type { Etcd3, IKeyValue, Lease, Watcher } from 'etcd3'
import type { Logger } from 'pino'
import type { ProxyEntry, ProxyRegistry } from './proxies.ts'
import { checkProxyRecord, type ProxyRecord } from './state-schema.ts'

/** A batch of record writes that etcd does not confirm in this long is tried again. */
const WRITE_MS = 3000
const RETRY_MS = 1000

export class EtcdProxyBook {
  readonly #client: Etcd3
  readonly #dir: string
  readonly #replica: string
  readonly #ttl: number
  readonly #registry: ProxyRegistry
  readonly #log: Logger
  /** Another replica's record came or changed (`rec`), or went (null). */
  readonly #changed: (id: string, rec: ProxyRecord | null) => void
  #lease: Lease | null = null
  #watcher: Watcher | null = null
  /** Records to write: the proxy as it is now (null: delete). */
  readonly #pending = new Map<string, ProxyEntry | null>()
  /** The mod revision of each record this replica wrote last (its later writes compare it). */
  readonly #mine = new Map<string, number>()
  #flushing = false
  #retry: NodeJS.Timeout | null = null
  #warned = false
  #closed = false

  constructor(
    client: Etcd3,
    prefix: string,
    replica: string,
    ttl: number,
    registry: ProxyRegistry,
    log: Logger,
    changed: (id: string, rec: ProxyRecord | null) => void,
  ) {
    this.#client = client
    this.#dir = `${prefix}proxies/`
    this.#replica = replica
    this.#ttl = ttl
    this.#registry = registry
    this.#log = log
    this.#changed = changed
    registry.changed = (p) => this.#queue(p.id, p)
    registry.forgotten = (id) => this.#queue(id, null)
  }

  /** Read every record, then follow them. Failures are retried; the registry works meanwhile. */
  async start(): Promise<void> {
    while (!this.#closed) {
      try {
        const res = await this.#client.getAll().prefix(this.#dir).exec()
        for (const kv of res.kvs) this.#take('Put', kv)
        // Read again after a lost watch: records that went meanwhile go here too.
        const there = new Set(res.kvs.map((kv) => kv.key.toString().slice(this.#dir.length)))
        for (const id of this.#registry.others()) if (!there.has(id)) this.#take('Delete', null, id)
        const watcher = await this.#client
          .watch()
          .prefix(this.#dir)
          .startRevision(String(Number(res.header.revision) + 1))
          .create()
        this.#watcher = watcher
        watcher.on('data', (w) => {
          for (const e of w.events) this.#take(e.type, e.kv)
        })
        // Cancelled (a compaction past where it was): read everything again.
        watcher.on('error', () => {
          void watcher.cancel().catch(() => {})
          if (!this.#closed) void this.start()
        })
        if (this.#closed) await watcher.cancel()
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
    await this.#watcher?.cancel().catch(() => {})
    // Revoked: this replica's records go at once; its proxies register with another replica.
    await this.#lease?.revoke().catch(() => {})
    this.#client.close()
  }

  /** A record seen on the watch (or the first read); a Delete may name just the id. */
  #take(type: string, kv: IKeyValue | null, id = kv!.key.toString().slice(this.#dir.length)): void {
    if (type === 'Delete' || kv === null) {
      this.#mine.delete(id)
      if (this.#registry.takeRecord(id, null, this.#replica)) this.#changed(id, null)
      return
    }
    let value: unknown
    try {
      value = JSON.parse(kv.value.toString())
    } catch {
      value = null
    }
    const checked = checkProxyRecord(value)
    if ('problems' in checked || checked.value.id !== id) {
      this.#log.error(
        {
          key: kv.key.toString(),
          problems: 'problems' in checked ? checked.problems : ['id is not the key'],
        },
        'etcd: a proxy record that is not valid; not taken',
      )
      return
    }
    if (checked.value.replica !== this.#replica) this.#mine.delete(id)
    if (this.#registry.takeRecord(id, checked.value, this.#replica)) this.#changed(id, checked.value)
  }

  #queue(id: string, p: ProxyEntry | null): void {
    if (this.#closed) return
    this.#pending.set(id, p)
    void this.#flush()
  }

  async #flush(): Promise<void> {
    if (this.#flushing || this.#retry !== null) return
    this.#flushing = true
    try {
      while (this.#pending.size > 0 && !this.#closed) {
        const batch = [...this.#pending]
        this.#pending.clear()
        try {
          const lease = await this.#leased()
          await Promise.all(batch.map(([id, p]) => this.#write(lease, id, p)))
          this.#warned = false
        } catch (err) {
          // Not written: back in the queue, unless a newer state came meanwhile.
          for (const [id, p] of batch) if (!this.#pending.has(id)) this.#pending.set(id, p)
          if (!this.#warned) {
            this.#warned = true
            this.#log.warn(
              { reason: (err as Error).message, proxies: this.#pending.size },
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
      }
    } finally {
      this.#flushing = false
    }
  }

  async #leased(): Promise<Lease> {
    if (this.#lease !== null) return this.#lease
    const lease = this.#client.lease(this.#ttl, { autoKeepAlive: true })
    await lease.grant()
    lease.on('lost', () => {
      if (this.#lease !== lease) return
      this.#lease = null
      this.#mine.clear()
      this.#log.warn('etcd: the proxy registry lease was lost; writing this replica’s proxies again')
      // Every proxy of this replica, under a new lease (its records went with the old one).
      for (const p of this.#registry.own()) this.#queue(p.id, p)
    })
    this.#lease = lease
    return lease
  }

  async #write(lease: Lease, id: string, p: ProxyEntry | null): Promise<void> {
    const key = this.#dir + id
    const last = this.#mine.get(id)
    const deadline = { deadline: Date.now() + WRITE_MS }
    if (p === null) {
      if (last === undefined) return
      await this.#client
        .if(key, 'Mod', '==', last)
        .then(this.#client.delete().key(key))
        .options(deadline)
        .commit()
      this.#mine.delete(id)
      return
    }
    // Another replica's proxy now (the watch said so): not ours to write.
    if (p.replica !== null) return
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
    const value = JSON.stringify(rec)
    if (last === undefined) {
      const res = await lease.put(key).value(value).options(deadline).exec()
      this.#mine.set(id, Number(res.header.revision))
      return
    }
    const res = await this.#client
      .if(key, 'Mod', '==', last)
      .then(lease.put(key).value(value))
      .options(deadline)
      .commit()
    if (res.succeeded) this.#mine.set(id, Number(res.header.revision))
  }
}
