/**
 * Followers feed the leader what their proxies tell them: each registration, ack and report a
 * follower takes is also POSTed to the leader's own wire endpoints, with the proxy's token. So the
 * leader's registry knows every proxy (a rollout step counts as applied once all of them acked) and its
 * analysis and fuses see every report, while the long polls stay spread over the replicas. The cost is
 * bounded by the proxies': at most one report in flight per proxy (one that finds the last still out is
 * dropped, as a proxy drops its own), registrations, acks and reports in order per proxy. A leader that does not
 * know a proxy yet (it was just elected) answers 404: the proxy's last registration is sent, then the
 * call again. Nothing here holds up the follower's answer to its proxy.
 *
 * A forwarded call carries FORWARDED_BY (the sender's replica id): it is never forwarded again, and a
 * replica that receives its own id has been sent its own calls (its leader's advertised address is its
 * own): it refuses them (508) rather than loop. The registration sent (and kept for replays) carries no
 * `changedFrom` (the follower has taken the release change in; the leader would make it twice) and the
 * revision last acked, so a new leader counts the proxy as in sync. An ack taken while no leader is known
 * is kept, and sent with the proxy's next report.
 */
import type { Logger } from 'pino'
import { request } from 'undici'
import type { AckRequest, AnnouncedRoute, RegisterRequest, ReportRequest } from '../config/wire.ts'
import type { Leadership } from './leader.ts'

/** The header of a call a follower forwards: its replica id. */
export const FORWARDED_BY = 'x-veer-forwarded-by'

/** A call to the leader that takes longer is given up (the next report or ack tries again). */
const CALL_MS = 2000
/** An ack of a revision the leader's watch has not brought yet (400) is tried again this often… */
const AHEAD_RETRY_MS = 50
/** …this many times. */
const AHEAD_TRIES = 40

interface Fed {
  /** The last registration, as the leader is sent it (replays included). */
  register: RegisterRequest
  auth: string
  chain: Promise<void>
  /** The newest revision the proxy acked (applied), and the newest the leader took. */
  acked: number
  delivered: number
}

export class LeaderFeed {
  readonly #lead: Leadership
  readonly #log: Logger
  readonly #replica: string
  /** Whether the local registry still knows a proxy: the others are dropped from here too. */
  readonly #known: (id: string) => boolean
  /** Per proxy: its last registration and token, its calls in order, and its acks. */
  readonly #proxies = new Map<string, Fed>()
  readonly #reporting = new Set<string>()
  #warned = false

  constructor(lead: Leadership, log: Logger, known: (id: string) => boolean) {
    this.#lead = lead
    this.#log = log
    this.#replica = lead.view().replica
    this.#known = known
  }

  register(req: RegisterRequest, auth: string): void {
    const old = this.#proxies.get(req.id)
    const acked = Math.max(req.appliedRevision, old?.acked ?? 0)
    const fed: Fed = {
      register: { ...req, routes: req.routes.map(withoutChange), appliedRevision: acked },
      auth,
      chain: old?.chain ?? Promise.resolve(),
      acked,
      delivered: old?.delivered ?? 0,
    }
    this.#proxies.set(req.id, fed)
    if (old === undefined) this.#prune()
    if (this.#target() === null) return
    const register = fed.register
    this.#then(req.id, async () => {
      if ((await this.#send('/v1/proxies/register', JSON.stringify(register), auth)) === 200)
        this.#took(fed, register.appliedRevision)
    })
  }

  ack(id: string, ack: AckRequest): void {
    const fed = this.#proxies.get(id)
    if (fed === undefined) return
    if (ack.error === null && ack.revision > fed.acked) {
      fed.acked = ack.revision
      fed.register = { ...fed.register, appliedRevision: ack.revision }
    }
    if (this.#target() === null) return
    this.#sendAck(id, fed, ack)
  }

  report(id: string, report: ReportRequest): void {
    const fed = this.#proxies.get(id)
    if (fed === undefined || this.#target() === null || this.#reporting.has(id)) return
    // An ack the leader has not taken (none was known when it came): sent now, before the report.
    if (fed.acked > fed.delivered) this.#sendAck(id, fed, { revision: fed.acked, error: null })
    this.#reporting.add(id)
    const body = JSON.stringify(report)
    this.#then(id, () =>
      this.#call(id, `/v1/proxies/${encodeURIComponent(id)}/report`, body)
        .then(() => {})
        .finally(() => this.#reporting.delete(id)),
    )
  }

  /** The leader's URL while this replica follows another; null when it leads or none is known. */
  #target(): string | null {
    const v = this.#lead.view()
    return v.role === 'follower' && v.leader !== null && v.leader.url !== '' && v.leader.id !== this.#replica
      ? v.leader.url
      : null
  }

  #sendAck(id: string, fed: Fed, ack: AckRequest): void {
    const body = JSON.stringify(ack)
    this.#then(id, async () => {
      for (let i = 0; i < AHEAD_TRIES; i++) {
        const status = await this.#call(id, `/v1/proxies/${encodeURIComponent(id)}/ack`, body)
        if (status === 204 && ack.error === null) this.#took(fed, ack.revision)
        if (status !== 400) return
        await new Promise((r) => setTimeout(r, AHEAD_RETRY_MS).unref())
      }
    })
  }

  #took(fed: Fed, revision: number): void {
    fed.delivered = Math.max(fed.delivered, revision)
  }

  /** Drop the proxies the local registry has forgotten (run as a new one comes). */
  #prune(): void {
    for (const id of this.#proxies.keys()) if (!this.#known(id)) this.#proxies.delete(id)
  }

  #then(id: string, fn: () => Promise<void>): void {
    const p = this.#proxies.get(id)
    if (p === undefined) return
    p.chain = p.chain.then(fn).catch(() => {})
  }

  /** A call about proxy `id`; a 404 (the leader does not know it): its registration, then the call again. */
  async #call(id: string, path: string, body: string): Promise<number> {
    const p = this.#proxies.get(id)
    if (p === undefined) return 0
    const status = await this.#send(path, body, p.auth)
    if (status !== 404) return status
    const register = p.register
    if ((await this.#send('/v1/proxies/register', JSON.stringify(register), p.auth)) !== 200) return 404
    this.#took(p, register.appliedRevision)
    return this.#send(path, body, p.auth)
  }

  async #send(path: string, body: string, auth: string): Promise<number> {
    const url = this.#target()
    if (url === null) return 0
    try {
      const res = await request(`${url}${path}`, {
        method: 'POST',
        headers: { authorization: auth, 'content-type': 'application/json', [FORWARDED_BY]: this.#replica },
        body,
        headersTimeout: CALL_MS,
        bodyTimeout: CALL_MS,
      })
      await res.body.dump()
      if (res.statusCode === 508) {
        this.#log.error(
          { leader: url },
          "the leader's advertised address leads back to this replica: its proxies' calls are not fed to the leader; set store.etcd.advertise on every replica to its own address",
        )
        return 0
      }
      this.#warned = false
      return res.statusCode
    } catch (err) {
      if (!this.#warned) {
        this.#warned = true
        this.#log.warn({ leader: url, reason: (err as Error).message }, 'cannot feed the leader its proxies')
      }
      return 0
    }
  }
}

/** A route as a replay announces it: the release change it marked was taken in already. */
function withoutChange(a: AnnouncedRoute): AnnouncedRoute {
  if (a.changedFrom === undefined) return a
  const { changedFrom: _, ...rest } = a
  return rest
}
