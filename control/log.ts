/**
 * JSON-lines logging on stdout through pino. Control logs a few lines per change, never per packet, so
 * it writes synchronously: a line logged before a `kill -9` is not lost in a buffer.
 */
import pino, { type Logger } from 'pino'

export function createLogger(level: string): Logger {
  return pino(
    { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime, messageKey: 'msg' },
    pino.destination({ dest: 1, sync: true }),
  )
}
