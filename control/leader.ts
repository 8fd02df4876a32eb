/**
 * Which control replica leads (etcd): an election with etcd3's Election API under
 * `<prefix>election/control/`, on a lease of `store.etcd.leaseTtl` seconds. Only the leader runs the
 * rollout clock (steps, analysis decisions, fuses), and with it the smoke checks, Prometheus evaluations
 * and webhooks the clock's changes bring. Its clock's writes carry a Fence (the election key and its
 * create revision), so a deposed leader's write fails in etcd and writes nothing.
 *
 * The lead is given up at once, before etcd says so, when the lease was not renewed within its TTL (a
 * paused process, a partition), when the keepalive reports it lost, or when the key is deleted: the
 * clock stops, then this replica campaigns again (behind the new leader). A single control on the state
 * dir has no election and always leads (SOLE).
 */
import { hostname } from 'node:os'
import type { Campaign, Etcd3, Lease, Watcher } from 'etcd3'
import type { Logger } from 'pino'
import type { Fence } from './control-store.ts'
import type { Lead } from './engine.ts'

/** The first pause before a new campaign, and the longest. */
const RETRY_MS = 200
const RETRY_MAX_MS = 5000

export type Role = 'leader' | 'follower' | 'single'

/** What GET /v1/control says and veer_control_leader shows. */
export interface LeadView {
  readonly replica: string
  readonly role: Role
  /** The leader's id and API URL; null while none is elected. */
  readonly leader: { readonly id: string; readonly url: string } | null
}

export interface Leadership extends Lead {
  view(): LeadView
  close(): Promise<void>
}

/** The one control of a state dir: it leads, and its writes need no fence. */
export const SOLE: Leadership = {
  leading: () => true,
  fence: () => null,
  view: () => ({ replica: hostname(), role: 'single', leader: null }),
  close: async () => {},
}

export interface ElectionHooks {
  /** This replica leads now: start the clock. */
  elected(): void
  /** It no longer does: stop the clock at once. */
  deposed(why: string): void
}

/** This process's replica id: host, pid and start time (a restarted replica is a new candidate). */
export const replicaId = (): string => `${hostname()}-${process.pid}-${Date.now().toString(36)}`

export class EtcdLeadership implements Leadership {
  readonly #client: Etcd3
  readonly #ttlMs: number
  readonly #ttl: number
  #me: { readonly id: string; readonly url: string }
  readonly #log: Logger
  readonly #hooks: ElectionHooks
  readonly #election
  #campaign: Campaign | null = null
  #fence: Fence | null = null
  /** The lease is certainly alive until then: a keepalive sent before it was answered. */
  #validUntil = 0
  #expiry: NodeJS.Timeout | null = null
  #keyWatch: Watcher | null = null
  #observer: Watcher | null = null
  readonly #electionPrefix: string
  #leader: { id: string; url: string } | null = null
  #closed = false
  /** The pause before campaigning again: doubles while campaigns fail (etcd away), 200 ms once elected. */
  #retryMs = RETRY_MS

  constructor(client: Etcd3, prefix: string, ttl: number, id: string, log: Logger, hooks: ElectionHooks) {
    this.#client = client
    this.#ttl = ttl
    this.#ttlMs = ttl * 1000
    this.#me = { id, url: '' }
    this.#log = log
    this.#hooks = hooks
    this.#election = client.namespace(prefix).election('control', ttl)
    this.#electionPrefix = `${prefix}election/control/`
  }

  /** Campaign, announcing `url` (this replica's API) as the leader's address. */
  start(url: string): void {
    this.#me = { id: this.#me.id, url }
    this.#campaignNow()
    void this.#observe()
  }

  leading(): boolean {
    return this.#fence !== null && Date.now() < this.#validUntil
  }

  fence(): Fence | null {
    return this.leading() ? this.#fence : null
  }

  view(): LeadView {
    const leading = this.leading()
    // Just deposed, the observer may not have seen its key go yet: it is not the leader all the same.
    const leader = !leading && this.#leader?.id === this.#me.id ? null : this.#leader
    return { replica: this.#me.id, role: leading ? 'leader' : 'follower', leader }
  }

  async close(): Promise<void> {
    this.#closed = true
    const led = this.#fence !== null
    this.#stepDown()
    await this.#observer?.cancel().catch(() => {})
    if (this.#expiry !== null) clearTimeout(this.#expiry)
    // Resigning revokes the lease: the others elect a new leader at once instead of after the TTL.
    // Bounded: with etcd away the lease simply runs out.
    await Promise.race([
      this.#campaign?.resign().catch(() => {}),
      new Promise((r) => setTimeout(r, 1000).unref()),
    ])
    if (led) this.#log.info({ replica: this.#me.id }, 'resigned the lead')
    this.#client.close()
  }

  #campaignNow(): void {
    if (this.#closed) return
    const campaign = this.#election.campaign(JSON.stringify(this.#me))
    this.#campaign = campaign
    this.#validUntil = Date.now() + this.#ttlMs
    // The campaign's lease is private in etcd3; its keepalives tell how long the lead is certain.
    // Without it (another etcd3), the fence and the campaign's error are all there is.
    const lease = (campaign as unknown as { lease?: Lease }).lease
    if (lease === undefined) this.#validUntil = Number.POSITIVE_INFINITY
    let fired = Date.now()
    lease?.on('keepaliveFired', () => {
      fired = Date.now()
    })
    lease?.on('keepaliveSucceeded', () => {
      this.#validUntil = fired + this.#ttlMs
      this.#arm()
    })
    campaign.on('error', (err: Error) => {
      if (this.#campaign !== campaign) return
      this.#lost(`campaign failed: ${err.message}`)
    })
    campaign.on('elected', () => void this.#elected(campaign))
  }

  async #elected(campaign: Campaign): Promise<void> {
    try {
      const key = await campaign.getCampaignKey()
      const res = await this.#client.get(key).exec()
      const kv = res.kvs[0]
      if (this.#campaign !== campaign || this.#closed) return
      if (kv === undefined) return this.#lost('the election key vanished as it was elected')
      this.#fence = { key, createRevision: Number(kv.create_revision) }
      const watcher = await this.#client
        .watch()
        .key(key)
        .startRevision(String(Number(res.header.revision) + 1))
        .create()
      this.#keyWatch = watcher
      watcher.on('delete', () => {
        if (this.#campaign === campaign) this.#lost('the election key was deleted')
      })
      if (this.#campaign !== campaign) return void watcher.cancel().catch(() => {})
      this.#arm()
      this.#retryMs = RETRY_MS
      this.#log.info(
        { replica: this.#me.id, key, leaseTtl: this.#ttl, createRevision: this.#fence.createRevision },
        'elected leader: running the rollout clock',
      )
      this.#hooks.elected()
    } catch (err) {
      if (this.#campaign === campaign) this.#lost(`cannot read the election key: ${(err as Error).message}`)
    }
  }

  /** Give up the lead when the lease has not been renewed in time, before etcd's own expiry. */
  #arm(): void {
    if (this.#fence === null || this.#validUntil === Number.POSITIVE_INFINITY) return
    if (this.#expiry !== null) clearTimeout(this.#expiry)
    this.#expiry = setTimeout(
      () => this.#lost(`the lease was not renewed within ${this.#ttl} s`),
      Math.max(0, this.#validUntil - Date.now()),
    )
    this.#expiry.unref()
  }

  #stepDown(): boolean {
    const led = this.#fence !== null
    this.#fence = null
    if (this.#expiry !== null) clearTimeout(this.#expiry)
    this.#expiry = null
    void this.#keyWatch?.cancel().catch(() => {})
    this.#keyWatch = null
    return led
  }

  /** The lead (or the candidacy) is lost: stop the clock, drop the campaign, campaign again. */
  #lost(why: string): void {
    const campaign = this.#campaign
    this.#campaign = null
    if (this.#stepDown()) {
      this.#log.warn({ replica: this.#me.id, why }, 'lost the lead: rollout clock stopped')
      this.#hooks.deposed(why)
    } else if (this.#retryMs === RETRY_MS)
      this.#log.warn({ replica: this.#me.id, why }, 'election campaign failed; campaigning again')
    else this.#log.debug({ replica: this.#me.id, why }, 'election campaign failed again')
    void campaign?.resign().catch(() => {})
    if (this.#closed) return
    setTimeout(() => this.#campaignNow(), this.#retryMs).unref()
    this.#retryMs = Math.min(this.#retryMs * 2, RETRY_MAX_MS)
  }

  /**
   * Follow who leads (GET /v1/control): the oldest key under the election, read again on every change
   * there (a watch on the election's keys); only the newest read counts. (etcd3's ElectionObserver,
   * tried first, went on naming a leader replaced more than 10 s before in a loaded test run.)
   */
  async #observe(): Promise<void> {
    let reads = 0
    const refresh = async () => {
      const n = ++reads
      try {
        const value = await this.#election.leader()
        if (n === reads) this.#leader = value === undefined ? null : parseLeader(value)
      } catch {}
    }
    try {
      const watcher = await this.#client.watch().prefix(this.#electionPrefix).create()
      this.#observer = watcher
      watcher.on('data', () => void refresh())
      watcher.on('connected', () => void refresh())
      if (this.#closed) await watcher.cancel()
    } catch {}
    await refresh()
  }
}

function parseLeader(value: string): { id: string; url: string } | null {
  try {
    const v = JSON.parse(value) as { id?: unknown; url?: unknown }
    return typeof v.id === 'string' && typeof v.url === 'string' ? { id: v.id, url: v.url } : null
  } catch {
    return null
  }
}
