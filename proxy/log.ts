/**
 * JSON-lines logging on stdout. pino writes the occasional line; the per-request access lines are built
 * by hand (server.ts) from pre-serialised parts. Both go through one LineSink, so their order holds.
 */
import { fstatSync, write, writeSync } from 'node:fs'
import pino, { type Logger } from 'pino'

/** Bytes of one write when several processes share a stdout pipe: POSIX keeps such writes whole. */
export const PIPE_BUF = 4096
/** Bytes of one write otherwise: a busy proxy makes a write(2) every ~64 KiB, not every few lines. */
const CHUNK = 64 * 1024
/** Bytes waiting for a slow stdout beyond which lines are dropped (and counted) rather than kept. */
const MAX_QUEUED = 16 * 1024 * 1024

let lastMs = 0
let lastIso = ''
/** The current time in ISO 8601; the string is made once per millisecond, not once per line. */
export function isoNow(): string {
  const now = Date.now()
  if (now !== lastMs) {
    lastMs = now
    lastIso = new Date(now).toISOString()
  }
  return lastIso
}

/** `,"key":value…` for fields fixed per route and version: a line's constant part is built once. */
export function jsonFields(fields: Record<string, string | number>): string {
  let out = ''
  for (const [key, value] of Object.entries(fields)) out += `,${JSON.stringify(key)}:${JSON.stringify(value)}`
  return out
}

/** The common methods already as JSON strings. */
const METHOD_JSON: Record<string, string> = Object.fromEntries(
  ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'].map((m) => [m, `"${m}"`]),
)

/**
 * The JSON line of one request (`access`, `shadow`): the same JSON pino would write, at a fraction of
 * its cost. `fields` is the part fixed per route and version (`jsonFields`: pid, route, version,
 * release, upstream); `extra` is `,"key":value…` of what only some lines carry.
 */
export function requestLine(
  msg: string,
  fields: string,
  method: string,
  path: string,
  status: number,
  seconds: number,
  extra: string,
): string {
  return (
    `{"level":30,"time":"${isoNow()}"${fields},"method":${METHOD_JSON[method] ?? JSON.stringify(method)},` +
    `"path":${JSON.stringify(path)},"status":${status === 0 ? 'null' : status}${extra},` +
    `"duration_ms":${Math.round(seconds * 1e6) / 1000},"msg":"${msg}"}\n`
  )
}

interface Chunk {
  readonly buf: Buffer
  end: number
  /** Written up to here (a write may take part of a chunk). */
  at: number
}

/**
 * A line sink on a file descriptor: lines are copied into chunks, and full chunks are written with
 * asynchronous fs.write, one at a time, so a request never waits on a write(2). A partial chunk is
 * written at least every `flushMs`. A line never spans two chunks, so with `chunkBytes` ≤ PIPE_BUF each
 * write(2) carries whole lines and writers sharing one pipe never interleave within a line (up to
 * PIPE_BUF long). Buffers held for a slow stdout are bounded by `maxQueued` bytes; lines beyond are
 * dropped and counted, and a `log lines dropped` line takes their place.
 */
export class LineSink {
  readonly #fd: number
  readonly #chunkBytes: number
  readonly #maxQueued: number
  #current: Chunk
  readonly #queue: Chunk[] = []
  readonly #spare: Buffer[] = []
  /** Bytes of the buffers queued or being written: what a slow stdout costs in memory. */
  #held = 0
  /** The chunk being written: its write(2) is in flight unless `#retry` is set (waiting after EAGAIN). */
  #writing: Chunk | null = null
  #retry: NodeJS.Timeout | null = null
  /** A flush came while a write was in flight: the partial chunk goes out when that write is done. */
  #flushWanted = false
  #broken = false
  #waiters: Array<() => void> = []
  /** Lines dropped since the last `log lines dropped` line. */
  #dropped = 0
  readonly #timer: NodeJS.Timeout

  constructor(fd: number, chunkBytes = CHUNK, flushMs = 250, maxQueued = MAX_QUEUED) {
    this.#fd = fd
    this.#chunkBytes = chunkBytes
    this.#maxQueued = maxQueued
    this.#current = { buf: Buffer.allocUnsafe(chunkBytes), end: 0, at: 0 }
    this.#timer = setInterval(() => this.flush(), flushMs).unref()
  }

  /** Bytes of buffers waiting for stdout (at most `maxQueued`, plus the chunk being filled). */
  get held(): number {
    return this.#held
  }

  /** A write(2) is in flight on the thread pool (not merely waiting to retry after EAGAIN). */
  get inFlight(): boolean {
    return this.#writing !== null && this.#retry === null
  }

  /** Append one line (with its newline). False when it was dropped. */
  write(line: string): boolean {
    if (this.#broken) {
      this.#dropped++
      return false
    }
    if (this.#dropped !== 0) this.#noteDropped()
    let c = this.#current
    // A one-byte string of n characters takes at most 3n bytes; only a long line needs its exact length.
    if (line.length * 3 > c.buf.length - c.end) {
      const bytes = Buffer.byteLength(line)
      if (bytes > c.buf.length - c.end) {
        const own = bytes > this.#chunkBytes ? bytes : 0
        if (this.#held + (c.end > 0 ? c.buf.length : 0) + own > this.#maxQueued) {
          this.#dropped++
          return false
        }
        this.#seal()
        c = this.#current
        if (own > 0) {
          // A line longer than a chunk is a chunk of its own.
          this.#enqueue({ buf: Buffer.from(line), end: bytes, at: 0 })
          return true
        }
      }
    }
    c.end += c.buf.write(line, c.end)
    return true
  }

  /** Write what is buffered; `done` runs once all of it (and what was queued before) is written. */
  flush(done?: () => void): void {
    if (done !== undefined) this.#waiters.push(done)
    if (this.#dropped !== 0 && !this.#broken) this.#noteDropped()
    if (this.#writing !== null) this.#flushWanted = true
    else if (this.#current.end > 0) this.#seal()
    else this.#next()
  }

  /** Flush; resolves once everything is written, or after `ms` when stdout is stuck (a clean exit). */
  drained(ms = 1000): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms)
      this.flush(() => {
        clearTimeout(timer)
        resolve()
      })
    })
  }

  /**
   * At exit: write what is left synchronously, retrying a full non-blocking stdout for up to
   * `budgetMs`. A write(2) still in flight on the thread pool cannot be waited for here: the rest is
   * written behind it, as pino's SonicBoom does, and could land before it. A clean exit waits for
   * `drained()` first, so only a crash, or a stdout stuck for drained()'s whole timeout, gets here.
   */
  flushAtExit(budgetMs = 2000): void {
    if (this.#broken) return
    // A chunk waiting to retry after EAGAIN is not in flight: its remainder goes first.
    const queue = this.#retry !== null ? [this.#writing!, ...this.#queue] : [...this.#queue]
    if (this.#current.end > 0) queue.push(this.#current)
    if (this.#dropped !== 0) {
      const note = Buffer.from(this.#droppedNote())
      queue.push({ buf: note, end: note.length, at: 0 })
    }
    // Nothing is written after this, asynchronously or not.
    this.close()
    const deadline = Date.now() + budgetMs
    const nap = new Int32Array(new SharedArrayBuffer(4))
    for (const c of queue) {
      while (c.at < c.end) {
        try {
          c.at += writeSync(this.#fd, c.buf, c.at, c.end - c.at)
        } catch (err) {
          // Give up whole rather than write later lines behind a cut one.
          if ((err as NodeJS.ErrnoException).code !== 'EAGAIN' || Date.now() > deadline) return
          Atomics.wait(nap, 0, 0, 5)
        }
      }
    }
  }

  /**
   * Stop writing (before the descriptor is closed): what is not written yet is given up, and a write in
   * flight is the last one.
   */
  close(): void {
    clearInterval(this.#timer)
    if (this.#retry !== null) clearTimeout(this.#retry)
    this.#retry = null
    this.#broken = true
    this.#queue.length = 0
    this.#current = { buf: Buffer.alloc(0), end: 0, at: 0 }
  }

  #droppedNote(): string {
    const n = this.#dropped
    this.#dropped = 0
    return `{"level":40,"time":"${isoNow()}","pid":${process.pid},"dropped":${n},"msg":"log lines dropped"}\n`
  }

  #noteDropped(): void {
    const n = this.#dropped
    // Not written either: the count waits for the next line that is.
    if (!this.write(this.#droppedNote())) this.#dropped = n
  }

  /** Move the current chunk, when it has anything, to the queue and start a fresh one. */
  #seal(): void {
    const full = this.#current
    if (full.end === 0) return
    this.#current = { buf: this.#spare.pop() ?? Buffer.allocUnsafe(this.#chunkBytes), end: 0, at: 0 }
    this.#enqueue(full)
  }

  #enqueue(c: Chunk): void {
    this.#queue.push(c)
    this.#held += c.buf.length
    this.#next()
  }

  #next(): void {
    if (this.#writing !== null || this.#broken) return
    const c = this.#queue.shift()
    if (c !== undefined) {
      this.#writing = c
      this.#send()
      return
    }
    if (this.#flushWanted) {
      this.#flushWanted = false
      if (this.#current.end > 0) return this.#seal()
    }
    const waiters = this.#waiters
    if (waiters.length > 0) {
      this.#waiters = []
      for (const w of waiters) w()
    }
  }

  #send = (): void => {
    this.#retry = null
    const c = this.#writing!
    write(this.#fd, c.buf, c.at, c.end - c.at, null, this.#written)
  }

  #written = (err: NodeJS.ErrnoException | null, n: number): void => {
    const c = this.#writing!
    if (this.#broken) {
      // close() came while this was in flight: it was the last write.
      this.#writing = null
      return
    }
    if (err !== null) {
      if (err.code === 'EAGAIN') {
        // A non-blocking pipe that is full: give its reader a moment.
        this.#retry = setTimeout(this.#send, 10)
        return
      }
      // stdout is gone (EPIPE, EBADF …): nothing more can be written; later lines count as dropped.
      this.#broken = true
      for (const q of this.#queue) this.#held -= q.buf.length
      this.#queue.length = 0
      this.#current.end = 0
      n = c.end - c.at
    }
    c.at += n
    if (c.at < c.end) return this.#send()
    this.#held -= c.buf.length
    this.#writing = null
    if (c.buf.length === this.#chunkBytes && this.#spare.length < 2) this.#spare.push(c.buf)
    this.#next()
  }
}

/**
 * The process's logger and its sink. `shared`: other processes write to the same stdout (--workers), so
 * when stdout is a pipe or socket every write stays within PIPE_BUF.
 */
export function createLogger(level: string, shared = false): { log: Logger; sink: LineSink } {
  const sink = new LineSink(1, shared && isPipe(1) ? PIPE_BUF : CHUNK)
  const log = pino(
    { level, base: { pid: process.pid }, timestamp: () => `,"time":"${isoNow()}"`, messageKey: 'msg' },
    sink,
  )
  process.on('exit', () => sink.flushAtExit())
  return { log, sink }
}

function isPipe(fd: number): boolean {
  try {
    const stat = fstatSync(fd)
    return stat.isFIFO() || stat.isSocket()
  } catch {
    return false // a closed stdout: the first write finds out, and lines are counted as dropped
  }
}

/**
 * At most one line per `everyMs` for a message that can repeat at request rate (a dead shadow's
 * errors): the line that passes tells how many were held back since the one before it.
 */
export class LogLimiter {
  readonly #everyMs: number
  #next = 0
  #held = 0

  constructor(everyMs = 1000) {
    this.#everyMs = everyMs
  }

  /** -1: hold this line back (it is counted); otherwise write it, with this many held back before it. */
  take(now: number = Date.now()): number {
    if (now < this.#next) {
      this.#held++
      return -1
    }
    this.#next = now + this.#everyMs
    const held = this.#held
    this.#held = 0
    return held
  }
}
