// Functional look at a subject before it is loaded: does it answer 200 with the right body sizes, and
// for the canary subject, which share of users reaches the canary and do users stick to one upstream.
import { Pool } from 'undici'

interface Answer {
  status: number
  bytes: number
  upstream: string | null
}

async function get(pool: Pool, path: string, headers: Record<string, string>): Promise<Answer> {
  const res = await pool.request({ path, method: 'GET', headers, headersTimeout: 5000, bodyTimeout: 5000 })
  const body = Buffer.from(await res.body.arrayBuffer())
  const up = res.headers['x-upstream']
  return { status: res.statusCode, bytes: body.length, upstream: typeof up === 'string' ? up : null }
}

/** null when both paths answer as the upstream does, otherwise what went wrong. */
export async function checkAnswers(origin: string, stickyHeader: string | null): Promise<string | null> {
  const pool = new Pool(origin, { connections: 1 })
  const headers: Record<string, string> = stickyHeader === null ? {} : { [stickyHeader]: 'user-probe' }
  try {
    for (const [path, size] of [
      ['/', 100],
      ['/16k', 16384],
    ] as const) {
      const a = await get(pool, path, headers)
      if (a.status !== 200 || a.bytes !== size) {
        return `GET ${path} answered ${a.status} with ${a.bytes} B (expected 200 with ${size} B)`
      }
    }
    return null
  } catch (err) {
    return `GET failed: ${(err as Error).message}`
  } finally {
    await pool.destroy()
  }
}

export interface CanaryObservation {
  users: number
  canaryShare: number
  /** share of users whose two requests reached the same upstream */
  sticky: number
  unlabelled: number
}

/** Ask twice for each of `users` users; count answers by their `x-upstream` header. */
export async function observeCanary(
  origin: string,
  header: string,
  users: number,
): Promise<CanaryObservation> {
  const pool = new Pool(origin, { connections: 4 })
  let canary = 0
  let same = 0
  let unlabelled = 0
  try {
    for (let u = 0; u < users; u++) {
      const headers = { [header]: `probe-user-${u}` }
      const [a, b] = [await get(pool, '/', headers), await get(pool, '/', headers)]
      for (const x of [a, b]) {
        if (x.upstream === 'canary') canary++
        if (x.upstream === null) unlabelled++
      }
      if (a.upstream === b.upstream) same++
    }
  } finally {
    await pool.destroy()
  }
  return { users, canaryShare: canary / (2 * users), sticky: same / users, unlabelled }
}
