/**
 * A smoke-check target on 127.0.0.1 (ephemeral port) that answers as a healthy canary does (200 with
 * `x-veer-version: canary`), except while `hold` is on: then each request is held open until
 * `release()`. `nextHeld()` resolves when the next request is being held (an event, not a sleep).
 */
import { once } from 'node:events'
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface HeldSmoke {
  readonly url: string
  hold: boolean
  /** Requests held open now. */
  readonly held: number
  /** Resolves once a request is held open (at once if one is). */
  nextHeld(): Promise<void>
  /** Answer every held request. */
  release(): void
  close(): Promise<void>
}

export async function startHeldSmoke(): Promise<HeldSmoke> {
  const waiting: ServerResponse[] = []
  let wake: (() => void) | null = null
  const answer = (res: ServerResponse) => {
    res.writeHead(200, { 'x-veer-version': 'canary', 'content-type': 'text/plain' })
    res.end('ok')
  }
  const target = {
    hold: false,
    url: '',
    get held() {
      return waiting.length
    },
    nextHeld: () =>
      waiting.length > 0
        ? Promise.resolve()
        : new Promise<void>((resolve) => {
            wake = resolve
          }),
    release: () => {
      for (const res of waiting.splice(0)) answer(res)
    },
    close: async () => {
      target.release()
      server.closeAllConnections()
      server.close()
      await once(server, 'close')
    },
  }
  const server = createServer((req, res) => {
    req.resume()
    if (!target.hold) return answer(res)
    waiting.push(res)
    wake?.()
    wake = null
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  target.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/smoke`
  return target
}
