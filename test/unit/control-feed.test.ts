/**
 * A follower's feed to the leader (control/feed.ts) against a real HTTP server standing for the
 * leader: an ack taken while no leader is known reaches the leader once one is; a replayed registration
 * carries the revision last acked and never a release change (`changedFrom`) the follower took in; every
 * call names the replica that forwarded it; a leader that is this replica gets nothing.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import pino from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import type { RegisterRequest } from '../../config/wire.ts'
import { FORWARDED_BY, LeaderFeed } from '../../control/feed.ts'
import type { Leadership, LeadView } from '../../control/leader.ts'
import { until } from '../helpers/control.ts'

const log = pino({ level: 'silent' })

interface Got {
  path: string
  by: string | undefined
  body: Record<string, unknown>
}

let server: Server | null = null
afterEach(async () => {
  await new Promise((r) => server?.close(r))
  server = null
})

/** A leader that records every call; `unknown` proxies get 404 on their first non-register call. */
async function leader(unknown = false): Promise<{ url: string; got: Got[] }> {
  const got: Got[] = []
  let known = !unknown
  server = createServer(async (req: IncomingMessage, res) => {
    let text = ''
    for await (const chunk of req) text += chunk
    const path = req.url ?? ''
    got.push({ path, by: req.headers[FORWARDED_BY] as string | undefined, body: JSON.parse(text) })
    if (path.endsWith('/register')) {
      known = true
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"revision":0,"routes":{}}')
    } else if (!known) res.writeHead(404).end()
    else res.writeHead(204).end()
  })
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, got }
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

const registration = (appliedRevision: number): RegisterRequest => ({
  id: 'p1',
  appliedRevision,
  routes: [
    {
      name: 'shop',
      stable: { url: 'http://s', release: 'v2' },
      canary: null,
      shadow: null,
      canaryWeight: 0,
      changedFrom: { stable: { url: 'http://s', release: 'v1' }, canary: null },
    },
  ],
})

const report = { revision: 7, intervalMs: 250, routes: {} }

describe('the leader feed', () => {
  it('an ack taken while no leader is known is sent with the next report once one is', async () => {
    const { url, got } = await leader()
    const l = lead()
    const feed = new LeaderFeed(l, log, () => true)
    feed.register(registration(3), 'Bearer t')
    feed.ack('p1', { revision: 7, error: null })
    l.set({ id: 'other', url })
    feed.report('p1', report)
    await until(async () => got.length >= 2)
    expect(got.map((g) => [g.path, g.body.revision])).toEqual([
      ['/v1/proxies/p1/ack', 7],
      ['/v1/proxies/p1/report', 7],
    ])
    expect(got.every((g) => g.by === 'me')).toBe(true)
    // Delivered: the reports that follow do not send it again.
    await until(async () => {
      feed.report('p1', report)
      return got.length >= 3
    })
    expect(got.slice(2).every((g) => g.path === '/v1/proxies/p1/report')).toBe(true)
  })

  it('a leader that does not know the proxy is sent its registration with the last ack, and no changedFrom', async () => {
    const { url, got } = await leader(true)
    const l = lead()
    l.set({ id: 'other', url })
    const feed = new LeaderFeed(l, log, () => true)
    feed.register(registration(3), 'Bearer t')
    await until(async () => got.length >= 1)
    expect(got[0]!.body).toMatchObject({ appliedRevision: 3 })
    expect((got[0]!.body.routes as object[])[0]).not.toHaveProperty('changedFrom')
    feed.ack('p1', { revision: 9, error: null })
    await until(async () => got.length >= 2)
    // The leader (just elected, say) forgets it: the next report brings the registration again.
    got.length = 0
    server!.removeAllListeners('request')
    let first = true
    server!.on('request', async (req: IncomingMessage, res) => {
      let text = ''
      for await (const chunk of req) text += chunk
      got.push({ path: req.url ?? '', by: undefined, body: JSON.parse(text) })
      if (req.url?.endsWith('/register'))
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"revision":9,"routes":{}}')
      else if (first) {
        first = false
        res.writeHead(404).end()
      } else res.writeHead(204).end()
    })
    feed.report('p1', report)
    await until(async () => got.length >= 3)
    expect(got.map((g) => g.path)).toEqual([
      '/v1/proxies/p1/report',
      '/v1/proxies/register',
      '/v1/proxies/p1/report',
    ])
    expect(got[1]!.body).toMatchObject({ id: 'p1', appliedRevision: 9 })
    expect((got[1]!.body.routes as object[])[0]).not.toHaveProperty('changedFrom')
  })

  it('sends nothing while the leader named is this replica itself', async () => {
    const { url, got } = await leader()
    const l = lead()
    l.set({ id: 'me', url })
    const feed = new LeaderFeed(l, log, () => true)
    feed.register(registration(3), 'Bearer t')
    feed.ack('p1', { revision: 4, error: null })
    feed.report('p1', report)
    // The positive marker: the same calls once another leads do arrive, and they are the first.
    l.set({ id: 'other', url })
    feed.report('p1', report)
    await until(async () => got.length >= 2)
    expect(got.map((g) => [g.path, g.body.revision])).toEqual([
      ['/v1/proxies/p1/ack', 4],
      ['/v1/proxies/p1/report', 7],
    ])
  })
})
