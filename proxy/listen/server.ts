/**
 * The traffic listener: node:http or node:http2 → route → pick a version → the route's handler chain →
 * undici. Both protocols take the same steps (`#admit`), only the exchange that writes the answer
 * differs. Requests read one frozen route table (the one they started on); `swap()` installs the next
 * whole. The proxy's own refusals become answers in one place (respond.ts).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import {
  createServer as createHttp2Server,
  type Http2Server,
  type IncomingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2'
import type { Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import type { Exchange, ExchangeHost } from '../chain/exchange.ts'
import { HttpExchange } from '../chain/exchange.ts'
import { isGrpcType } from '../chain/grpc.ts'
import { Http2Exchange, StreamBody } from '../chain/http2.ts'
import { UpgradeExchange } from '../chain/upgrade.ts'
import type { ProxyErrorCode } from '../errors.ts'
import type { RouteStates } from '../routes/states.ts'
import type { Backend, CompiledRoute, RouteTable } from '../routes/table.ts'
import { matchesCanary } from '../split/match.ts'
import { pickBackend } from '../split/pick.ts'
import { cookieValue } from '../split/sticky.ts'
import { pathOf, type ReceivedProtocol, RequestHead } from './headers.ts'
import { Listener } from './listener.ts'
import { normalizePath } from './path.ts'
import { sendError, sendErrorOnSocket, sendErrorOnStream, sendGrpcError } from './respond.ts'
import type { TlsMaterial } from './tls.ts'

/** HTTP/2 pseudo-header fields a request carries besides its regular ones (:method :scheme :authority :path). */
const PSEUDO_FIELDS = 4

export class ProxyServer implements ExchangeHost {
  readonly server: Server
  readonly http2: Http2Server
  /** The port: TLS or cleartext, HTTP/1.1 or HTTP/2 (listener.ts). */
  readonly listener: Listener
  #table: RouteTable
  #draining = false
  readonly #states: RouteStates
  readonly #log: Logger
  readonly #scheme: 'http' | 'https'
  #inflight = 0
  #idle: (() => void) | null = null
  /** What `#admit` chose, read by its caller right away (one request at a time; nothing allocated). */
  #route: CompiledRoute | null = null
  #backend: Backend | null = null

  /** `tls`: the certificates when the listener speaks TLS, null for cleartext. */
  constructor(table: RouteTable, states: RouteStates, tls: TlsMaterial | null = null) {
    this.#table = table
    this.#states = states
    this.#log = states.log
    this.#scheme = tls === null ? 'http' : 'https'
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
    // A tunnel is not a route's to give: CONNECT gets a clear 405 rather than a closed socket.
    this.server.on('connect', refuseConnect)
    this.server.on('clientError', onClientError)
    const h2 = s.http2
    this.http2 = createHttp2Server({
      settings: {
        maxConcurrentStreams: h2.maxConcurrentStreams,
        initialWindowSize: h2.initialWindowSize,
        maxHeaderListSize: s.maxHeaderBytes,
        enablePush: false,
      },
      // Past maxHeaders the handler answers too_many_headers itself; far past it nghttp2 refuses.
      maxHeaderListPairs: (s.maxHeaders + PSEUDO_FIELDS) * 2,
      maxSessionMemory: h2.maxSessionMemory,
      streamResetBurst: h2.resetBurst,
      streamResetRate: h2.resetRate,
    })
    this.http2.on('stream', this.#onStream)
    this.http2.on('session', (session) => {
      // The connection's window: room for several streams' windows at once.
      session.on('connect', () => session.setLocalWindowSize(h2.initialWindowSize * 4))
      session.on('error', () => session.destroy())
    })
    // An idle connection is closed with GOAWAY (a stream still open finishes first).
    this.http2.setTimeout(h2.idleTimeout)
    this.http2.on('timeout', (session: ServerHttp2Session) => session.close())
    this.listener = new Listener({
      http1: this.server,
      http2: this.http2,
      tls,
      clientCertificates: table.config.tls?.clientCA !== undefined,
      firstBytesTimeout: s.headersTimeout,
    })
    states.adopt(table)
  }

  get draining(): boolean {
    return this.#draining
  }

  /** From now on every HTTP/1.1 answer carries Connection: close and HTTP/2 connections get GOAWAY. */
  drain(): void {
    this.#draining = true
    this.listener.goAway()
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
    const head = new RequestHead()
    const refused = this.#admitMessage(head, req)
    if (refused !== null) return this.#reject(res, refused)
    const route = this.#route!
    const backend = this.#backend!
    const ex = new HttpExchange(this, route, backend, head, req, res, start, head.hasBody ? req : null)
    // A tester who forced a version gets its answer, failure included; users get stable's instead.
    ex.forced = route.allowOverride && head.override !== undefined
    route.chain.request(ex, head)
  }

  #onStream = (
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    _flags: number,
    raw: string[],
  ): void => {
    const start = performance.now()
    // A stream the client reset before this ran is gone already, session and all.
    const session = stream.session
    if (session === undefined || stream.destroyed) return
    // A reset with an error code is an 'error' on the stream; its 'close' ends the exchange.
    stream.on('error', ignore)
    // A connection that got its GOAWAY while draining still finishes the streams it had opened.
    if (this.#draining && !session.closed) session.close()
    if (headers[':method'] === 'CONNECT') return this.#rejectStream(stream, 'connect_not_supported', headers)
    const head = new RequestHead()
    const path = headers[':path']
    const socket = session.socket
    const refused = this.#admit(head, path ?? '', raw, '2', socket.remoteAddress, socket.remoteFamily)
    if (refused !== null) return this.#rejectStream(stream, refused, headers)
    const route = this.#route!
    const backend = this.#backend!
    // HTTP/2 frames the body itself: one follows unless the HEADERS frame ended the stream.
    const body = stream.endAfterHeaders ? null : new StreamBody(stream)
    head.hasBody = body !== null
    const ex = new Http2Exchange(
      this,
      route,
      backend,
      head,
      stream,
      headers[':method']!,
      head.target,
      start,
      body,
    )
    ex.forced = route.allowOverride && head.override !== undefined
    route.chain.request(ex, head)
  }

  #onUpgrade = (req: IncomingMessage, socket: Socket, first: Buffer): void => {
    const start = performance.now()
    const head = new RequestHead()
    const refused = this.#admitMessage(head, req)
    if (refused !== null) return sendErrorOnSocket(socket, refused)
    const route = this.#route!
    const ex = new UpgradeExchange(this, route, this.#backend!, head, socket, first, start)
    route.upgradeChain.request(ex, head)
  }

  /**
   * The steps every request takes before its chain: parse the head into `head`, refuse what no upstream
   * should see, match a route, pick a version, check its upstream has room, and add the forwarding
   * fields. Null when the request may pass (then `#route` and `#backend` hold the choice).
   * `received`: the request's HTTP version. HTTP/1.1 and HTTP/2 must name the host, HTTP/1.0 need not;
   * HTTP/2's pseudo-header fields do not count against maxHeaders.
   */
  #admit(
    head: RequestHead,
    url: string,
    raw: string[],
    received: ReceivedProtocol,
    peer: string | undefined,
    family: string | undefined,
  ): ProxyErrorCode | null {
    const table = this.#table
    if (url.charCodeAt(0) !== 47 /* / */) return 'bad_request_target'
    const pseudo = received === '2' ? PSEUDO_FIELDS : 0
    if (raw.length > (table.edge.maxHeaderFields + pseudo) * 2) return 'too_many_headers'
    const target = table.edge.normalizePath ? normalizePath(url) : url
    head.target = target
    head.parse(raw, table.edge.policy)
    if (head.hostCount > 1) return 'duplicate_host'
    if (head.hostCount === 0 && received !== '1.0') return 'missing_host'
    if (head.otherCoding) return 'unsupported_transfer_coding'
    const route = table.match(head.host, target)
    if (route === null) return 'no_route'
    const matches = route.canaryMatch
    const matched = matches !== null && matchesCanary(matches, head, target)
    const backend = pickBackend(route, head.override, stickyKey(route, head), matched)
    if (backend === null) return 'no_healthy_upstream'
    const upstream = backend.upstream
    if (upstream.inflight >= upstream.limit) {
      backend.state.metrics.record(0, 0)
      return 'upstream_overloaded'
    }
    head.addForwarding(table.edge.policy, peer ?? '', family ?? 'IPv4', this.#scheme, received)
    head.setHost(route.preserveHost ? head.host : upstream.host)
    this.#route = route
    this.#backend = backend
    return null
  }

  /** `#admit` for an HTTP/1.x request (a plain one or an upgrade). */
  #admitMessage(head: RequestHead, req: IncomingMessage): ProxyErrorCode | null {
    const socket = req.socket
    const received = req.httpVersionMinor === 1 ? '1.1' : '1.0'
    return this.#admit(head, req.url!, req.rawHeaders, received, socket.remoteAddress, socket.remoteFamily)
  }

  #reject(res: ServerResponse, code: ProxyErrorCode): void {
    sendError(res, code, this.#draining ? ['connection', 'close'] : undefined)
    this.#log.debug({ error: code, method: res.req.method, path: pathOf(res.req.url ?? '') }, 'rejected')
  }

  #rejectStream(stream: ServerHttp2Stream, code: ProxyErrorCode, headers: IncomingHttpHeaders): void {
    const type = headers['content-type']
    if (type !== undefined && isGrpcType(type)) sendGrpcError(stream, code)
    else sendErrorOnStream(stream, code)
    this.#log.debug(
      { error: code, method: headers[':method'], path: pathOf(headers[':path'] ?? '') },
      'rejected',
    )
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

function ignore(): void {}

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

function finishThenClose(socket: Socket, owed: ServerResponse): void {
  socket.pause()
  if (!owed.headersSent) {
    // node:http then sends Connection: close and ends the socket after the answer.
    owed.shouldKeepAlive = false
    return
  }
  owed.once('finish', () => socket.destroySoon())
}

function refuseConnect(_req: IncomingMessage, socket: Socket): void {
  sendErrorOnSocket(socket, 'connect_not_supported')
}

/** What node:http keeps on a socket: the answer being written on it, if any. */
type ServedSocket = Socket & { _httpMessage?: ServerResponse | null }

function onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy()
    return
  }
  const owed = (socket as ServedSocket)._httpMessage
  if (owed != null && !owed.writableFinished) {
    // Bytes that do not parse after a whole request (sent after its Connection: close, or a broken
    // pipelined one) do not cost the client the answer to it: read no more, answer, then close.
    if (owed.req.complete) return finishThenClose(socket, owed)
    // The request itself broke off, and its answer has started: it cannot be replaced by an error answer.
    if (owed.headersSent) {
      socket.destroy()
      return
    }
  }
  const code: ProxyErrorCode =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? 'headers_too_large'
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'HPE_HEADERS_TIMEOUT'
        ? 'request_timeout'
        : 'bad_request'
  sendErrorOnSocket(socket, code)
}
