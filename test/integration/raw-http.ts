/**
 * A raw HTTP/1.1 client over a plain `net` socket, for the requests a normal client refuses to send
 * (absolute-form targets, duplicate Host, CL+TE, hop-by-hop fields, slow header blocks) and for reading
 * exactly what came back on the wire: framing, 1xx answers, trailers, and whether the connection closed.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { connect, type Socket } from 'node:net'

export interface RawResponse {
  readonly status: number
  readonly statusText: string
  /** Field lines as sent, in order. */
  readonly rawHeaders: readonly [string, string][]
  /** Lower-cased name → values joined with ", ". */
  readonly headers: Readonly<Record<string, string>>
  readonly body: Buffer
  readonly trailers: Readonly<Record<string, string>>
  /** False when the connection closed before the body was complete (by length or final chunk). */
  readonly complete: boolean
}

export interface ReadOptions {
  /** The request was HEAD: the answer has no body whatever its fields say. */
  readonly head?: boolean
}

const open = new Set<RawClient>()

/** Destroy every raw connection still open (for afterEach). */
export function closeRawClients(): void {
  for (const c of open) c.close()
  open.clear()
}

export class RawClient {
  readonly socket: Socket
  readonly localPort: number
  #buf: Buffer = Buffer.alloc(0)
  #closed = false
  #wake: (() => void) | null = null
  /** Resolves when the peer ended or the socket closed. */
  readonly closed: Promise<void>

  private constructor(socket: Socket) {
    this.socket = socket
    this.localPort = socket.localPort!
    socket.on('data', (d: Buffer) => {
      this.#buf = this.#buf.length === 0 ? d : Buffer.concat([this.#buf, d])
      this.#notify()
    })
    socket.on('error', () => {})
    this.closed = new Promise((resolve) => {
      const done = () => {
        this.#closed = true
        this.#notify()
        resolve()
      }
      socket.once('end', done)
      socket.once('close', done)
    })
  }

  static open(port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1')
      socket.once('connect', () => {
        const client = new RawClient(socket)
        open.add(client)
        resolve(client)
      })
      socket.once('error', reject)
    })
  }

  get isClosed(): boolean {
    return this.#closed
  }

  /** Bytes received and not yet consumed by `readResponse`. */
  get pending(): Buffer {
    return this.#buf
  }

  write(data: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(data, (err) => (err ? reject(err) : resolve())))
  }

  #notify(): void {
    const wake = this.#wake
    this.#wake = null
    wake?.()
  }

  /** Waits until `test` holds over the received bytes; false if the connection closes first. */
  async waitFor(test: (buf: Buffer) => boolean): Promise<boolean> {
    for (;;) {
      if (test(this.#buf)) return true
      if (this.#closed) return false
      await new Promise<void>((resolve) => (this.#wake = resolve))
    }
  }

  /** Read everything until the peer closes. */
  async readToClose(): Promise<Buffer> {
    await this.closed
    const all = this.#buf
    this.#buf = Buffer.alloc(0)
    return all
  }

  async #line(): Promise<string | null> {
    if (!(await this.waitFor((b) => b.indexOf('\r\n') !== -1))) return null
    const at = this.#buf.indexOf('\r\n')
    const line = this.#buf.subarray(0, at).toString('latin1')
    this.#buf = this.#buf.subarray(at + 2)
    return line
  }

  async #bytes(n: number): Promise<Buffer | null> {
    if (!(await this.waitFor((b) => b.length >= n))) return null
    const out = this.#buf.subarray(0, n)
    this.#buf = this.#buf.subarray(n)
    return out
  }

  /** Parse one response (a 1xx included) off the connection. */
  async readResponse(opts: ReadOptions = {}): Promise<RawResponse> {
    if (!(await this.waitFor((b) => b.indexOf('\r\n\r\n') !== -1))) {
      throw new Error(
        `connection closed before a response head; got ${JSON.stringify(this.#buf.toString('latin1'))}`,
      )
    }
    const end = this.#buf.indexOf('\r\n\r\n')
    const lines = this.#buf.subarray(0, end).toString('latin1').split('\r\n')
    this.#buf = this.#buf.subarray(end + 4)
    const m = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(lines[0]!)
    if (m === null) throw new Error(`not a status line: ${JSON.stringify(lines[0])}`)
    const status = Number(m[1])
    const rawHeaders: [string, string][] = []
    const headers: Record<string, string> = {}
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':')
      const name = line.slice(0, colon)
      const value = line.slice(colon + 1).trim()
      rawHeaders.push([name, value])
      const lower = name.toLowerCase()
      headers[lower] = lower in headers ? `${headers[lower]}, ${value}` : value
    }
    const base = { status, statusText: m[2]!, rawHeaders, headers }
    const trailers: Record<string, string> = {}
    if (opts.head || status < 200 || status === 204 || status === 304) {
      return { ...base, body: Buffer.alloc(0), trailers, complete: true }
    }
    if (headers['transfer-encoding']?.toLowerCase().endsWith('chunked')) {
      const parts: Buffer[] = []
      for (;;) {
        const sizeLine = await this.#line()
        if (sizeLine === null) return { ...base, body: Buffer.concat(parts), trailers, complete: false }
        const size = Number.parseInt(sizeLine, 16)
        if (size === 0) {
          for (;;) {
            const t = await this.#line()
            if (t === null) return { ...base, body: Buffer.concat(parts), trailers, complete: false }
            if (t === '') return { ...base, body: Buffer.concat(parts), trailers, complete: true }
            const colon = t.indexOf(':')
            trailers[t.slice(0, colon).toLowerCase()] = t.slice(colon + 1).trim()
          }
        }
        const chunk = await this.#bytes(size + 2)
        if (chunk === null) {
          parts.push(this.#buf)
          this.#buf = Buffer.alloc(0)
          return { ...base, body: Buffer.concat(parts), trailers, complete: false }
        }
        parts.push(chunk.subarray(0, size))
      }
    }
    const length = headers['content-length']
    if (length !== undefined) {
      const n = Number(length)
      const body = await this.#bytes(n)
      if (body === null) {
        const partial = this.#buf
        this.#buf = Buffer.alloc(0)
        return { ...base, body: partial, trailers, complete: false }
      }
      return { ...base, body, trailers, complete: true }
    }
    // Delimited by the close of the connection.
    return { ...base, body: await this.readToClose(), trailers, complete: true }
  }

  close(): void {
    open.delete(this)
    this.socket.destroy()
  }
}

/** Send one raw request on a fresh connection and read one response. */
export async function rawRequest(
  port: number,
  text: string,
  opts: ReadOptions = {},
): Promise<RawResponse & { client: RawClient }> {
  const client = await RawClient.open(port)
  await client.write(text)
  const res = await client.readResponse(opts)
  return { ...res, client }
}

/** The JSON error body the proxy answers with. */
export function errorOf(res: RawResponse): { error: string; message: string } {
  return JSON.parse(res.body.toString())
}

/** Poll `test` every 20 ms until it returns a value other than undefined, for at most `ms`. */
async function poll<T>(test: () => T | undefined, ms: number): Promise<T | undefined> {
  const until = Date.now() + ms
  for (;;) {
    const v = test()
    if (v !== undefined || Date.now() > until) return v
    await new Promise((r) => setTimeout(r, 20))
  }
}

/**
 * Linux: the inode of the server's socket for `client`'s connection (from /proc/net/tcp), to check later
 * whether the server process still holds it. Call it while the connection is established. undefined
 * without /proc.
 */
export function serverSocketInode(serverPort: number, client: RawClient): Promise<string | undefined> {
  const local = `:${serverPort.toString(16).toUpperCase().padStart(4, '0')}`
  const remote = `:${client.localPort.toString(16).toUpperCase().padStart(4, '0')}`
  return poll(() => {
    let table: string
    try {
      table = readFileSync('/proc/net/tcp', 'latin1')
    } catch {
      return null
    }
    for (const line of table.split('\n')) {
      const cols = line.trim().split(/\s+/)
      // An accepted socket gets its inode once the process accepted it.
      if (cols[1]?.endsWith(local) && cols[2]?.endsWith(remote) && cols[9] !== '0') return cols[9]!
    }
    return undefined
  }, 2000).then((v) => v ?? undefined)
}

function holds(pid: number, inode: string): boolean {
  const link = `socket:[${inode}]`
  let fds: string[]
  try {
    fds = readdirSync(`/proc/${pid}/fd`)
  } catch {
    return false
  }
  for (const fd of fds) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`) === link) return true
    } catch {
      // closed while we looked
    }
  }
  return false
}

/**
 * Waits (bounded) until process `pid` no longer holds the socket `inode`: a connection the server is
 * done with must not stay open holding a descriptor. True when released, or when this cannot be known.
 */
export async function socketReleased(pid: number, inode: string | undefined, ms = 5000): Promise<boolean> {
  if (inode === undefined) return true
  return (await poll(() => (holds(pid, inode) ? undefined : true), ms)) === true
}

/** `promise`, or a rejection naming `what` if it has not settled within `ms`. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms)
  })
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer))
}
