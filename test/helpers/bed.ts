/**
 * What most integration files need, once: upstreams and proxies that are closed after each test, a
 * one-route proxy started from a config file (no shutdown grace, so stops are fast), and a bounded wait.
 */
import { afterEach } from 'vitest'
import { type Handler, startUpstream, type Upstream } from './upstream.ts'
import { startVeer, type VeerProcess, writeConfig } from './veer.ts'

export interface Bed {
  /** A real upstream on 127.0.0.1, closed after the test. */
  upstream(name: string, handler?: Handler): Promise<Upstream>
  /** A proxy with one route `default` (`route` merged in) and top-level settings `top`; stopped after the test. */
  proxy(
    route: Record<string, unknown>,
    top?: Record<string, unknown>,
    env?: NodeJS.ProcessEnv,
  ): Promise<VeerProcess>
}

/** Call at the top of a test file; `cleanup` runs first in each afterEach (raw sockets, extra servers). */
export function testBed(cleanup?: () => void | Promise<void>): Bed {
  let upstreams: Upstream[] = []
  let proxies: VeerProcess[] = []
  afterEach(async () => {
    await cleanup?.()
    await Promise.all(proxies.map((p) => p.stop()))
    proxies = []
    await Promise.all(upstreams.map((u) => u.close()))
    upstreams = []
  })
  return {
    async upstream(name, handler) {
      const u = await startUpstream(name, handler)
      upstreams.push(u)
      return u
    },
    async proxy(route, top = {}, env = {}) {
      const config = writeConfig({ shutdown: { grace: 0 }, ...top, routes: [{ name: 'default', ...route }] })
      const p = await startVeer(['--config', config], env)
      proxies.push(p)
      return p
    },
  }
}

/** Polls `test` every 10 ms until it holds; fails naming `what` after `ms`. */
export async function waitUntil(
  test: () => boolean | Promise<boolean>,
  what = 'condition',
  ms = 5000,
): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    if (await test()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}
