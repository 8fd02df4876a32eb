/**
 * A raw HTTP/2 client over a TCP socket, frame by frame, for what no well-behaved client sends: rapid
 * resets and CONTINUATION floods. Header blocks use HPACK literals without Huffman coding.
 */
import { connect, type Socket } from 'node:net'

export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, CONTINUATION: 9 }
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 }
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')

export function frame(
  type: number,
  flags: number,
  stream: number,
  payload: Buffer = Buffer.alloc(0),
): Buffer {
  const head = Buffer.alloc(9)
  head.writeUIntBE(payload.length, 0, 3)
  head[3] = type
  head[4] = flags
  head.writeUInt32BE(stream & 0x7fffffff, 5)
  return Buffer.concat([head, payload])
}

function literal(name: string, value: string): Buffer {
  // Literal header field without indexing, new name (RFC 7541 6.2.2); lengths below 127.
  return Buffer.concat([
    Buffer.from([0x00, name.length]),
    Buffer.from(name, 'latin1'),
    Buffer.from([value.length]),
    Buffer.from(value, 'latin1'),
  ])
}

/** GET `path` on `authority`: :method GET, :scheme http, :path, :authority, and `extra` fields. */
export function requestBlock(path: string, authority = 'localhost', extra: [string, string][] = []): Buffer {
  const parts = [Buffer.from([0x82, 0x86]), literal(':path', path), literal(':authority', authority)]
  for (const [n, v] of extra) parts.push(literal(n, v))
  return Buffer.concat(parts)
}

export { literal as headerField }

export interface Received {
  readonly type: number
  readonly flags: number
  readonly stream: number
  readonly payload: Buffer
}

/** A connection that has sent the preface and its SETTINGS, and collects every frame the server sends. */
export class RawH2 {
  readonly socket: Socket
  readonly frames: Received[] = []
  closed = false
  #buffer = Buffer.alloc(0)
  #waiters: (() => void)[] = []

  private constructor(socket: Socket) {
    this.socket = socket
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk])
      while (this.#buffer.length >= 9) {
        const length = this.#buffer.readUIntBE(0, 3)
        if (this.#buffer.length < 9 + length) break
        const f = {
          type: this.#buffer[3]!,
          flags: this.#buffer[4]!,
          stream: this.#buffer.readUInt32BE(5) & 0x7fffffff,
          payload: this.#buffer.subarray(9, 9 + length),
        }
        this.#buffer = this.#buffer.subarray(9 + length)
        this.frames.push(f)
        // The server's SETTINGS must be acknowledged, or it would cut the connection for that alone.
        if (f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0)
          this.send(frame(FRAME.SETTINGS, FLAG.ACK, 0))
      }
      this.#wake()
    })
    socket.on('error', () => {})
    socket.on('close', () => {
      this.closed = true
      this.#wake()
    })
  }

  static open(port: number): Promise<RawH2> {
    return new Promise((ok, fail) => {
      const socket = connect(port, '127.0.0.1', () => {
        const c = new RawH2(socket)
        socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0)]))
        ok(c)
      })
      socket.once('error', fail)
    })
  }

  send(data: Buffer): boolean {
    if (this.socket.destroyed) return false
    return this.socket.write(data)
  }

  /** The server's GOAWAY, once it came: its last stream id and error code. */
  get goaway(): { lastStream: number; code: number } | null {
    const f = this.frames.find((x) => x.type === FRAME.GOAWAY)
    return f ? { lastStream: f.payload.readUInt32BE(0) & 0x7fffffff, code: f.payload.readUInt32BE(4) } : null
  }

  /** Waits (up to `ms`) until `test` holds over what has arrived, or the connection closed. */
  async until(test: () => boolean, ms = 5000): Promise<boolean> {
    const deadline = Date.now() + ms
    while (!test() && !this.closed) {
      const left = deadline - Date.now()
      if (left <= 0) return false
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left)
        this.#waiters.push(() => {
          clearTimeout(t)
          resolve()
        })
      })
    }
    return test()
  }

  #wake(): void {
    const w = this.#waiters
    this.#waiters = []
    for (const f of w) f()
  }

  close(): void {
    this.socket.destroy()
  }
}
