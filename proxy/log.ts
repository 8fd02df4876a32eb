/** JSON-lines logging on stdout through pino, buffered off the hot path (flushed on exit). */
import pino, { type Logger } from 'pino'

export function createLogger(level: string): Logger {
  // An asynchronous destination with a small buffer: a request never waits on a write(2). Writes stay
  // within PIPE_BUF (4096), so lines of --workers processes sharing one stdout pipe never interleave.
  const destination = pino.destination({ dest: 1, sync: false, minLength: 2048, maxWrite: 4096 })
  const logger = pino(
    { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime, messageKey: 'msg' },
    destination,
  )
  process.on('exit', () => destination.flushSync())
  // Lines reach the terminal or collector within a second even under light traffic.
  setInterval(() => logger.flush(), 1000).unref()
  return logger
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
