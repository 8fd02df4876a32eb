/**
 * Shadow mirroring: a sampled copy of a request goes to the route's shadow upstream, its answer is
 * compared with the primary's and thrown away. The shadow never delays the primary: its body copy is
 * fed from the primary's stream without ever pausing it (and dropped past `maxBodyBytes`), it has its
 * own small pool, and when that pool is busy the copy is dropped and counted, never queued. A shadow
 * that fails to connect `health.ejectAfter` times in a row is ejected like a primary upstream (see
 * `Upstream.admit`): its copies are dropped unsent until a single probe after `health.ejectFor` connects.
 * Its `error` lines are written at most once a second; the next tells how many were held back.
 *
 * A gRPC call is mirrored only when it is unary: its request body ends after exactly one
 * length-prefixed message, which is held (within `maxBodyBytes`) and sent to the shadow once the body
 * has ended, so a stream never reaches it, not even its first message. A second request message, a body
 * past the limit, or a second answer message (a server stream; the shadow's copy is cut there) drops
 * the copy, counted `dropped`. Its answers are compared with their grpc-status.
 */
import { performance } from 'node:perf_hooks'
import { PassThrough, pipeline, type Readable, Transform, type TransformCallback } from 'node:stream'
import type { Logger } from 'pino'
import type { Dispatcher } from 'undici'
import type { ShadowConfig } from '../../config/types.ts'
import { ERROR } from '../analysis/window.ts'
import type { Exchange } from '../chain/exchange.ts'
import { GrpcFrames, grpcCodeFor, grpcPayload, grpcStatusOf, UNKNOWN } from '../chain/grpc.ts'
import type { UpstreamFields } from '../chain/handler.ts'
import type { PassiveHealth } from '../chain/health.ts'
import { classifyUpstreamError } from '../errors.ts'
import type { VersionMetrics } from '../metrics.ts'
import type { Backend, VersionState } from '../routes/table.ts'
import type { WeylSequence } from '../split/weighted.ts'
import type { Tracing } from '../tracing.ts'
import type { Upstream } from '../upstream/pools.ts'
import {
  type Answer,
  type Comparison,
  compareAnswers,
  type FieldFilter,
  type FieldSet,
  pathPattern,
} from './compare.ts'
import type { ShadowStats } from './stats.ts'

type Controller = Dispatcher.DispatchController

const STREAMING = new Error('a gRPC stream is not mirrored: its answer has a second message')

/** A route's compiled shadow settings (built with the route table). */
export interface ShadowTarget {
  readonly route: string
  readonly config: ShadowConfig
  readonly upstream: Upstream
  readonly threshold: number
  readonly sequence: WeylSequence
  /** Share of compared GET/HEAD requests also sent a second time to the primary (compare.noiseSample). */
  readonly noiseThreshold: number
  readonly noiseSequence: WeylSequence
  readonly methods: ReadonlySet<string> | null
  readonly paths: readonly string[] | null
  readonly header: string | null
  /** The route's preserveHost: false sends the shadow its own upstream's host, as the primary gets its. */
  readonly preserveHost: boolean
  readonly state: VersionState
  /** The route's error table (see routes/compile.ts errorTable): 1 at a status counted as an error. */
  readonly errorStatus: Uint8Array
  readonly stats: ShadowStats
  /** Where the count of held-back `error` lines goes; null when shadow lines are not written (log.access). */
  readonly log: Logger | null
  /** The shadow line's fixed fields (pid, route, version, release, upstream), serialised once. */
  readonly lineFields: string
  readonly ignore: FieldFilter
  /** `ignore`, or learned to be noisy (stats.noise): what a shadow's differences leave out. */
  readonly ignoreOrNoise: FieldSet
  /** The headers an answer is compared with: compare.headers and content-type (JSON or not). */
  readonly answerHeaders: readonly string[]
  readonly redact: ReadonlySet<string>
}

/** What a mirror needs from the proxy. */
export interface MirrorHost {
  shadowFinished(m: Mirror, status: number, outcome: string, seconds: number): void
  /** Passive health (config `health`), as for the primary upstreams. */
  readonly health: PassiveHealth
}

class Capture {
  status = 0
  /** The answer's header fields as the client parsed them (lower-case names; a repeated one a list). */
  #fields: UpstreamFields = NO_FIELDS
  /** The body kept to be compared: its one chunk (most answers), or all its chunks once a second came. */
  #first: Buffer | null = null
  #chunks: Buffer[] | null = null
  size = 0
  overflow = false
  done = false
  ok = false
  /** A gRPC call's grpc-status, -1 until known. */
  grpc = -1
  /** A gRPC answer's messages as they stream; null for other requests. */
  frames: GrpcFrames | null = null

  /**
   * The fields undici (or the HTTP/2 client) already parsed are kept as they are: most answers match,
   * so only the compared headers are read, and all of them only for a diff sample.
   */
  start(status: number, fields: UpstreamFields): void {
    this.status = status
    this.#fields = fields
  }

  /** Every header (for a diff sample). */
  get headers(): Record<string, string> {
    return headerRecord(this.#fields, Object.keys(this.#fields))
  }

  data(chunk: Buffer, limit: number): void {
    if (this.overflow) return
    this.size += chunk.length
    if (this.size > limit) {
      this.overflow = true
      this.#first = null
      this.#chunks = null
    } else if (this.#first === null) this.#first = chunk
    else (this.#chunks ??= [this.#first]).push(chunk)
  }

  /** The whole body, or null when it was larger than the comparison limit. */
  body(): Buffer | null {
    if (this.overflow) return null
    if (this.#chunks !== null) {
      this.#first = Buffer.concat(this.#chunks, this.size)
      this.#chunks = null
    }
    return this.#first ?? EMPTY
  }

  /**
   * Whether `other` is the same answer as far as compareAnswers looks (status, grpc-status, the headers
   * `names`, the body when both were kept): then it would find no difference. Most copies match, and this
   * tells so without building the two answers and the comparison.
   */
  matches(other: Capture, names: readonly string[]): boolean {
    if (this.status !== other.status || this.grpc !== other.grpc) return false
    for (let i = 0; i < names.length; i++)
      if (fieldValue(this.#fields, names[i]!) !== fieldValue(other.#fields, names[i]!)) return false
    const a = this.body()
    const b = other.body()
    return a === null || b === null || a.equals(b)
  }

  /** The answer to compare, with only the headers `names` (those compared, and content-type). */
  answer(names: readonly string[]): Answer {
    const body = this.body()
    return {
      status: this.status,
      headers: headerRecord(this.#fields, names),
      // A gRPC answer's message is compared without its prefix, so `+json` messages are JSON.
      body: body !== null && this.frames !== null ? grpcPayload(body) : body,
      grpc: this.grpc,
    }
  }

  /** A gRPC answer's grpc-status from its trailers; a 200 that ends without one is UNKNOWN. */
  trailers(trailers: UpstreamFields | null | undefined): void {
    const g = trailers?.['grpc-status']
    if (g !== undefined) this.grpc = grpcStatusOf(g)
    else if (this.grpc === -1 && this.status === 200) this.grpc = UNKNOWN
  }
}

const NO_FIELDS: UpstreamFields = Object.freeze(Object.create(null))
const EMPTY = Buffer.alloc(0)

/**
 * A field's value as an answer is compared with it: own fields only (a header named `__proto__` or
 * `constructor` is a field like any other), a repeated one joined with ", ".
 */
function fieldValue(fields: UpstreamFields, name: string): string | undefined {
  const v = Object.hasOwn(fields, name) ? fields[name] : undefined
  return v === undefined || typeof v === 'string' ? v : v.join(', ')
}

/** Header name → value (fieldValue) of `names` in `fields`, in an object with no prototype. */
function headerRecord(fields: UpstreamFields, names: readonly string[]): Record<string, string> {
  const h: Record<string, string> = Object.create(null)
  for (const name of names) {
    const v = fieldValue(fields, name)
    if (v !== undefined) h[name] = v
  }
  return h
}

/**
 * compareAnswers on two captured answers, `ignore` left out; null when they match (most copies do),
 * told without building the answers.
 */
function compareCaptures(t: ShadowTarget, a: Capture, b: Capture, ignore: FieldSet): Comparison | null {
  const names = t.config.compare.headers
  if (a.matches(b, names)) return null
  return compareAnswers(a.answer(t.answerHeaders), b.answer(t.answerHeaders), names, ignore)
}

/**
 * Feeds the shadow's body copy from the primary's stream; never waits for the shadow. A gRPC call's copy
 * (`frames`) is held instead of streamed, and handed over only if the body was one whole message.
 */
class BodyTee extends Transform {
  readonly #mirror: Mirror
  #copy: PassThrough | null
  #held: Buffer[] | null = null
  #frames: GrpcFrames | null = null
  #seen = 0
  /** The whole request body has passed (and the copy, if still kept, was ended). */
  passed = false

  constructor(mirror: Mirror, copy: PassThrough | null) {
    super()
    this.#mirror = mirror
    this.#copy = copy
    if (copy === null) {
      this.#held = []
      this.#frames = new GrpcFrames()
    }
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const copy = this.#copy
    if (copy !== null) {
      this.#seen += chunk.length
      const limit = this.#mirror.target.config.maxBodyBytes
      if (this.#seen > limit || copy.writableLength > limit) this.dropCopy()
      else copy.write(chunk)
    } else if (this.#held !== null) {
      this.#seen += chunk.length
      this.#frames!.push(chunk)
      // A second message is a stream: dropped at once, so a long one holds nothing.
      if (this.#seen > this.#mirror.target.config.maxBodyBytes || this.#frames!.messages > 1) this.dropCopy()
      else this.#held.push(chunk)
    }
    cb(null, chunk)
  }

  override _flush(cb: TransformCallback): void {
    this.passed = true
    this.#copy?.end()
    const held = this.#held
    if (held !== null) {
      this.#held = null
      const frames = this.#frames!
      if (frames.messages === 1 && frames.whole) this.#mirror.messageHeld(Buffer.concat(held, this.#seen))
      else this.#mirror.drop()
    }
    cb()
  }

  dropCopy(): void {
    const copy = this.#copy
    if (copy !== null) {
      this.#copy = null
      this.#mirror.drop()
      copy.destroy()
    } else if (this.#held !== null) {
      this.#held = null
      this.#mirror.drop()
    }
  }

  /**
   * The primary ended before reading the whole body (it failed to connect, or answered early): nothing
   * reads this tee any more, so `req` would stay paused behind it, the shadow copy would wait for the
   * rest forever (holding an in-flight slot and the drain), and the client's connection would stall.
   * Drop the copy and let `req` go as Node lets an unread body go without a mirror: discarded.
   */
  abandon(req: Readable): void {
    if (this.passed) return
    this.dropCopy()
    req.unpipe(this)
    req.resume()
  }
}

/** Collects the answer of the shadow copy, or of the second copy to the primary (`capture` tells which). */
class ShadowHandler implements Dispatcher.DispatchHandler {
  readonly #mirror: Mirror
  readonly #capture: Capture

  constructor(mirror: Mirror, capture: Capture) {
    this.#mirror = mirror
    this.#capture = capture
  }

  onRequestStart(): void {}

  onResponseStart(_c: Controller, status: number, fields: UpstreamFields): void {
    if (status < 200) return
    const capture = this.#capture
    capture.start(status, fields)
    // A trailers-only answer has its grpc-status in the head.
    if (capture.frames !== null && fields['grpc-status'] !== undefined)
      capture.grpc = grpcStatusOf(fields['grpc-status'])
  }

  onResponseData(controller: Controller, chunk: Buffer): void {
    const frames = this.#capture.frames
    if (frames !== null) {
      frames.push(chunk)
      // A server stream: cut here (counted dropped), or it could hold a shadow connection for its life.
      if (frames.messages > 1) {
        this.#mirror.drop()
        return controller.abort(STREAMING)
      }
    }
    const cfg = this.#mirror.target.config
    if (cfg.compare.enabled) this.#capture.data(chunk, cfg.maxBodyBytes)
  }

  onResponseEnd(_c: Controller, trailers: UpstreamFields): void {
    if (this.#capture.frames !== null) this.#capture.trailers(trailers)
    this.#capture.done = true
    this.#capture.ok = true
    this.#mirror.answerEnded(this.#capture, null)
  }

  onResponseError(_c: Controller, err: Error): void {
    this.#capture.done = true
    this.#mirror.answerEnded(this.#capture, err)
  }
}

export class Mirror {
  readonly host: MirrorHost
  readonly target: ShadowTarget
  readonly route: string
  readonly method: string
  readonly path: string
  readonly primaryBackend: Backend
  readonly headers: string[]
  /** A gRPC call: mirrored only when unary (see the top of this file). */
  readonly grpc: boolean
  readonly primary = new Capture()
  readonly shadow = new Capture()
  secondary: Capture | null = null
  /** The head of a second copy to the primary (noise learning: compare.noiseSample), or null. */
  secondaryHeaders: string[] | null = null
  /** Opaque tracing span of the shadow copy (proxy/tracing.ts), or null. */
  span: unknown = null
  /** The tracing that made `span` (set with it): ends it when the host is not told (a held-back error). */
  tracing: Tracing | null = null
  /** The primary's body when the request has one: a tee that also feeds the shadow's copy. */
  primaryBody: Transform | null = null
  #tee: BodyTee | null = null
  #req: Readable | null = null
  #shadowBody: PassThrough | null = null
  #shadowStart = 0
  #shadowSeconds = 0
  #dropped = false
  #settled = false
  /** The primary's exchange, read for its grpc-status when it ends (gRPC only). */
  #exchange: Exchange | null = null
  /** gRPC: the request's one message once its body has ended, and whether `send()` was called. */
  #message: Buffer | null = null
  #wanted = false
  #dispatched = false

  constructor(
    host: MirrorHost,
    target: ShadowTarget,
    route: string,
    method: string,
    path: string,
    backend: Backend,
    headers: string[],
    grpc: Exchange | null = null,
  ) {
    this.host = host
    this.target = target
    this.route = route
    this.method = method
    this.path = path
    this.primaryBackend = backend
    this.headers = headers
    this.grpc = grpc !== null
    if (grpc !== null) {
      this.#exchange = grpc
      this.primary.frames = new GrpcFrames()
      this.shadow.frames = new GrpcFrames()
    }
  }

  drop(): void {
    this.#dropped = true
    // A gRPC copy dropped before it went (a stream, a body past the limit) is never sent.
    if (this.grpc && this.#wanted && !this.#dispatched) this.#notSent()
  }

  /** gRPC: the request body ended as exactly one message; the copy goes once the primary's has. */
  messageHeld(message: Buffer): void {
    this.#message = message
    if (this.#wanted && !this.#dispatched) this.#dispatch()
  }

  get dropped(): boolean {
    return this.#dropped
  }

  teeBody(req: Readable): Transform {
    const copy = this.grpc ? null : new PassThrough()
    const tee = new BodyTee(this, copy)
    pipeline(req, tee, (err) => {
      if (err) tee.dropCopy()
    })
    this.#shadowBody = copy
    this.#tee = tee
    this.#req = req
    this.primaryBody = tee
    return tee
  }

  /** Dispatch the shadow request (after the primary's, so the primary goes first). */
  send(): void {
    if (!this.grpc) return this.#dispatch()
    // A gRPC call waits for its body to end as one message (messageHeld) or to be dropped.
    this.#wanted = true
    if (this.#dropped) this.#notSent()
    else if (this.#message !== null) this.#dispatch()
  }

  #dispatch(): void {
    const secondaryHeaders = this.secondaryHeaders
    const t = this.target
    this.#dispatched = true
    // A gRPC copy waited for its body: the shadow may have filled up meanwhile.
    if (this.grpc && t.upstream.inflight >= t.config.maxInflight) return this.#notSent()
    t.upstream.inflight++
    t.stats.sent++
    this.#shadowStart = performance.now()
    t.upstream.pool.dispatch(
      {
        path: this.path,
        method: this.method,
        headers: this.headers,
        body: this.grpc ? this.#message : this.#shadowBody,
      },
      new ShadowHandler(this, this.shadow),
    )
    if (secondaryHeaders !== null) {
      this.secondary = new Capture()
      t.stats.noiseChecks.sent++
      // Real load on the primary's pool: it counts towards that upstream's limit like any request.
      const primary = this.primaryBackend.upstream
      primary.inflight++
      primary.pool.dispatch(
        { path: this.path, method: this.method, headers: secondaryHeaders, body: null },
        new ShadowHandler(this, this.secondary),
      )
    }
  }

  /** A gRPC copy that will not be sent: counted dropped, and the mirror settles without it. */
  #notSent(): void {
    this.#dispatched = true
    const t = this.target
    t.stats.dropped++
    // Admitted as a half-open probe, it ends that probe telling nothing.
    t.upstream.probing = false
    this.shadow.done = true
    this.host.shadowFinished(this, 0, 'dropped', 0)
    this.#settle()
  }

  /** An answer ended: `err` null when it came whole. */
  answerEnded(capture: Capture, err: Error | null): void {
    if (capture === this.shadow) this.#shadowEnded(err)
    else {
      this.primaryBackend.upstream.inflight--
      this.#settle()
    }
  }

  #shadowEnded(err: Error | null): void {
    const t = this.target
    const upstream = t.upstream
    upstream.inflight--
    const seconds = (performance.now() - this.#shadowStart) / 1000
    this.#shadowSeconds = seconds
    // A copy the proxy cut (its body went past maxBodyBytes, the primary stopped reading) tells neither.
    this.host.health.observe(
      upstream,
      err,
      err === null ? null : classifyUpstreamError(err),
      err !== null && this.#dropped,
    )
    if (err === null) this.#record(this.shadow.status, seconds, this.shadow.grpc)
    else if (this.#dropped) {
      // The proxy cut it (its body copy went past maxBodyBytes, or the primary stopped reading it): not
      // the shadow's failure, so it stays out of the shadow's error counts and analysis window.
      t.stats.dropped++
      this.host.shadowFinished(this, 0, 'dropped', seconds)
    } else {
      t.stats.errors++
      // A failed call's code (UNAVAILABLE, DEADLINE_EXCEEDED) is the shadow's, for its line too.
      if (this.grpc) this.shadow.grpc = grpcCodeFor(classifyUpstreamError(err))
      this.#record(0, seconds, this.shadow.grpc)
      this.#failed(seconds)
    }
    this.#settle()
  }

  /** Tell the host of a failure, at most once a second per shadow when its lines are written. */
  #failed(seconds: number): void {
    const t = this.target
    if (t.log !== null) {
      const held = t.stats.errorLines.take()
      if (held < 0) {
        if (this.span !== null) this.tracing?.endShadow(this, 0, 'error')
        return
      }
      if (held > 0)
        t.log.info(
          { route: this.route, version: 'shadow', upstream: t.upstream.origin, suppressed: held },
          'shadow errors suppressed',
        )
    }
    this.host.shadowFinished(this, 0, 'error', seconds)
  }

  #record(status: number, seconds: number, grpc: number): void {
    const metrics: VersionMetrics = this.target.state.metrics
    metrics.record(status, seconds, grpc)
    // A gRPC call's outcome is its grpc-status, judged by the primary route's analysis.grpcErrorCodes.
    const error =
      status === 0 ||
      this.target.errorStatus[status] === 1 ||
      (grpc > 0 && this.#exchange !== null && this.#exchange.route.grpcErrors[grpc] === 1)
    this.target.state.window.record(performance.now(), seconds * 1000, error ? ERROR : 0)
  }

  // The primary's answer, fed by the exchange that serves the user.
  primaryStart(status: number, fields: UpstreamFields): void {
    this.primary.start(status, fields)
  }

  primaryData(chunk: Buffer): void {
    this.primary.frames?.push(chunk)
    // Bodies are kept only to be compared.
    if (this.target.config.compare.enabled) this.primary.data(chunk, this.target.config.maxBodyBytes)
  }

  primaryEnd(ok: boolean): void {
    this.primary.done = true
    this.primary.ok = ok
    if (this.#exchange !== null) this.primary.grpc = this.#exchange.grpc
    if (this.#tee !== null) this.#tee.abandon(this.#req!)
    this.#settle()
  }

  /** Once every answer is in: learn noise from the secondary, then judge the shadow. */
  #settle(): void {
    if (
      this.#settled ||
      !this.primary.done ||
      !this.shadow.done ||
      (this.secondary !== null && !this.secondary.done)
    )
      return
    this.#settled = true
    const t = this.target
    const stats = t.stats
    const compare = t.config.compare
    const primary = this.primary
    const secondary = this.secondary
    if (primary.ok && secondary?.ok) {
      stats.noiseChecks.compared++
      const noise = compareCaptures(t, primary, secondary, t.ignore)
      if (noise !== null) for (const d of noise.differences) stats.learnNoise(d.field)
    }
    if (!this.shadow.ok) return // its failure was counted and logged when it ended
    if (this.grpc && (primary.frames!.messages > 1 || this.shadow.frames!.messages > 1)) {
      // The primary's answer was a stream: the call was not unary after all, so it is not compared.
      stats.dropped++
      this.host.shadowFinished(this, this.shadow.status, 'dropped', this.#shadowSeconds)
      return
    }
    if (!primary.ok || !compare.enabled) {
      this.host.shadowFinished(this, this.shadow.status, 'answered', this.#shadowSeconds)
      return
    }
    const result = compareCaptures(t, primary, this.shadow, t.ignoreOrNoise)
    const mismatch = result !== null && result.differences.length > 0
    stats.countComparison(pathPattern(this.path), mismatch)
    if (mismatch) {
      stats.keepDiff(
        {
          time: new Date().toISOString(),
          route: this.route,
          method: this.method,
          path: this.path.split('?')[0]!,
          request: this.#redacted(pairs(this.headers)),
          primary: {
            version: this.primaryBackend.version,
            status: primary.status,
            headers: this.#redacted(primary.headers),
          },
          shadow: {
            release: t.config.release,
            status: this.shadow.status,
            headers: this.#redacted(this.shadow.headers),
          },
          differences: result.differences.slice(0, 50),
          ignored: result.ignored,
        },
        compare.maxDiffs,
      )
    }
    this.host.shadowFinished(this, this.shadow.status, mismatch ? 'mismatch' : 'match', this.#shadowSeconds)
  }

  #redacted(headers: Record<string, string>): Record<string, string> {
    const out: Record<string, string> = Object.create(null)
    for (const [k, v] of Object.entries(headers)) out[k] = this.target.redact.has(k) ? '[redacted]' : v
    return out
  }
}

function pairs(flat: readonly string[]): Record<string, string> {
  const out: Record<string, string> = Object.create(null)
  for (let i = 0; i < flat.length; i += 2)
    out[flat[i]!] = out[flat[i]!] === undefined ? flat[i + 1]! : `${out[flat[i]!]}, ${flat[i + 1]}`
  return out
}

/**
 * Decide whether this request is mirrored and, if so, prepare the mirror (the caller dispatches the
 * primary with `mirror.primaryBody ?? req`, then calls `mirror.send()`). Returns null when not mirrored.
 */
export function startMirror(
  host: MirrorHost,
  t: ShadowTarget,
  ex: Exchange,
  upstreamHeaders: readonly string[],
  hasBody: boolean,
): Mirror | null {
  // A gRPC call needs a body (its one message) and a shadow that speaks HTTP/2; whether it is unary is
  // known only when its body ends (see BodyTee).
  const grpc = ex.head.grpc
  if (t.threshold === 0 || (grpc && (!hasBody || t.upstream.protocol === 'http/1.1'))) return null
  if (t.sequence.next() >= t.threshold) return null
  const method = ex.method
  const path = ex.url
  const backend = ex.backend
  if (t.methods !== null && !t.methods.has(method)) return null
  if (t.paths !== null && !t.paths.some((p) => path.startsWith(p))) return null
  const cfg = t.config
  // admit() last: when it lets a half-open probe through, that request must be sent.
  if (
    t.upstream.inflight >= cfg.maxInflight ||
    (hasBody && contentLength(upstreamHeaders) > cfg.maxBodyBytes) ||
    !t.upstream.admit()
  ) {
    t.stats.dropped++
    return null
  }
  const headers = markedCopy(upstreamHeaders, t.header)
  if (!t.preserveHost || cfg.hostSuffix !== '') {
    // The primary's fields only: the marker after them is never rewritten.
    for (let i = 0; i < upstreamHeaders.length; i += 2) {
      if (headers[i] !== 'host') continue
      const host = t.preserveHost ? headers[i + 1]! : t.upstream.host
      headers[i + 1] = cfg.hostSuffix === '' ? host : withHostSuffix(host, cfg.hostSuffix)
    }
  }
  const mirror = new Mirror(host, t, t.route, method, path, backend, headers, grpc ? ex : null)
  if (hasBody) mirror.teeBody(ex.body as Readable)
  const safe = !hasBody && (method === 'GET' || method === 'HEAD')
  // Deterministic as the shadow's own sample (0.05 is every twentieth), and marked like a shadow copy:
  // the primary's upstream can tell this duplicate from the user's request.
  const secondary =
    safe &&
    cfg.compare.enabled &&
    t.noiseThreshold !== 0 &&
    backend.upstream.inflight < backend.upstream.limit &&
    t.noiseSequence.next() < t.noiseThreshold
      ? markedCopy(upstreamHeaders, t.header)
      : null
  mirror.secondaryHeaders = secondary
  return mirror
}

/** A copy's head: the primary's fields and the shadow marker, in one array of its final size (a push after
 * slice() would copy it again into a bigger one). */
function markedCopy(headers: readonly string[], marker: string | null): string[] {
  return marker === null ? headers.slice() : headers.concat(marker, '1')
}

function contentLength(headers: readonly string[]): number {
  for (let i = 0; i < headers.length; i += 2)
    if (headers[i] === 'content-length') return Number(headers[i + 1])
  return 0
}

/** `shop.example.com:8080` + `-shadow` → `shop.example.com-shadow:8080` (as Istio and Envoy do). */
export function withHostSuffix(host: string, suffix: string): string {
  const colon = host.startsWith('[') ? host.indexOf(']:') + 1 : host.lastIndexOf(':')
  return colon > 0 ? `${host.slice(0, colon)}${suffix}${host.slice(colon)}` : `${host}${suffix}`
}
