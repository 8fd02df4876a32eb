/**
 * The `h2c://` client's headers and body timeouts of 1 s and more, checked by its coarse clock rather
 * than a timer per stream, against a real HTTP/2 upstream on 127.0.0.1: a call past its timeout fails
 * with undici's code, never before the timeout has passed; one answered in time (a slow body whose gaps
 * stay short, or one held by a full client) is not failed.
 */
import type { Dispatcher } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import { H2Pool } from '../../proxy/upstream/h2-client.ts'
import { type H2Handler, type H2Upstream, startH2Upstream } from '../helpers/h2-upstream.ts'

const SECOND = 1000

let opened: { close(): Promise<void> }[] = []
afterEach(async () => {
  await Promise.all(opened.map((u) => u.close()))
  opened = []
})

async function upstream(handler: H2Handler): Promise<H2Upstream> {
  const u = await startH2Upstream('stable', { handler })
  opened.push(u)
  return u
}

function pool(up: H2Upstream, timeouts: { headers: number; body: number }): H2Pool {
  const p = new H2Pool(`127.0.0.1:${up.port}`, {
    connections: 1,
    streams: 100,
    connectTimeout: 2000,
    headersTimeout: timeouts.headers,
    bodyTimeout: timeouts.body,
    idleTimeout: 4000,
  })
  opened.push({ close: () => p.destroy() })
  return p
}

interface Outcome {
  status: number
  body: string
  /** performance.now() when the call was dispatched, and when its head and its last chunk came. */
  started: number
  head: number
  lastChunk: number
  controller: Dispatcher.DispatchController | null
  /** Settles when the call ends or fails. */
  done: Promise<{ error: (Error & { code?: string }) | null; at: number }>
}

/** A GET of `path`; `onHead` sees the controller when the head comes (to pause it). */
function call(p: H2Pool, path: string, onHead?: (c: Dispatcher.DispatchController) => void): Outcome {
  let settle!: (v: { error: (Error & { code?: string }) | null; at: number }) => void
  const out: Outcome = {
    status: 0,
    body: '',
    started: performance.now(),
    head: 0,
    lastChunk: 0,
    controller: null,
    done: new Promise((ok) => {
      settle = ok
    }),
  }
  p.dispatch(
    { origin: 'http://127.0.0.1', method: 'GET', path, headers: {} },
    {
      onRequestStart(controller) {
        out.controller = controller
      },
      onResponseStart(controller, status) {
        out.status = status
        out.head = performance.now()
        onHead?.(controller)
      },
      onResponseData(_controller, chunk) {
        out.body += chunk.toString()
        out.lastChunk = performance.now()
      },
      onResponseEnd() {
        settle({ error: null, at: performance.now() })
      },
      onResponseError(_controller, error) {
        settle({ error, at: performance.now() })
      },
    },
  )
  return out
}

/** /hang never answers; /drip sends its head, then one chunk every 300 ms, five, then ends; /stall sends its head and one chunk. */
const handler: H2Handler = (req, res) => {
  req.resume()
  if (req.url === '/hang') return
  if (req.url === '/stall') {
    res.writeHead(200)
    res.write('first')
    return
  }
  if (req.url === '/drip') {
    res.writeHead(200)
    let n = 0
    const t = setInterval(() => {
      res.write(`${n}`)
      if (++n === 5) {
        clearInterval(t)
        res.end()
      }
    }, 300)
    res.on('close', () => clearInterval(t))
    return
  }
  res.writeHead(200)
  res.end(`answer ${req.url}`)
}

describe('coarse upstream timeouts on h2c://', () => {
  it('a 1 s headers timeout fails an unanswered call with UND_ERR_HEADERS_TIMEOUT, not before 1 s; a call answered in time is not failed', async () => {
    const p = pool(await upstream(handler), { headers: SECOND, body: 30 * SECOND })
    const hung = call(p, '/hang')
    const quick = call(p, '/quick')
    const q = await quick.done
    expect(q.error).toBeNull()
    expect(quick.status).toBe(200)
    expect(quick.body).toBe('answer /quick')
    const h = await hung.done
    expect(h.error?.code).toBe('UND_ERR_HEADERS_TIMEOUT')
    expect(h.error?.message).toBe('the upstream sent no answer head in time')
    expect(h.at - hung.started).toBeGreaterThanOrEqual(SECOND)
    // Coarse, not lost: well within a generous bound.
    expect(h.at - hung.started).toBeLessThan(10 * SECOND)
  })

  it('a 1 s body timeout fails a call whose body stalls with UND_ERR_BODY_TIMEOUT, counted from its last chunk; gaps under it are not failed', async () => {
    const p = pool(await upstream(handler), { headers: 30 * SECOND, body: SECOND })
    const stalled = call(p, '/stall')
    // Five chunks over 1.5 s, more than the body timeout in all, each gap well under it.
    const drip = call(p, '/drip')
    const d = await drip.done
    expect(d.error).toBeNull()
    expect(drip.body).toBe('01234')
    const s = await stalled.done
    expect(stalled.status).toBe(200)
    expect(stalled.body).toBe('first')
    expect(s.error?.code).toBe('UND_ERR_BODY_TIMEOUT')
    expect(s.error?.message).toBe('the upstream sent no body data in time')
    expect(s.at - stalled.lastChunk).toBeGreaterThanOrEqual(SECOND)
    expect(s.at - stalled.lastChunk).toBeLessThan(10 * SECOND)
  })

  it('a call paused by its client is not timed out while paused, and finishes once resumed', async () => {
    const p = pool(await upstream(handler), { headers: SECOND, body: SECOND })
    let failedEarly = false
    const paused = call(p, '/whole', (c) => c.pause())
    void paused.done.then(() => {
      failedEarly = true
    })
    // Its head came (and it was paused) before the hung call was sent, so a body timeout counted
    // while paused would have run out no later than the hung call's headers timeout.
    await waitForHead(paused)
    const hung = call(p, '/hang')
    expect((await hung.done).error?.code).toBe('UND_ERR_HEADERS_TIMEOUT')
    expect(failedEarly).toBe(false)
    expect(performance.now() - paused.head).toBeGreaterThanOrEqual(SECOND)
    paused.controller!.resume()
    const r = await paused.done
    expect(r.error).toBeNull()
    expect(paused.body).toBe('answer /whole')
  })
})

/** Resolves once the call's head has come (its handler ran onResponseStart). */
async function waitForHead(o: Outcome): Promise<void> {
  while (o.head === 0) await new Promise((r) => setImmediate(r))
}
