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
 * write(2) carries whole lines and writers sharing one pipe never interleave within a line.
 */
export class LineSink {
  readonly #fd: number
  readonly #chunkBytes: number
  readonly #maxQueued: number
  #current: Chunk
  readonly #queue: Chunk[] = []
  readonly #spare: Buffer[] = []
  #queued = 0
  #writing: Chunk | null = null
  #broken = false
  #waiters: Array<() => void> = []
  /** Lines dropped since the last time that was written (stdout too slow, or closed). */
  #dropped = 0
  readonly #timer: NodeJS.Timeout

  constructor(fd: number, chunkBytes = CHUNK, flushMs = 250, maxQueued = MAX_QUEUED) {
    this.#fd = fd
    this.#chunkBytes = chunkBytes
    this.#maxQueued = maxQueued
    this.#current = { buf: Buffer.allocUnsafe(chunkBytes), end: 0, at: 0 }
    this.#timer = setInterval(() => this.flush(), flushMs).unref()
  }

  /** Append one line (with its newline). False when it was dropped. */
  write(line: string): boolean {
    let c = this.#current
    // A one-byte string of n characters takes at most 3n bytes; only a long line needs its exact length.
    if (line.length * 3 > c.buf.length - c.end) {
      const bytes = Buffer.byteLength(line)
      if (bytes > c.buf.length - c.end) {
        if (this.#queued + c.end + bytes > this.#maxQueued || this.#broken) {
          this.#dropped++
          return false
        }
        this.#seal()
        c = this.#current
        if (bytes > c.buf.length) {
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
    if (this.#current.end > 0) this.#seal()
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

  /** On exit: write what is queued synchronously. A chunk already handed to a write is not written twice. */
  flushSync(): void {
    clearInterval(this.#timer)
    if (this.#current.end > 0) {
      this.#queue.push(this.#current)
      this.#current = { buf: Buffer.alloc(0), end: 0, at: 0 }
    }
    for (const c of this.#queue) {
      for (let tries = 0; c.at < c.end && tries < 100; tries++) {
        try {
          c.at += writeSync(this.#fd, c.buf, c.at, c.end - c.at)
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') break
        }
      }
    }
    this.#queue.length = 0
  }

  /** Move the current chunk to the queue and start a fresh one. */
  #seal(): void {
    const full = this.#current
    const buf = this.#spare.pop() ?? Buffer.allocUnsafe(this.#chunkBytes)
    this.#current = { buf, end: 0, at: 0 }
    this.#enqueue(full)
  }

  #enqueue(c: Chunk): void {
    this.#queue.push(c)
    this.#queued += c.end
    this.#next()
  }

  #next(): void {
    if (this.#writing !== null) return
    const c = this.#queue.shift()
    if (c === undefined) {
      const waiters = this.#waiters
      if (waiters.length > 0) {
        this.#waiters = []
        for (const w of waiters) w()
      }
      return
    }
    if (this.#dropped > 0 && !this.#broken) {
      const note = `{"level":40,"time":"${isoNow()}","pid":${process.pid},"dropped":${this.#dropped},"msg":"log lines dropped"}\n`
      this.#dropped = 0
      this.#queue.unshift(c)
      this.#writing = { buf: Buffer.from(note), end: Buffer.byteLength(note), at: 0 }
      this.#queued += this.#writing.end
    } else this.#writing = c
    this.#send()
  }

  #send = (): void => {
    const c = this.#writing!
    write(this.#fd, c.buf, c.at, c.end - c.at, null, this.#written)
  }

  #written = (err: NodeJS.ErrnoException | null, n: number): void => {
    const c = this.#writing!
    if (err !== null) {
      if (err.code === 'EAGAIN') {
        // A non-blocking pipe that is full: give its reader a moment.
        setTimeout(this.#send, 10)
        return
      }
      // stdout is gone (EPIPE, EBADF …): nothing more can be written; lines are counted as dropped.
      this.#broken = true
      for (const q of this.#queue) this.#queued -= q.end
      this.#queue.length = 0
      n = c.end - c.at
    }
    c.at += n
    if (c.at < c.end) return this.#send()
    this.#queued -= c.end
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
  const stat = fstatSync(1)
  const sink = new LineSink(1, shared && (stat.isFIFO() || stat.isSocket()) ? PIPE_BUF : CHUNK)
  const log = pino(
    { level, base: { pid: process.pid }, timestamp: () => `,"time":"${isoNow()}"`, messageKey: 'msg' },
    sink,
  )
  process.on('exit', () => sink.flushSync())
  return { log, sink }
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
