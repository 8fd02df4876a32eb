/**
 * Control's core in process, for unit tests: a real store in a temp dir, the engine, its clock and the
 * proxy link, with one proxy `p` that registered route `shop` (stable v1, canary v2 at 0%).
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { RolloutClock } from '../../control/clock.ts'
import { Engine } from '../../control/engine.ts'
import { EventHub } from '../../control/events.ts'
import type { Judge } from '../../control/judge.ts'
import { ProxyLink } from '../../control/link.ts'
import { Notifier } from '../../control/notify.ts'
import { ProxyRegistry } from '../../control/proxies.ts'
import type { SmokeRunner } from '../../control/smoke.ts'
import { Store } from '../../control/store.ts'

export async function engineBed(opts: { log: Logger; judge: Judge; smoke?: SmokeRunner }) {
  const { log, judge, smoke } = opts
  const store = await Store.open(mkdtempSync(join(tmpdir(), 'veer-engine-')), log)
  const events = new EventHub()
  const proxies = new ProxyRegistry(10_000)
  const engine = new Engine({
    store,
    proxies,
    events,
    notifier: new Notifier([], log),
    log,
    fatal: (err) => {
      throw err
    },
    smoke,
  })
  const clock = new RolloutClock({ engine, proxies, judge, log, graceMs: 0 })
  const link = new ProxyLink({ engine, proxies, events, clock, log })
  await link.register(
    {
      id: 'p',
      appliedRevision: 0,
      routes: [
        {
          name: 'shop',
          stable: { url: 'http://s', release: 'v1' },
          canary: { url: 'http://c', release: 'v2' },
          shadow: null,
          canaryWeight: 0,
        },
      ],
    },
    { name: 'edge', role: 'proxy' },
  )
  return { store, events, proxies, engine, clock, link }
}
