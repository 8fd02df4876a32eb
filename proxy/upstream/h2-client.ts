/**
 * The client of `h2c://` upstreams: node:http2 sessions, at most `connections` of them per upstream,
 * each carrying up to `streams` requests at once (or fewer, as the upstream's SETTINGS say). It takes
 * undici's dispatch API (`dispatch(options, handler)` with the controller-based handler), so the chain's
 * exchanges, shadow copies and health see the same events, fields and errors as from undici's Pool; it
 * exists because undici's HTTP/2 client cost more CPU per gRPC call than the rest of veer (see README).
 *
 * A request goes on the first session with a free stream, else on a new session while fewer than
 * `connections` are open, else waits in the queue (bounded by the upstream's `limit`, server.ts). A
 * session that gets GOAWAY takes no new stream: its streams finish, the next request opens a new one,
 * and a stream the upstream refused unprocessed (REFUSED_STREAM, or cancelled by the GOAWAY before it
 * was sent) is sent again once on another session when its body can be (none, or a Buffer). Timeouts and
 * failures carry undici's error codes (errors.ts classifies them alike). A WebSocket upgrade (extended
 * CONNECT) goes through an undici Pool kept for that alone.
 *
 * Per request: one `Call` (the handler's controller too) and the header list; listeners are module
 * functions reading the call from the stream. No timer per request: a headers or body timeout of 1 s
 * or more is a deadline on the call, which one coarse check for the process walks (as undici's
 * util/timers.js; `Http2Stream.setTimeout` allocated a bound function and a Timeout per arming, and
 * every data chunk refreshed it); a shorter one arms the stream's own timer, exact as before.
 */
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect,
  constants,
  type IncomingHttpHeaders,
  type Settings,
} from 'node:http2'
import type { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import { Pool } from './undici-pool.ts'

export interface H2Settings {
  readonly connections: number
  readonly streams: number
  readonly connectTimeout: number
  readonly headersTimeout: number
  readonly bodyTimeout: number
  /** A session with no stream for this long is closed. */
  readonly idleTimeout: number
}

/** What the proxy needs of an upstream's client: undici's Pool, or this one. */
export interface UpstreamDispatcher {
  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean
  /** close() or destroy() was called. */
  readonly closed: boolean
  close(): Promise<void>
  destroy(): Promise<void>
}

/** An error with undici's code for the same failure, so errors.ts reads both clients alike. */
class CodedError extends Error {
  readonly code: string
  constructor(message: string, code: string) {
    super(message)
    this.code = code
  }
}

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_NO_ERROR } = constants
const EMPTY: IncomingHttpHeaders = Object.freeze(Object.create(null))
/** undici's HTTP/2 windows (client.js): 256 KiB a stream, 512 KiB the connection. */
const STREAM_WINDOW = 262_144
const CONNECTION_WINDOW = 524_288
/** Methods whose request has a body by their semantics: a missing one is `content-length: 0` (as undici). */
const PAYLOAD_METHODS = new Set(['POST', 'PUT', 'PATCH', 'QUERY', 'PROPFIND', 'PROPPATCH'])
const CLOSED = new CodedError('the upstream client was closed', 'UND_ERR_CLOSED')
const DESTROYED = new CodedError('the upstream client was destroyed', 'UND_ERR_DESTROYED')
const ANSWERED = new Error('the upstream answered before the request body ended')

const kConn = Symbol('veer.h2.conn')
const kCall = Symbol('veer.h2.call')
type TaggedSession = ClientHttp2Session & { [kConn]?: Conn }
type TaggedStream = ClientHttp2Stream & { [kCall]?: Call }
type TaggedBody = Readable & { [kCall]?: Call }

/** One session to the upstream. */
class Conn {
  readonly pool: H2Pool
  readonly session: TaggedSession
  /** Streams open on it. */
  active = 0
  /** Streams it takes at once: `streams`, or fewer once the upstream's SETTINGS say so. */
  limit: number
  /** Takes new streams: false after GOAWAY, an error or its close. */
  open = true
  /** Connect timeout until connected; the idle timer after. */
  timer: NodeJS.Timeout

  constructor(pool: H2Pool, session: ClientHttp2Session) {
    this.pool = pool
    this.session = session as TaggedSession
    this.limit = pool.settings.streams
    this.session[kConn] = this
    this.timer = setTimeout(onConnectTimeout, pool.settings.connectTimeout, this)
  }
}

function onConnectTimeout(conn: Conn): void {
  conn.session.destroy(
    new CodedError(`connect to ${conn.pool.authority} timed out`, 'UND_ERR_CONNECT_TIMEOUT'),
  )
}

function onIdle(conn: Conn): void {
  if (conn.active === 0) {
    conn.pool.retire(conn)
    conn.session.close()
  }
}

function onSessionConnect(this: TaggedSession): void {
  const conn = this[kConn]!
  clearTimeout(conn.timer)
  conn.timer = setTimeout(onIdle, conn.pool.settings.idleTimeout, conn).unref()
  try {
    this.setLocalWindowSize(CONNECTION_WINDOW)
  } catch {
    // The session is going away.
  }
}

function onRemoteSettings(this: TaggedSession, settings: Settings): void {
  const conn = this[kConn]!
  const max = settings.maxConcurrentStreams
  conn.limit = max === undefined ? conn.pool.settings.streams : Math.min(max, conn.pool.settings.streams)
  conn.pool.drain(conn)
}

function onGoaway(this: TaggedSession): void {
  this[kConn]!.pool.retire(this[kConn]!)
}

function onSessionError(this: TaggedSession): void {
  // The streams on it see the error (their own, or ERR_HTTP2_STREAM_CANCEL with it as the cause).
  this[kConn]!.pool.retire(this[kConn]!)
}

function onSessionClose(this: TaggedSession): void {
  const conn = this[kConn]!
  clearTimeout(conn.timer)
  conn.pool.retire(conn)
}

/** One request: its state, and the controller its handler is given. */
class Call implements Dispatcher.DispatchController {
  readonly pool: H2Pool
  readonly handler: Dispatcher.DispatchHandler
  readonly options: Dispatcher.DispatchOptions
  conn: Conn | null = null
  stream: TaggedStream | null = null
  /** Its body, as a Readable being written to the stream. */
  body: TaggedBody | null = null
  done = false
  #aborted = false
  #paused = false
  #reason: Error | null = null
  responded = false
  replayed = false
  trailers: IncomingHttpHeaders | null = null
  rawHeaders: IncomingHttpHeaders | null = null
  /** The coarse wait (headers or body timeout, ≥ COARSE_MIN) it is in the checked list for; 0: none. */
  wait = 0
  /** When that wait runs out on the checker's clock; 0: counted from its next tick (armed, or a chunk came). */
  deadline = 0
  /** Its links in the checked list. */
  prev: Call | null = null
  next: Call | null = null
  /** Its stream's own timer is armed (a timeout under COARSE_MIN). */
  timed = false

  constructor(pool: H2Pool, options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler) {
    this.pool = pool
    this.options = options
    this.handler = handler
  }

  get aborted(): boolean {
    return this.#aborted
  }

  get paused(): boolean {
    return this.#paused
  }

  get reason(): Error | null {
    return this.#reason
  }

  abort(reason: Error): void {
    if (this.done) return
    this.#aborted = true
    this.#reason = reason
    this.fail(reason)
  }

  pause(): void {
    this.#paused = true
    const stream = this.stream
    if (stream !== null) {
      stream.pause()
      // The upstream cannot send while the client is full: not its delay.
      if (this.responded) stopWaiting(this, stream)
    }
  }

  resume(): void {
    if (!this.#paused) return
    this.#paused = false
    const stream = this.stream
    if (stream !== null && !this.done) {
      // Before the head, the headers timeout was never stopped.
      if (this.responded) waitFor(this, stream, this.pool.settings.bodyTimeout)
      stream.resume()
    }
  }

  /** The call failed before its answer was whole: its stream is reset, its body dropped. */
  fail(err: Error): void {
    if (this.done) return
    this.done = true
    if (this.wait !== 0) unlink(this)
    const stream = this.stream
    if (stream === null) this.pool.unqueue(this)
    else if (!stream.closed && !stream.destroyed) stream.close(NGHTTP2_CANCEL)
    this.dropBody(err)
    this.handler.onResponseError?.(this, err)
  }

  dropBody(err: Error | null): void {
    const body = this.body
    if (body === null) return
    this.body = null
    body.off('data', onBodyData)
    body.off('end', onBodyEnd)
    body.off('error', onBodyError)
    if (err !== null && !body.destroyed) body.destroy()
  }
}

// ---------- timeouts ----------

/**
 * Timeouts from 1 s are checked coarsely (undici's threshold); shorter ones (tests use them) keep the
 * stream's exact timer.
 */
const COARSE_MIN = 1000
/**
 * The check's period: a coarse timeout fails the call `wait` to `wait + 2 * TICK_MS` after the wait
 * started or its last chunk came (undici's is 500 ms; a tick walks only the calls that wait).
 */
const TICK_MS = 250
/** The calls with a coarse wait, newest first (intrusive: linking allocates nothing). */
let waiting: Call | null = null
/** Runs while `waiting` is not empty; unref'd, so it keeps no process alive. */
let ticker: NodeJS.Timeout | null = null
let ticking = false
/** The calls one tick found late; kept between ticks so a tick allocates nothing either. */
const expired: Call[] = []

/** From now on, fail the call after `ms` (0: never) without an answer head or body chunk. */
function waitFor(call: Call, stream: TaggedStream, ms: number): void {
  if (ms < COARSE_MIN) {
    if (call.wait !== 0) unlink(call)
    if (ms > 0) {
      call.timed = true
      stream.setTimeout(ms)
    } else if (call.timed) {
      call.timed = false
      stream.setTimeout(0)
    }
    return
  }
  if (call.timed) {
    call.timed = false
    stream.setTimeout(0)
  }
  call.deadline = 0
  if (call.wait === 0) link(call)
  call.wait = ms
}

function stopWaiting(call: Call, stream: TaggedStream): void {
  if (call.wait !== 0) unlink(call)
  if (call.timed) {
    call.timed = false
    stream.setTimeout(0)
  }
}

function link(call: Call): void {
  call.next = waiting
  if (waiting !== null) waiting.prev = call
  waiting = call
  if (ticking) return
  ticking = true
  if (ticker === null) ticker = setTimeout(onTick, TICK_MS).unref()
  else ticker.refresh()
}

function unlink(call: Call): void {
  const { prev, next } = call
  if (prev === null) waiting = next
  else prev.next = next
  if (next !== null) next.prev = prev
  call.prev = null
  call.next = null
  call.wait = 0
}

/**
 * A deadline is set at the first tick after the wait started or its last chunk came (a chunk costs one
 * assignment, `deadline = 0`), so it never runs out early; late calls fail after the walk, since their
 * handlers may start or end other calls.
 */
function onTick(): void {
  ticking = false
  const now = performance.now()
  for (let call = waiting; call !== null; ) {
    const next = call.next
    if (call.deadline === 0) call.deadline = now + call.wait
    else if (now >= call.deadline) {
      unlink(call)
      expired.push(call)
    }
    call = next
  }
  for (let i = 0; i < expired.length; i++) timedOut(expired[i]!)
  expired.length = 0
  if (waiting !== null && !ticking) {
    ticking = true
    ticker!.refresh()
  }
}

function timedOut(call: Call): void {
  if (call.done) return
  call.fail(
    call.responded
      ? new CodedError('the upstream sent no body data in time', 'UND_ERR_BODY_TIMEOUT')
      : new CodedError('the upstream sent no answer head in time', 'UND_ERR_HEADERS_TIMEOUT'),
  )
}

/** The stream's own timer (a timeout under COARSE_MIN). */
function onTimeout(this: TaggedStream): void {
  const call = this[kCall]
  if (call !== undefined) timedOut(call)
}

// ---------- the request body ----------

function onBodyData(this: TaggedBody, chunk: Buffer): void {
  const call = this[kCall]!
  if (!call.stream!.write(chunk)) this.pause()
}

function onBodyEnd(this: TaggedBody): void {
  const call = this[kCall]!
  call.dropBody(null)
  if (!call.done) call.stream!.end()
}

function onBodyError(this: TaggedBody, err: Error): void {
  this[kCall]!.fail(err)
}

function onStreamDrain(this: TaggedStream): void {
  this[kCall]?.body?.resume()
}

/** An async iterable body (what undici's dispatch takes besides Buffers and Readables). */
async function writeIterable(call: Call, iterable: AsyncIterable<Buffer>): Promise<void> {
  const stream = call.stream!
  try {
    for await (const chunk of iterable) {
      if (call.done) return
      if (!stream.write(chunk)) {
        await new Promise<void>((ok) => {
          stream.once('drain', ok)
          stream.once('close', ok)
        })
      }
    }
    if (!call.done) stream.end()
  } catch (err) {
    call.fail(err as Error)
  }
}

// ---------- the answer ----------

function onResponse(this: TaggedStream, headers: IncomingHttpHeaders): void {
  const call = this[kCall]
  if (call === undefined || call.done) return
  const status = Number(headers[':status'])
  delete headers[':status']
  call.responded = true
  call.rawHeaders = headers
  waitFor(call, this, call.paused ? 0 : call.pool.settings.bodyTimeout)
  call.handler.onResponseStart?.(call, status, headers, '')
}

/** A 1xx before the final answer. */
function onInterim(this: TaggedStream, headers: IncomingHttpHeaders): void {
  const call = this[kCall]
  if (call === undefined || call.done) return
  const status = Number(headers[':status'])
  delete headers[':status']
  call.handler.onResponseStart?.(call, status, headers, '')
}

function onData(this: TaggedStream, chunk: Buffer): void {
  const call = this[kCall]
  if (call === undefined || call.done) return
  // The coarse check re-arms it at its next tick (a stream timer refreshes itself).
  call.deadline = 0
  call.handler.onResponseData?.(call, chunk)
}

function onTrailers(this: TaggedStream, trailers: IncomingHttpHeaders): void {
  const call = this[kCall]
  if (call !== undefined) call.trailers = trailers
}

function onEnd(this: TaggedStream): void {
  const call = this[kCall]
  if (call === undefined || call.done) return
  call.done = true
  stopWaiting(call, this)
  // Answered before the whole body went (a 413): the rest is not sent.
  if (call.body !== null) {
    call.dropBody(ANSWERED)
    if (!this.closed) this.close(NGHTTP2_NO_ERROR)
  }
  call.handler.onResponseEnd?.(call, call.trailers ?? EMPTY)
}

function onStreamError(this: TaggedStream, err: Error): void {
  const call = this[kCall]
  if (call === undefined || call.done) return
  // A stream cancelled with its session carries the session's failure (ECONNREFUSED…) as the cause.
  const cause = (err as { code?: string }).code === 'ERR_HTTP2_STREAM_CANCEL' ? err.cause : undefined
  if (cause instanceof Error) return call.fail(cause)
  if (replayable(call, this)) return replay(call)
  call.fail(err)
}

function onStreamClose(this: TaggedStream): void {
  const call = this[kCall]
  if (call === undefined) return
  if (!call.done && replayable(call, this)) return replay(call)
  const conn = call.conn!
  conn.active--
  call.pool.released(conn)
  if (call.done) return
  call.fail(new CodedError('the upstream closed the stream before its answer ended', 'UND_ERR_SOCKET'))
}

/**
 * Refused before the upstream processed it (REFUSED_STREAM, or never sent before its session got
 * GOAWAY), with a body that can go again: once, on another session.
 */
function replayable(call: Call, stream: ClientHttp2Stream): boolean {
  if (call.responded || call.replayed || call.done) return false
  const body = call.options.body
  if (body !== null && body !== undefined && !Buffer.isBuffer(body)) return false
  return stream.rstCode === NGHTTP2_REFUSED_STREAM || (stream.id === undefined && !call.conn!.open)
}

/** Its stream's close (still to come, or come) frees its place on the session: `onReplayedClose`. */
function replay(call: Call): void {
  const stream = call.stream!
  stream[kCall] = undefined
  // Its next stream waits anew (send); the old one's timer fires at nothing.
  if (call.wait !== 0) unlink(call)
  call.timed = false
  if (!stream.closed) stream.on('close', onReplayedClose)
  else {
    call.conn!.active--
    call.pool.released(call.conn!)
  }
  ;(stream as TaggedStream & { [kConn]?: Conn })[kConn] = call.conn!
  call.replayed = true
  call.stream = null
  call.conn = null
  call.pool.start(call)
}

function onReplayedClose(this: TaggedStream & { [kConn]?: Conn }): void {
  const conn = this[kConn]!
  conn.active--
  conn.pool.released(conn)
}

// ---------- the pool ----------

export class H2Pool implements UpstreamDispatcher {
  readonly settings: H2Settings
  /** The upstream's host:port, the `:authority` when the request has no Host. */
  readonly authority: string
  readonly #origin: string
  /** Sessions that take new streams, oldest first. */
  readonly #conns: Conn[] = []
  /** Every session not yet closed (GOAWAY'd ones finish their streams). */
  readonly #all = new Set<Conn>()
  readonly #queue: Call[] = []
  #closed = false
  #upgrades: Pool | null = null

  constructor(authority: string, settings: H2Settings) {
    this.authority = authority
    this.#origin = `http://${authority}`
    this.settings = settings
  }

  get closed(): boolean {
    return this.#closed
  }

  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    if (options.upgrade !== undefined && options.upgrade !== null)
      return this.#upgradePool().dispatch(options, handler)
    const call = new Call(this, options, handler)
    handler.onRequestStart?.(call, null)
    if (call.done) return true
    if (this.#closed) {
      call.fail(CLOSED)
      return false
    }
    this.start(call)
    return true
  }

  start(call: Call): void {
    const conn = this.#pick()
    if (conn === null) this.#queue.push(call)
    else send(call, conn)
  }

  #pick(): Conn | null {
    const conns = this.#conns
    for (let i = 0; i < conns.length; i++) {
      const c = conns[i]!
      if (c.active < c.limit) return c
    }
    // A GOAWAY'd session finishing its streams does not count: a new one takes its place at once.
    if (conns.length >= this.settings.connections || this.#closed) return null
    return this.#connect()
  }

  #connect(): Conn {
    const s = this.settings
    const session = connect(this.#origin, {
      peerMaxConcurrentStreams: s.streams,
      settings: { enablePush: false, initialWindowSize: STREAM_WINDOW },
    })
    const conn = new Conn(this, session)
    session.on('connect', onSessionConnect)
    session.on('remoteSettings', onRemoteSettings)
    session.on('goaway', onGoaway)
    session.on('error', onSessionError)
    session.on('close', onSessionClose)
    this.#conns.push(conn)
    this.#all.add(conn)
    return conn
  }

  /** The session takes no new stream (GOAWAY, error, idle or closed); queued calls go elsewhere. */
  retire(conn: Conn): void {
    if (conn.open) {
      conn.open = false
      const i = this.#conns.indexOf(conn)
      if (i >= 0) this.#conns.splice(i, 1)
    }
    if (conn.session.closed || conn.session.destroyed) this.#all.delete(conn)
    if (this.#queue.length > 0) this.drain(null)
  }

  /** A stream on `conn` closed. */
  released(conn: Conn): void {
    if (conn.active === 0) {
      if (!conn.open) {
        this.#all.delete(conn)
        if (!conn.session.closed) conn.session.close()
      } else conn.timer.refresh()
    }
    if (this.#queue.length > 0) this.drain(conn.open ? conn : null)
  }

  /** Send queued calls: on `conn` while it has room, then wherever there is. */
  drain(conn: Conn | null): void {
    const queue = this.#queue
    while (queue.length > 0) {
      const c = conn?.open && conn.active < conn.limit ? conn : this.#pick()
      if (c === null) return
      send(queue.shift()!, c)
    }
  }

  unqueue(call: Call): void {
    const i = this.#queue.indexOf(call)
    if (i >= 0) this.#queue.splice(i, 1)
  }

  #upgradePool(): Pool {
    const s = this.settings
    this.#upgrades ??= new Pool(this.#origin, {
      connections: s.connections,
      connectTimeout: s.connectTimeout,
      headersTimeout: s.headersTimeout,
      bodyTimeout: s.bodyTimeout,
      keepAliveTimeout: s.idleTimeout,
      allowH2: true,
      useH2c: true,
      h2Options: { maxConcurrentStreams: s.streams },
    } as Pool.Options & { useH2c: boolean })
    return this.#upgrades
  }

  /** Let the streams in flight finish, then close every session. */
  async close(): Promise<void> {
    this.#closed = true
    for (const call of this.#queue.splice(0)) call.fail(CLOSED)
    const closing: Promise<void>[] = []
    for (const conn of this.#all) {
      conn.open = false
      closing.push(new Promise<void>((ok) => conn.session.close(ok)))
    }
    this.#conns.length = 0
    if (this.#upgrades !== null) closing.push(this.#upgrades.close())
    await Promise.all(closing)
  }

  async destroy(): Promise<void> {
    this.#closed = true
    for (const call of this.#queue.splice(0)) call.fail(DESTROYED)
    for (const conn of this.#all) {
      conn.open = false
      conn.session.destroy()
    }
    this.#all.clear()
    this.#conns.length = 0
    if (this.#upgrades !== null) await this.#upgrades.destroy()
  }
}

/** The request's header list for node:http2: pseudo-fields first, Host as `:authority`. */
function requestHeaders(call: Call, pool: H2Pool): string[] {
  const o = call.options
  const method = o.method
  const out: string[] = [':method', method, ':path', o.path, ':scheme', 'http', ':authority', pool.authority]
  const h = o.headers
  let length: string | undefined
  if (Array.isArray(h)) {
    for (let i = 0; i < h.length; i += 2) {
      const name = h[i] as string
      const value = h[i + 1] as string
      if (name === 'host') out[7] = value
      else if (name === 'content-length') length = value
      else out.push(name, value)
    }
  } else if (h !== null && h !== undefined) {
    const fields = h as Record<string, string | string[] | undefined>
    for (const name in fields) {
      const value = fields[name]
      if (value === undefined) continue
      if (name === 'host') out[7] = value as string
      else if (name === 'content-length') length = value as string
      else if (typeof value === 'string') out.push(name, value)
      else for (const v of value) out.push(name, v)
    }
  }
  // As undici: a Buffer's own length, a stream's declared one, none for an empty body whose method
  // expects none, `0` for an empty body whose method expects one.
  const body = o.body
  if (body === null || body === undefined) length = '0'
  else if (Buffer.isBuffer(body)) length = String(body.length)
  if (length === '0' && !PAYLOAD_METHODS.has(method)) length = undefined
  if (length !== undefined) out.push('content-length', length)
  return out
}

function send(call: Call, conn: Conn): void {
  const pool = conn.pool
  const o = call.options
  const body = o.body
  const empty = body === null || body === undefined || (Buffer.isBuffer(body) && body.length === 0)
  let stream: TaggedStream
  try {
    stream = conn.session.request(requestHeaders(call, pool) as never, { endStream: empty }) as TaggedStream
  } catch (err) {
    // GOAWAY'd or closed meanwhile, or a field node:http2 refuses.
    if (!conn.open || conn.session.closed || conn.session.destroyed) {
      pool.retire(conn)
      return pool.start(call)
    }
    return call.fail(err as Error)
  }
  conn.active++
  call.conn = conn
  call.stream = stream
  stream[kCall] = call
  const headersTimeout = o.headersTimeout ?? pool.settings.headersTimeout
  const bodyTimeout = pool.settings.bodyTimeout
  // Only a timeout under COARSE_MIN arms the stream's timer.
  if ((headersTimeout > 0 && headersTimeout < COARSE_MIN) || (bodyTimeout > 0 && bodyTimeout < COARSE_MIN))
    stream.on('timeout', onTimeout)
  waitFor(call, stream, headersTimeout)
  stream.on('response', onResponse)
  stream.on('headers', onInterim)
  stream.on('data', onData)
  stream.on('trailers', onTrailers)
  stream.on('end', onEnd)
  stream.on('error', onStreamError)
  stream.on('close', onStreamClose)
  if (call.paused) stream.pause()
  if (empty) return
  if (Buffer.isBuffer(body)) return void stream.end(body)
  // A streamed body is read once the stream is sent (its session connected): an attempt that never
  // connected read none of it, and a fallback to stable can still send it (chain/fallback.ts).
  if (stream.id === undefined) stream.on('ready', onStreamReady)
  else sendBody(call, stream)
}

function onStreamReady(this: TaggedStream): void {
  const call = this[kCall]
  if (call !== undefined && !call.done) sendBody(call, this)
}

function sendBody(call: Call, stream: TaggedStream): void {
  const body = call.options.body
  if (typeof (body as Readable).on === 'function') {
    const readable = body as TaggedBody
    if (readable.destroyed || readable.readableEnded) {
      return call.fail(
        new CodedError('the request body was already read', 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH'),
      )
    }
    readable[kCall] = call
    call.body = readable
    stream.on('drain', onStreamDrain)
    readable.on('data', onBodyData)
    // Plain listeners, not `once` wrappers: dropBody removes them.
    readable.on('end', onBodyEnd)
    readable.on('error', onBodyError)
    return
  }
  void writeIterable(call, body as unknown as AsyncIterable<Buffer>)
}
