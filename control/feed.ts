/**
 * Followers feed the leader what their proxies report: each report a follower takes is also POSTed to
 * the leader's own report endpoint, with the proxy's token, so the leader's analysis and fuses see every
 * report while the long polls stay spread over the replicas. (Registrations and acks reach the leader
 * through etcd: control/proxy-book.ts.) At most one report in flight per proxy: one that finds the last
 * still out is dropped, as a proxy drops its own. A leader that does not know the proxy yet (its record
 * is on the way) answers 404, and the report is dropped: the next comes within 250 ms. Nothing here holds
 * up the follower's answer to its proxy.
 *
 * A forwarded call carries FORWARDED_BY (the sender's replica id): it is never forwarded again, and a
 * replica that receives its own id has been sent its own calls (its leader's advertised address is its
 * own): it refuses them (508) rather than loop, and this side logs why.
 */
import type { Logger } from 'pino'
import { request } from 'undici'
import type { ReportRequest } from '../config/wire.ts'
import type { Leadership } from './leader.ts'

/** The header of a call a follower forwards: its replica id. */
export const FORWARDED_BY = 'x-veer-forwarded-by'

/** A report the leader takes longer with is given up (the next one tries again). */
const CALL_MS = 2000

export class LeaderFeed {
  readonly #lead: Leadership
  readonly #log: Logger
  readonly #replica: string
  readonly #reporting = new Set<string>()
  #warned = false
  #looped = false

  constructor(lead: Leadership, log: Logger) {
    this.#lead = lead
    this.#log = log
    this.#replica = lead.view().replica
  }

  report(id: string, report: ReportRequest, auth: string): void {
    const url = this.#target()
    if (url === null || this.#reporting.has(id)) return
    this.#reporting.add(id)
    void this.#send(
      url,
      `/v1/proxies/${encodeURIComponent(id)}/report`,
      JSON.stringify(report),
      auth,
    ).finally(() => this.#reporting.delete(id))
  }

  /** The leader's URL while this replica follows another; null when it leads or none is known. */
  #target(): string | null {
    const v = this.#lead.view()
    return v.role === 'follower' && v.leader !== null && v.leader.url !== '' && v.leader.id !== this.#replica
      ? v.leader.url
      : null
  }

  async #send(url: string, path: string, body: string, auth: string, retry = true): Promise<void> {
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
        if (!this.#looped)
          this.#log.error(
            { leader: url },
            "the leader's advertised address leads back to this replica: its proxies' reports do not reach the leader; set store.etcd.advertise on every replica to its own address",
          )
        this.#looped = true
        return
      }
      this.#looped = false
      this.#warned = false
    } catch (err) {
      // A kept-alive connection the leader had just closed: a report is safe to send once more.
      const code = (err as NodeJS.ErrnoException).code
      if (retry && (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET'))
        return this.#send(url, path, body, auth, false)
      if (!this.#warned) {
        this.#warned = true
        this.#log.warn(
          { leader: url, reason: (err as Error).message },
          "cannot hand the leader its proxies' reports",
        )
      }
    }
  }
}
