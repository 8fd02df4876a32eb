/**
 * undici's Pool, loaded alone. `import { Pool } from 'undici'` runs undici's index, which loads all of
 * undici (fetch, WebSocket, EventSource, the cache and mock agents, every interceptor): 4.9 MiB more
 * anonymous memory and 2.4 MiB more JS heap at start than Pool and its Client (measured 2026-12-07, Node
 * 24.21, undici 8.12; README "Memory"). The proxy's data plane only dispatches (`pool.dispatch`), which
 * Pool has itself; the index's extras (`request`, `stream`, … mixed into Dispatcher.prototype) are not
 * there, so the control link, which calls `pool.request`, imports 'undici' (it is loaded only with
 * --control).
 */
import { createRequire } from 'node:module'
import type * as undici from 'undici'

const require = createRequire(import.meta.url)

export const Pool: typeof undici.Pool = require('undici/lib/dispatcher/pool.js')
export type Pool = undici.Pool
export declare namespace Pool {
  export type Options = undici.Pool.Options
}

/** undici's connector (Pool's `connect` option as a function), from the module Pool itself loads. */
export const buildConnector: typeof undici.buildConnector = require('undici/lib/core/connect.js')
export declare namespace buildConnector {
  export type BuildOptions = undici.buildConnector.BuildOptions
  export type connector = undici.buildConnector.connector
}
