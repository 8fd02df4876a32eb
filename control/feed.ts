/**
 * Followers feed the leader what their proxies tell them: each registration, ack and report a
 * follower takes is also POSTed to the leader's own wire endpoints, with the proxy's token. So the
 * leader's registry knows every proxy (a rollout step counts as applied once all of them acked) and its
 * analysis and fuses see every report, while the long polls stay spread over the replicas. The cost is
 * bounded by the proxies': at most one report in flight per proxy (one that finds the last still out is
 * dropped, as a proxy drops its own), acks and registrations in order per proxy. A leader that does not
 * know a proxy yet (it was just elected) answers 404: the proxy's last registration is sent, then the
 * call again. Nothing here holds up the follower's answer to its proxy.
 */
import type { Logger } from 'pino'
import { request } from 'undici'
import type { AckRequest, RegisterRequest, ReportRequest } from '../config/wire.ts'
import type { Leadership } from './leader.ts'

/** A call to the leader that takes longer is given up (the next report or ack tries again). */
const CALL_MS = 2000
/** An ack of a revision the leader's watch has not brought yet (400) is tried again this often… */
const AHEAD_RETRY_MS = 50
/** …this many times. */
const AHEAD_TRIES = 40

export class LeaderFeed {
  readonly #lead: Leadership
  readonly #log: Logger
  /** Per proxy: its last registration and token, and its calls in order. */
  readonly #proxies = new Map<string, { register: string; auth: string; chain: Promise<void> }>()
  readonly #reporting = new Set<string>()
  #warned = false

  constructor(lead: Leadership, log: Logger) {
    this.#lead = lead
    this.#log = log
  }

  register(req: RegisterRequest, auth: string): void {
    const register = JSON.stringify(req)
    this.#proxies.set(req.id, {
      register,
      auth,
      chain: this.#proxies.get(req.id)?.chain ?? Promise.resolve(),
    })
    if (this.#target() === null) return
    this.#then(req.id, () => this.#send('/v1/proxies/register', register, auth).then(() => {}))
  }

  ack(id: string, ack: AckRequest): void {
    if (this.#target() === null) return
    const body = JSON.stringify(ack)
    this.#then(id, async () => {
      for (let i = 0; i < AHEAD_TRIES; i++) {
        const status = await this.#call(id, `/v1/proxies/${encodeURIComponent(id)}/ack`, body)
        if (status !== 400) return
        await new Promise((r) => setTimeout(r, AHEAD_RETRY_MS).unref())
      }
    })
  }

  report(id: string, report: ReportRequest): void {
    if (this.#target() === null || this.#reporting.has(id)) return
    this.#reporting.add(id)
    void this.#call(id, `/v1/proxies/${encodeURIComponent(id)}/report`, JSON.stringify(report)).finally(() =>
      this.#reporting.delete(id),
    )
  }

  /** The leader's URL while this replica follows one; null when it leads or none is known. */
  #target(): string | null {
    const v = this.#lead.view()
    return v.role === 'follower' && v.leader !== null && v.leader.url !== '' ? v.leader.url : null
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
    if ((await this.#send('/v1/proxies/register', p.register, p.auth)) !== 200) return 404
    return this.#send(path, body, p.auth)
  }

  async #send(path: string, body: string, auth: string): Promise<number> {
    const url = this.#target()
    if (url === null) return 0
    try {
      const res = await request(`${url}${path}`, {
        method: 'POST',
        headers: { authorization: auth, 'content-type': 'application/json' },
        body,
        headersTimeout: CALL_MS,
        bodyTimeout: CALL_MS,
      })
      await res.body.dump()
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
