/**
 * Bearer tokens with roles. The token file has one token a line: `TOKEN ROLE NAME` (ROLE: read,
 * operator or proxy), or a bare `TOKEN` (operator "default"); `#` starts a comment. VEER_TOKEN adds an
 * operator named "env", unless the token file lists that same token: then the file's line (its role and
name) is the one that holds, and control says so once at start (`VEER_TOKEN` exported for the CLI
must not stop control from starting). Several tokens may be valid at once, so a token can be rotated without a gap.
 * Tokens are kept only as SHA-256 digests and compared in constant time; they never reach a log or an
 * error message.
 */
import { createHash, timingSafeEqual } from 'node:crypto'

export const ROLES = ['read', 'operator', 'proxy'] as const
export type Role = (typeof ROLES)[number]

export interface Identity {
  readonly name: string
  readonly role: Role
}

interface Entry {
  readonly digest: Buffer
  readonly identity: Identity
}

/** What a call needs: `read` any GET; `operate` changes weights and rollouts; `wire` the proxy link. */
export type Access = 'read' | 'operate' | 'wire'

export function allows(role: Role, access: Access): boolean {
  if (access === 'read') return true
  if (access === 'wire') return role === 'proxy' || role === 'operator'
  return role === 'operator'
}

export const MIN_TOKEN_LENGTH = 16
const TOKEN = /^[\x21-\x7e]+$/
const NAME = /^[A-Za-z0-9._@-]{1,64}$/

const digest = (token: string): Buffer => createHash('sha256').update(token).digest()

export type TokenResult = { ok: true; tokens: Tokens; notes: string[] } | { ok: false; error: string }

function checkToken(token: string, where: string): string | null {
  if (!TOKEN.test(token)) return `${where}: the token has characters other than visible ASCII`
  if (token.length < MIN_TOKEN_LENGTH)
    return `${where}: the token is shorter than ${MIN_TOKEN_LENGTH} characters; make one with: openssl rand -hex 32`
  return null
}

/** Parse a token file's text (and VEER_TOKEN, if set); the first problem is the error, naming its line. */
export function parseTokens(text: string | null, source: string, env: string | undefined): TokenResult {
  const entries: Entry[] = []
  const seen = new Set<string>()
  const add = (token: string, identity: Identity, where: string): string | null => {
    const problem = checkToken(token, where)
    if (problem) return problem
    const d = digest(token)
    const key = d.toString('hex')
    if (seen.has(key)) return `${where}: the same token is listed twice; give each token one line`
    seen.add(key)
    entries.push({ digest: d, identity })
    return null
  }
  const lines = text === null ? [] : text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/#.*$/, '').trim()
    if (line === '') continue
    const where = `${source} line ${i + 1}`
    const [token, role, name, ...rest] = line.split(/\s+/)
    let identity: Identity
    if (role === undefined) identity = { name: 'default', role: 'operator' }
    else {
      if (!(ROLES as readonly string[]).includes(role))
        return {
          ok: false,
          // The field is not echoed: on a malformed line it may be part of a token.
          error: `${where}: the role (second field) must be one of ${ROLES.join(', ')}`,
        }
      if (name === undefined || rest.length > 0)
        return { ok: false, error: `${where}: write TOKEN ROLE NAME (three fields), or a bare TOKEN` }
      if (!NAME.test(name))
        return { ok: false, error: `${where}: name must be 1-64 letters, digits, ., _, @ or -` }
      identity = { name, role: role as Role }
    }
    const problem = add(token!, identity, where)
    if (problem) return { ok: false, error: problem }
  }
  const notes: string[] = []
  if (env !== undefined && env !== '') {
    const token = env.trim()
    const listed = entries.find((e) => timingSafeEqual(e.digest, digest(token)))
    if (listed !== undefined)
      notes.push(
        `VEER_TOKEN is also listed in ${source}; the file's line holds (role ${listed.identity.role}, name ${listed.identity.name})`,
      )
    else {
      const problem = add(token, { name: 'env', role: 'operator' }, 'VEER_TOKEN')
      if (problem) return { ok: false, error: problem }
    }
  }
  if (entries.length === 0)
    return {
      ok: false,
      error:
        text === null
          ? 'no token: give --token-file FILE or set VEER_TOKEN (every call but /healthz, /readyz and the /ui/ page files needs one)'
          : `${source}: has no token; write one per line: TOKEN [ROLE NAME]`,
    }
  return { ok: true, tokens: new Tokens(entries), notes }
}

export class Tokens {
  private readonly entries: readonly Entry[]

  constructor(entries: readonly Entry[]) {
    this.entries = entries
  }

  get size(): number {
    return this.entries.length
  }

  /** The identity an `Authorization` header proves, or null. Every entry is compared, each in constant time. */
  check(header: string | undefined): Identity | null {
    if (header === undefined) return null
    const m = /^Bearer +(\S+) *$/i.exec(header)
    if (m === null) return null
    const d = digest(m[1]!)
    let found: Identity | null = null
    for (const e of this.entries) if (timingSafeEqual(d, e.digest)) found = e.identity
    return found
  }
}

/**
 * Repeated authentication failures from one address are answered 429 for a while: a token bucket of
 * `burst` failures refilled one every `refillMs`. While an address is blocked, even a valid token is
 * refused, so guessing gains nothing from the 429/401 difference.
 */
export class FailureLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>()
  private readonly burst: number
  private readonly refillMs: number

  constructor(burst = 10, refillMs = 6000) {
    this.burst = burst
    this.refillMs = refillMs
  }

  private level(address: string, now: number): { tokens: number; at: number } | undefined {
    const b = this.buckets.get(address)
    if (b === undefined) return undefined
    const refilled = Math.floor((now - b.at) / this.refillMs)
    if (refilled > 0) {
      b.tokens = Math.min(this.burst, b.tokens + refilled)
      b.at += refilled * this.refillMs
    }
    if (b.tokens >= this.burst) {
      this.buckets.delete(address)
      return undefined
    }
    return b
  }

  /** Seconds to wait when the address is blocked, else 0. */
  blocked(address: string, now: number): number {
    const b = this.level(address, now)
    if (b === undefined || b.tokens > 0) return 0
    return Math.max(1, Math.ceil((b.at + this.refillMs - now) / 1000))
  }

  fail(address: string, now: number): void {
    const b = this.level(address, now)
    if (b === undefined) this.buckets.set(address, { tokens: this.burst - 1, at: now })
    else b.tokens = Math.max(0, b.tokens - 1)
    // Bound the map: an address flood must not grow it without end.
    if (this.buckets.size > 10_000) {
      const first = this.buckets.keys().next().value
      if (first !== undefined) this.buckets.delete(first)
    }
  }
}
