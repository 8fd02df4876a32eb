/**
 * Start a real `veer control` process (bin/veer.js) on an ephemeral port with a fresh state dir, call
 * its API, run the operator CLI against it, and play a proxy over the wire protocol with plain HTTP.
 */
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AnnouncedRoute, FuseReport, RegisterResponse } from '../../config/wire.ts'
import { type LoggedProcess, spawnVeer, started } from './process.ts'
import { runVeer, startVeer, type VeerProcess, writeConfig } from './veer.ts'

export const TOKENS = {
  operator: 'op-token-0123456789abcdef',
  operator2: 'op-token-rotated-0123456789',
  read: 'read-token-0123456789abcdef',
  proxy: 'proxy-token-0123456789abcdef',
} as const

export function tempDir(prefix = 'veer-control-'): string {
  return mkdtempSync(join(tmpdir(), prefix))
}

/** A `veer proxy` from `configFile` that follows `control` (proxy token in `tokenFile`), with its own state dir. */
export function startLinkedProxy(
  configFile: string,
  control: ControlProcess,
  tokenFile: string,
): Promise<VeerProcess> {
  return startVeer([
    '--config',
    configFile,
    '--control',
    control.url,
    '--token-file',
    tokenFile,
    '--state-dir',
    tempDir(),
  ])
}

/**
 * Control and one proxy following it, with route `shop` over `stable` (release v1) and `canary` (v2),
 * `analysis` its analysis settings and `route` more of its keys (a shadow); resolves once control
 * knows the route. The caller stops both.
 */
export async function startLinkedBed(
  stable: { readonly url: string },
  canary: { readonly url: string },
  analysis: Record<string, unknown> = {},
  env: Record<string, string> = {},
  route: Record<string, unknown> = {},
): Promise<{ control: ControlProcess; proxy: VeerProcess }> {
  const control = await startControl({ env })
  const tokenFile = join(tempDir(), 'proxy-token')
  writeFileSync(tokenFile, `${TOKENS.proxy}\n`)
  const file = writeConfig({
    log: { access: false },
    shutdown: { grace: 0 },
    routes: [
      {
        name: 'shop',
        stable: { url: stable.url, release: 'v1' },
        canary: { url: canary.url, release: 'v2' },
        analysis,
        ...route,
      },
    ],
  })
  let proxy: VeerProcess | null = null
  try {
    proxy = await startLinkedProxy(file, control, tokenFile)
    await until(async () => (await control.api('GET', '/v1/routes/shop')).status === 200)
    return { control, proxy }
  } catch (err) {
    await Promise.all([control.stop('SIGKILL'), proxy?.stop('SIGKILL')])
    throw err
  }
}

/** A control config file with `store.etcd` (endpoints comma-separated). */
export function etcdConfig(etcd: EtcdOptions): string {
  const file = join(tempDir(), 'control.json')
  const { endpoints, ...rest } = etcd
  writeFileSync(file, JSON.stringify({ store: { etcd: { endpoints: endpoints.split(','), ...rest } } }))
  return file
}

/** A token file with an operator (alice), a rotated second operator (bob), a reader and a proxy. */
export function writeTokenFile(dir = tempDir()): string {
  const file = join(dir, 'tokens')
  writeFileSync(
    file,
    [
      '# token role name',
      `${TOKENS.operator} operator alice`,
      `${TOKENS.operator2} operator bob`,
      `${TOKENS.read} read dashboard`,
      `${TOKENS.proxy} proxy edge`,
      '',
    ].join('\n'),
  )
  return file
}

/** Fast knobs for tests: short long-polls, no start-up grace, quick webhook retries. */
export const TEST_ENV = {
  VEER_CONTROL_WATCH_MS: '2000',
  VEER_CONTROL_GRACE_MS: '0',
  VEER_CONTROL_WEBHOOK_BACKOFF_MS: '50',
  VEER_CONTROL_TICK_MS: '50',
}

export interface Reply {
  status: number
  headers: Headers
  text: string
  // biome-ignore lint/suspicious/noExplicitAny: a test reads replies field by field; its assertions are the types
  json: any
}

export interface ControlProcess extends LoggedProcess {
  readonly url: string
  readonly stateDir: string
  readonly tokenFile: string
  /** Call the API: JSON body (or a raw string), operator token unless `token` says otherwise (null: none). */
  api(
    method: string,
    path: string,
    opts?: { token?: string | null; body?: unknown; raw?: string; headers?: Record<string, string> },
  ): Promise<Reply>
}

export interface ControlOptions {
  stateDir?: string
  tokenFile?: string
  /** HOST:PORT; default 127.0.0.1:0 (a restart on the same port takes the port it had). */
  listen?: string
  args?: string[]
  env?: Record<string, string>
  /** Keep the state in etcd (store.etcd in a config file) instead of the state dir. */
  etcd?: EtcdOptions
}

export interface EtcdOptions {
  /** Comma-separated. */
  readonly endpoints: string
  readonly prefix?: string
  /** store.etcd.leaseTtl, seconds. */
  readonly leaseTtl?: number
  readonly tls?: { readonly ca?: string; readonly cert?: string; readonly key?: string }
}

export async function startControl(opts: ControlOptions = {}): Promise<ControlProcess> {
  const stateDir = opts.stateDir ?? tempDir()
  const tokenFile = opts.tokenFile ?? writeTokenFile()
  const args = [
    'control',
    '--listen',
    opts.listen ?? '127.0.0.1:0',
    ...(opts.etcd === undefined ? ['--state-dir', stateDir] : ['--config', etcdConfig(opts.etcd)]),
    '--token-file',
    tokenFile,
    ...(opts.args ?? []),
  ]
  const p = spawnVeer(args, { ...process.env, VEER_TOKEN: '', ...TEST_ENV, ...opts.env })
  const line = await started(p, 'veer control started')
  const url = String(line.url)
  return {
    ...p,
    url,
    stateDir,
    tokenFile,
    api: async (method, path, o = {}) => {
      const token = o.token === undefined ? TOKENS.operator : o.token
      const headers: Record<string, string> = { ...o.headers }
      if (token !== null) headers.authorization = `Bearer ${token}`
      let body: string | undefined
      if (o.raw !== undefined) body = o.raw
      else if (o.body !== undefined) {
        body = JSON.stringify(o.body)
        headers['content-type'] ??= 'application/json'
      }
      const res = await fetch(`${url}${path}`, { method, headers, body })
      const text = await res.text()
      let json: unknown = null
      try {
        json = text === '' ? null : JSON.parse(text)
      } catch {}
      return { status: res.status, headers: res.headers, text, json }
    },
  }
}

export interface CliResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Run `veer ARGS` (the operator CLI) to completion. */
export function runCli(
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 15_000,
): Promise<CliResult> {
  return runVeer(args, timeoutMs, { VEER_TOKEN: '', ...env })
}

/** A proxy played with plain HTTP calls of the wire protocol (config/wire.ts). */
export class FakeProxy {
  readonly id: string
  readonly control: ControlProcess
  readonly token: string
  routes: AnnouncedRoute[]

  constructor(control: ControlProcess, id: string, routes: AnnouncedRoute[], token: string = TOKENS.proxy) {
    this.control = control
    this.id = id
    this.routes = routes
    this.token = token
  }

  async register(appliedRevision = 0): Promise<RegisterResponse> {
    const r = await this.control.api('POST', '/v1/proxies/register', {
      token: this.token,
      body: { id: this.id, routes: this.routes, appliedRevision },
    })
    if (r.status !== 200) throw new Error(`register: ${r.status} ${r.text}`)
    return r.json
  }

  /** Long-poll; null on 204. */
  async watch(revision: number): Promise<RegisterResponse | null> {
    const r = await this.control.api('GET', `/v1/proxies/${this.id}/watch?revision=${revision}`, {
      token: this.token,
    })
    if (r.status === 204) return null
    if (r.status !== 200) throw new Error(`watch: ${r.status} ${r.text}`)
    return r.json
  }

  async ack(revision: number, error: string | null = null): Promise<number> {
    return (
      await this.control.api('POST', `/v1/proxies/${this.id}/ack`, {
        token: this.token,
        body: { revision, error },
      })
    ).status
  }

  /** A report of healthy traffic on every route; `fuses` adds a tripped fuse to some. */
  async report(revision: number, fuses: Record<string, FuseReport> = {}): Promise<number> {
    const zero = { requests: 10, errors: 0, latency: [0, 0, 10] }
    const routes = Object.fromEntries(
      this.routes.map((r) => [
        r.name,
        { stable: zero, canary: zero, ...(fuses[r.name] && { fuse: fuses[r.name] }) },
      ]),
    )
    return (
      await this.control.api('POST', `/v1/proxies/${this.id}/report`, {
        token: this.token,
        body: { revision, intervalMs: 1000, routes },
      })
    ).status
  }
}

export function announced(name: string, canaryWeight = 0, canary = true): AnnouncedRoute {
  return {
    name,
    stable: { url: 'http://127.0.0.1:3001', release: 'v1' },
    canary: canary ? { url: 'http://127.0.0.1:3002', release: 'v2' } : null,
    shadow: null,
    canaryWeight,
  }
}

/** The release pair control's weights for an `announced` route are for. */
export const pairOf = (a: AnnouncedRoute) => ({ stable: a.stable, canary: a.canary })

/** For `until` only: a test waits for what it expects, never for time. */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Poll `fn` until it returns a truthy value (or throw after `ms`). */
export async function until<T>(fn: () => Promise<T> | T, ms = 10_000, every = 25): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms`)
    await sleep(every)
  }
}

export interface EventFrame {
  readonly event: string
  readonly id: string | null
  // biome-ignore lint/suspicious/noExplicitAny: a test reads events field by field
  readonly data: any
}

/** Follow control's GET /v1/events with `token`: every frame parsed as it arrives, until `close()`. */
export async function followEvents(
  control: ControlProcess,
  token: string = TOKENS.read,
): Promise<{ frames: EventFrame[]; close(): Promise<void> }> {
  const ac = new AbortController()
  const res = await fetch(`${control.url}/v1/events`, {
    headers: { authorization: `Bearer ${token}` },
    signal: ac.signal,
  })
  if (res.status !== 200) throw new Error(`GET /v1/events: ${res.status} ${await res.text()}`)
  const frames: EventFrame[] = []
  const reader = res.body!.getReader()
  const decoder = new TextDecoder()
  const pump = (async () => {
    let buffered = ''
    for (;;) {
      const { value, done } = await reader.read()
      if (done) return
      buffered += decoder.decode(value, { stream: true })
      for (let end = buffered.indexOf('\n\n'); end !== -1; end = buffered.indexOf('\n\n')) {
        const lines = buffered.slice(0, end).split('\n')
        buffered = buffered.slice(end + 2)
        const value = (name: string) => lines.find((l) => l.startsWith(`${name}: `))?.slice(name.length + 2)
        const data = value('data')
        if (data !== undefined)
          frames.push({ event: value('event') ?? 'message', id: value('id') ?? null, data: JSON.parse(data) })
      }
    }
  })().catch(() => {})
  return {
    frames,
    close: async () => {
      ac.abort()
      await pump
    },
  }
}

/**
 * PUT weights to `control` one after another until it dies or `stop()`: `acked()` is the newest
 * version it acknowledged. For kill -9 tests: every acknowledged write must survive the kill.
 */
export function keepWriting(control: ControlProcess): { acked(): number; stop(): Promise<void> } {
  let acked = 0
  let stopped = false
  const writer = (async () => {
    for (let n = 1; !stopped; n++) {
      try {
        const r = await control.api('PUT', '/v1/routes/shop/weights', { body: { canary: n % 101 } })
        if (r.status === 200) acked = r.json.version
      } catch {
        return
      }
    }
  })()
  return {
    acked: () => acked,
    stop: async () => {
      stopped = true
      await writer
    },
  }
}
