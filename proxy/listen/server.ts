/**
 * The traffic listener: node:http → route → pick a version → the route's handler chain → undici.
 * Requests read one frozen route table (the one they started on); `swap()` installs the next whole.
 * The proxy's own refusals become answers in one place (respond.ts).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import type { Exchange, ExchangeHost } from '../chain/exchange.ts'
import { HttpExchange } from '../chain/exchange.ts'
import { UpgradeExchange } from '../chain/upgrade.ts'
import type { ProxyErrorCode } from '../errors.ts'
import type { RouteStates } from '../routes/states.ts'
import type { Backend, CompiledRoute, RouteTable } from '../routes/table.ts'
import { pickBackend } from '../split/pick.ts'
import { cookieValue } from '../split/sticky.ts'
import { pathOf, RequestHead } from './headers.ts'
import { sendError, sendErrorOnSocket } from './respond.ts'

export class ProxyServer implements ExchangeHost {
  readonly server: Server
  #table: RouteTable
  draining = false
  readonly #states: RouteStates
  readonly #log: Logger
  #inflight = 0
  #idle: (() => void) | null = null

  constructor(table: RouteTable, states: RouteStates) {
    this.#table = table
    this.#states = states
    this.#log = states.log
    const s = table.config.server
    this.server = createServer(
      {
        headersTimeout: s.headersTimeout,
        requestTimeout: s.requestTimeout,
        keepAliveTimeout: s.keepAliveTimeout,
        maxHeaderSize: s.maxHeaderBytes,
        // Checks for the two timeouts above run on this period (Node's default is 30 s, too coarse).
        connectionsCheckingInterval: Math.min(1000, Math.max(100, Math.floor(s.headersTimeout / 4))),
        insecureHTTPParser: false,
        // A missing Host is answered by the handler with the proxy's own JSON 400, not Node's bare one.
        requireHostHeader: false,
        joinDuplicateHeaders: false,
        // Only WebSocket upgrades are tunnelled; anything else (h2c) is served as a plain request.
        shouldUpgradeCallback: isWebSocketUpgrade,
      } as Parameters<typeof createServer>[0],
      this.#onRequest,
    )
    // No parser count limit (Node's answers a bare error): the head is bounded by maxHeaderBytes, and the
    // handler counts the fields to answer too_many_headers itself.
    this.server.maxHeadersCount = 0
    this.server.on('upgrade', this.#onUpgrade)
    this.server.on('clientError', onClientError)
    states.adopt(table)
  }

  get table(): RouteTable {
    return this.#table
  }

  /** Install a new snapshot; requests in flight finish on the table they started with. */
  swap(table: RouteTable): void {
    this.#table = table
    this.#states.adopt(table)
  }

  get inflight(): number {
    return this.#inflight
  }

  #onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const start = performance.now()
    const table = this.#table
    const head = new RequestHead()
    const refused = this.#check(table, req, head)
    if (refused !== null) return this.#reject(res, refused)
    const route = table.match(head.host, req.url!)
    if (route === null) return this.#reject(res, 'no_route')
    const backend = pickBackend(route, head.override, stickyKey(route, head))
    if (backend === null) return this.#reject(res, 'no_healthy_upstream')
    const upstream = backend.upstream
    if (upstream.inflight >= upstream.limit) return this.#reject(res, 'upstream_overloaded', backend)
    const socket = req.socket
    head.addForwarding(table.edge.policy, socket.remoteAddress ?? '', socket.remoteFamily ?? 'IPv4')
    head.setHost(route.preserveHost ? head.host : upstream.host)
    const ex = new HttpExchange(this, route, backend, head, req, res, start, head.hasBody ? req : null)
    // A tester who forced a version gets its answer, failure included; users get stable's instead.
    ex.forced = route.allowOverride && head.override !== undefined
    route.chain.request(ex, head)
  }

  #onUpgrade = (req: IncomingMessage, socket: Socket, first: Buffer): void => {
    const start = performance.now()
    const table = this.#table
    const head = new RequestHead()
    const refused = this.#check(table, req, head)
    if (refused !== null) return sendErrorOnSocket(socket, refused)
    const route = table.match(head.host, req.url!)
    if (route === null) return sendErrorOnSocket(socket, 'no_route')
    const backend = pickBackend(route, head.override, stickyKey(route, head))
    if (backend === null) return sendErrorOnSocket(socket, 'no_healthy_upstream')
    if (backend.upstream.inflight >= backend.upstream.limit)
      return sendErrorOnSocket(socket, 'upstream_overloaded')
    head.addForwarding(table.edge.policy, socket.remoteAddress ?? '', socket.remoteFamily ?? 'IPv4')
    head.setHost(route.preserveHost ? head.host : backend.upstream.host)
    const ex = new UpgradeExchange(this, route, backend, head, req, socket, first, start)
    route.upgradeChain.request(ex, head)
  }

  /** Parse the head into `head` and refuse what no upstream should see; null when the request may pass. */
  #check(table: RouteTable, req: IncomingMessage, head: RequestHead): ProxyErrorCode | null {
    if (req.url!.charCodeAt(0) !== 47 /* / */) return 'bad_request_target'
    const raw = req.rawHeaders
    if (raw.length > table.edge.maxHeaderFields * 2) return 'too_many_headers'
    head.parse(raw, table.edge.policy)
    if (head.hostCount > 1) return 'duplicate_host'
    if (head.hostCount === 0 && req.httpVersionMinor === 1) return 'missing_host'
    if (head.otherCoding) return 'unsupported_transfer_coding'
    return null
  }

  #reject(res: ServerResponse, code: ProxyErrorCode, backend?: Backend): void {
    sendError(res, code, this.draining ? ['connection', 'close'] : undefined)
    if (backend !== undefined) backend.state.metrics.record(0, 0)
    this.#log.debug({ error: code, method: res.req.method, path: pathOf(res.req.url ?? '') }, 'rejected')
  }

  started(): void {
    this.#inflight++
  }

  finished(_ex: Exchange): void {
    if (--this.#inflight === 0 && this.#idle !== null) this.#idle()
  }

  /** Resolves once no request is in flight. */
  idle(): Promise<void> {
    if (this.#inflight === 0) return Promise.resolve()
    return new Promise((resolve) => {
      this.#idle = () => {
        this.#idle = null
        resolve()
      }
    })
  }
}

/** The user's key for sticky assignment: the route's header, or its cookie. */
function stickyKey(route: CompiledRoute, head: RequestHead): string | undefined {
  if (route.stickyHeader !== null) return head.get(route.stickyHeader)
  if (route.stickyCookie !== null && head.cookie !== undefined)
    return cookieValue(head.cookie, route.stickyCookie)
  return undefined
}

function isWebSocketUpgrade(req: IncomingMessage): boolean {
  const upgrade = req.headers.upgrade
  return typeof upgrade === 'string' && upgrade.toLowerCase() === 'websocket'
}

function onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy()
    return
  }
  // A response already under way on this socket cannot be replaced by an error answer.
  if ((socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent) {
    socket.destroy()
    return
  }
  const code: ProxyErrorCode =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? 'headers_too_large'
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'HPE_HEADERS_TIMEOUT'
        ? 'request_timeout'
        : 'bad_request'
  sendErrorOnSocket(socket, code)
}
