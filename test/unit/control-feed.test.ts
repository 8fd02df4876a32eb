/**
 * A follower's feed to the leader (control/feed.ts) against a real HTTP server standing for the leader:
 * a report goes on with the proxy's token and the follower's replica id; nothing goes while the leader
 * named is this replica itself; at most one report per proxy is in flight.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import pino from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { FORWARDED_BY, LeaderFeed } from '../../control/feed.ts'
import type { Leadership, LeadView } from '../../control/leader.ts'
import { until } from '../helpers/control.ts'

const log = pino({ level: 'silent' })

interface Got {
  path: string
  by: string | undefined
  auth: string | undefined
  body: Record<string, unknown>
}

let server: Server | null = null
afterEach(async () => {
  await new Promise((r) => server?.close(r))
  server = null
})

/** A leader that records every call; answers are held while `hold` is set. */
async function leader() {
  const got: Got[] = []
  const held: ServerResponse[] = []
  const state = { hold: false }
  server = createServer(async (req: IncomingMessage, res) => {
    let text = ''
    for await (const chunk of req) text += chunk
    got.push({
      path: req.url ?? '',
      by: req.headers[FORWARDED_BY] as string | undefined,
      auth: req.headers.authorization,
      body: JSON.parse(text),
    })
    if (state.hold) held.push(res)
    else res.writeHead(204).end()
  })
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, got, held, state }
}

/** A leadership whose view the test sets. */
function lead(): Leadership & { set(v: LeadView['leader']): void } {
  let leader: LeadView['leader'] = null
  return {
    leading: () => false,
    fence: () => null,
    view: () => ({ replica: 'me', role: 'follower', leader }),
    close: async () => {},
    set(v) {
      leader = v
    },
  }
}

const report = (revision: number) => ({ revision, intervalMs: 250, routes: {} })

describe('the leader feed', () => {
  it("sends a report on with the proxy's token and this replica's id; none while this replica is the one named", async () => {
    const { url, got } = await leader()
    const l = lead()
    const feed = new LeaderFeed(l, log)
    feed.report('p1', report(1), 'Bearer t')
    l.set({ id: 'me', url })
    feed.report('p1', report(2), 'Bearer t')
    // The marker: once another leads, the next report arrives, and it is the first.
    l.set({ id: 'other', url })
    feed.report('p1', report(3), 'Bearer t')
    await until(() => got.length >= 1)
    expect(got).toEqual([{ path: '/v1/proxies/p1/report', by: 'me', auth: 'Bearer t', body: report(3) }])
  })

  it('keeps at most one report per proxy in flight', async () => {
    const { url, got, held, state } = await leader()
    const l = lead()
    l.set({ id: 'other', url })
    const feed = new LeaderFeed(l, log)
    state.hold = true
    feed.report('p1', report(1), 'Bearer t')
    await until(() => held.length === 1)
    feed.report('p1', report(2), 'Bearer t')
    feed.report('p2', report(2), 'Bearer t')
    await until(() => held.length === 2)
    state.hold = false
    for (const res of held) res.writeHead(204).end()
    // Answered: the next report of p1 goes again.
    await until(() => {
      feed.report('p1', report(4), 'Bearer t')
      return got.some((g) => g.body.revision === 4)
    })
    expect(got.map((g) => `${g.path} ${g.body.revision}`).slice(0, 2)).toEqual([
      '/v1/proxies/p1/report 1',
      '/v1/proxies/p2/report 2',
    ])
    expect(got.some((g) => g.body.revision === 2 && g.path.includes('p1'))).toBe(false)
  })
})
