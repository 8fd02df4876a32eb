/**
 * A small real control server for the proxy link's tests: node:http on 127.0.0.1, speaking
 * config/wire.ts (register, long-poll watch, ack, report), checking what it gets with the wire's schemas
 * (a 400 as control's) and recording it. `setWeights` makes a new revision and answers the watches
 * waiting for one; `answerRaw` makes one control's schema would never let out. `stop()` drops every connection as a crashed
 * control would; `start()` comes back on the same port having forgotten its proxies (its routes and
 * revision persist, as a real control's durable state does), so a proxy's next watch is a 404.
 */
import { EventEmitter } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import { formatIssue } from '../../config/load.ts'
import { check, type Field } from '../../config/schema-kit.ts'
import {
  type AckRequest,
  ackRequest,
  type RegisterRequest,
  type RegisterResponse,
  type ReleasePair,
  type ReportRequest,
  type RouteWeights,
  registerRequest,
  reportRequest,
  samePair,
} from '../../config/wire.ts'

/**
 * setWeights for a route no proxy announced yet: the first pair announced takes it over with its weight
 * (as a real control's stored route would be for the release its proxies serve).
 */
const NO_PAIR: ReleasePair = { stable: { url: 'http://127.0.0.1:9', release: 'none' }, canary: null }

export interface Received<T> {
  /** performance.now() of this test process when the call arrived. */
  readonly at: number
  readonly id: string
  readonly body: T
}

type Kind = 'register' | 'ack' | 'report'

interface Watcher {
  readonly revision: number
  readonly res: ServerResponse
  readonly timer: NodeJS.Timeout
}

export class FakeControl {
  readonly token: string
  /** How long a watch is held before a 204 (control's is ~20 s). */
  holdMs: number
  /** While set, every call is answered with this status (e.g. 503), and nothing is recorded. */
  failWith: number | null = null
  revision = 1
  readonly routes: Record<string, RouteWeights> = {}
  readonly #pairs = new Map<string, ReleasePair>()
  readonly registers: Received<RegisterRequest>[] = []
  readonly acks: Received<AckRequest>[] = []
  readonly reports: Received<ReportRequest>[] = []
  watches = 0
  port = 0
  readonly #proxies = new Set<string>()
  readonly #watchers = new Set<Watcher>()
  readonly #sockets = new Set<Socket>()
  readonly #events = new EventEmitter()
  #server: Server | null = null
  /** While set, the JSON text of the routes of every register and watch answer (see answerRaw). */
  #rawRoutes: string | null = null

  constructor(token: string, holdMs: number) {
    this.token = token
    this.holdMs = holdMs
    this.#events.setMaxListeners(0)
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }

  get proxies(): ReadonlySet<string> {
    return this.#proxies
  }

  /** A new revision with these canary weights; wakes every watch. Returns the revision. */
  setWeights(weights: Record<string, number>): number {
    this.revision++
    this.#rawRoutes = null
    for (const [name, canary] of Object.entries(weights)) {
      const pair = this.routes[name]?.pair ?? this.#pairs.get(name) ?? NO_PAIR
      this.routes[name] = { version: (this.routes[name]?.version ?? 0) + 1, pair, canary }
    }
    for (const w of this.#watchers) if (this.revision > w.revision) this.#answer(w)
    return this.revision
  }

  /**
   * A new revision whose register and watch answers carry `routes`, JSON text sent as it is (a key
   * `__proto__` stays a key), until the next setWeights; wakes every watch. Returns the revision.
   */
  answerRaw(routes: string): number {
    this.revision++
    this.#rawRoutes = routes
    for (const w of this.#watchers) if (this.revision > w.revision) this.#answer(w)
    return this.revision
  }

  /** The first record of `kind` for which `test` holds, now or when it arrives. */
  waitFor<T extends Kind>(
    kind: T,
    test: (r: Received<KindBody[T]>) => boolean,
    ms = 5_000,
  ): Promise<Received<KindBody[T]>> {
    const list = this.#list(kind) as Received<KindBody[T]>[]
    const hit = list.find(test)
    if (hit) return Promise.resolve(hit)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#events.off(kind, on)
        reject(new Error(`no matching ${kind} within ${ms} ms`))
      }, ms)
      const on = (r: Received<KindBody[T]>) => {
        if (!test(r)) return
        clearTimeout(timer)
        this.#events.off(kind, on)
        resolve(r)
      }
      this.#events.on(kind, on)
    })
  }

  async start(): Promise<void> {
    const server = createServer((req, res) => this.#handle(req, res))
    server.on('connection', (s) => {
      this.#sockets.add(s)
      s.once('close', () => this.#sockets.delete(s))
    })
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve))
    this.port = (server.address() as AddressInfo).port
    this.#server = server
  }

  /** Forget the registered proxies but keep the connections: their next call is a 404. */
  forget(): void {
    this.#proxies.clear()
  }

  /** Gone at once, as a crash: open watches and keep-alive connections are cut; proxies are forgotten. */
  async stop(): Promise<void> {
    const server = this.#server
    if (server === null) return
    this.#server = null
    for (const w of this.#watchers) clearTimeout(w.timer)
    this.#watchers.clear()
    this.#proxies.clear()
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    for (const s of this.#sockets) s.destroy()
    await closed
  }

  #list(kind: Kind): Received<unknown>[] {
    return kind === 'register' ? this.registers : kind === 'ack' ? this.acks : this.reports
  }

  #snapshot(res: ServerResponse): void {
    if (this.#rawRoutes !== null)
      return send(res, 200, null, `{"revision":${this.revision},"routes":${this.#rawRoutes}}`)
    const answer: RegisterResponse = { revision: this.revision, routes: this.routes }
    send(res, 200, answer)
  }

  #answer(w: Watcher): void {
    clearTimeout(w.timer)
    this.#watchers.delete(w)
    this.#snapshot(w.res)
  }

  #record<T extends Kind>(kind: T, id: string, body: KindBody[T]): void {
    const r: Received<KindBody[T]> = { at: performance.now(), id, body }
    ;(this.#list(kind) as Received<KindBody[T]>[]).push(r)
    this.#events.emit(kind, r)
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const c of req) chunks.push(c as Buffer)
    if (this.failWith !== null)
      return send(res, this.failWith, { error: 'unavailable', message: 'test says so' })
    if (req.headers.authorization !== `Bearer ${this.token}`)
      return send(res, 401, { error: 'unauthorized', message: 'bad token' })
    const url = new URL(req.url ?? '/', 'http://control')
    const raw: unknown = chunks.length > 0 ? JSON.parse(Buffer.concat(chunks).toString()) : null
    /** The body checked as control checks it; null (and a 400 sent) when it does not pass. */
    const body = <T>(field: Field<T>): T | null => {
      const checked = check(field, raw ?? {})
      if (checked.ok) return checked.value
      send(res, 400, { error: 'invalid_body', message: checked.issues.map(formatIssue).join('; ') })
      return null
    }
    if (req.method === 'POST' && url.pathname === '/v1/proxies/register') {
      const reg = body(registerRequest)
      if (reg === null) return
      this.#proxies.add(reg.id)
      this.#record('register', reg.id, reg)
      let adopted = false
      for (const r of reg.routes) {
        // Its weights are for the pair last announced (a real control tells stale configs apart too).
        const pair = { stable: r.stable, canary: r.canary }
        this.#pairs.set(r.name, pair)
        const known = this.routes[r.name]
        if (known === undefined) {
          this.routes[r.name] = { version: 1, pair, canary: r.canaryWeight }
          adopted = true
        } else if (known.pair === NO_PAIR) {
          this.routes[r.name] = { ...known, pair }
        } else if (!samePair(known.pair, pair)) {
          this.routes[r.name] = { version: known.version + 1, pair, canary: r.canaryWeight }
          adopted = true
        }
      }
      if (adopted) this.revision++
      return this.#snapshot(res)
    }
    const m = /^\/v1\/proxies\/([^/]+)\/(watch|ack|report)$/.exec(url.pathname)
    if (m === null) return send(res, 404, { error: 'not_found', message: url.pathname })
    const id = decodeURIComponent(m[1]!)
    if (!this.#proxies.has(id)) return send(res, 404, { error: 'unknown_proxy', message: 'register first' })
    if (m[2] === 'watch' && req.method === 'GET') {
      this.watches++
      const revision = Number(url.searchParams.get('revision'))
      if (this.revision > revision) return this.#snapshot(res)
      const w: Watcher = {
        revision,
        res,
        timer: setTimeout(() => {
          this.#watchers.delete(w)
          send(res, 204, null)
        }, this.holdMs),
      }
      this.#watchers.add(w)
      res.once('close', () => {
        clearTimeout(w.timer)
        this.#watchers.delete(w)
      })
      return
    }
    if (req.method !== 'POST' || m[2] === 'watch')
      return send(res, 405, { error: 'method_not_allowed', message: req.method })
    if (m[2] === 'ack') {
      const ack = body(ackRequest)
      if (ack === null) return
      this.#record('ack', id, ack)
    } else {
      const report = body(reportRequest)
      if (report === null) return
      this.#record('report', id, report)
    }
    send(res, 204, null)
  }
}

interface KindBody {
  register: RegisterRequest
  ack: AckRequest
  report: ReportRequest
}

/** `body` as JSON, or `text` as it is when given; a null body and no text: no body. */
function send(res: ServerResponse, status: number, body: unknown, text?: string): void {
  if (res.writableEnded || res.destroyed) return
  if (body === null && text === undefined) {
    res.writeHead(status).end()
    return
  }
  text ??= JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

export async function startFakeControl(token = 'test-proxy-token', holdMs = 20_000): Promise<FakeControl> {
  const control = new FakeControl(token, holdMs)
  await control.start()
  return control
}
