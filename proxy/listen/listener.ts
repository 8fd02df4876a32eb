/**
 * The socket side of the traffic listener: one port, and a connection goes to the HTTP/1.1 server or
 * the HTTP/2 server, which hand their requests to the same handler (server.ts). Over TLS, ALPN decides
 * (h2, else http/1.1). In cleartext the first bytes do: the HTTP/2 connection preface (what gRPC
 * clients in a mesh send, "prior knowledge") or anything else, which is HTTP/1.1.
 */
import type { Server as HttpServer } from 'node:http'
import type { Http2Server, ServerHttp2Session } from 'node:http2'
import {
  type AddressInfo,
  createServer as createNetServer,
  type Server as NetServer,
  type Socket,
} from 'node:net'
import { createServer as createTlsServer, type TLSSocket, type Server as TlsServer } from 'node:tls'
import { sendErrorOnSocket } from './respond.ts'
import { pickContext, type TlsMaterial } from './tls.ts'

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')

export interface ListenerOptions {
  readonly http1: HttpServer
  readonly http2: Http2Server
  /** Certificates: the listener speaks TLS; null: cleartext. */
  readonly tls: TlsMaterial | null
  /** Clients must present a certificate signed by `tls.clientCA`. */
  readonly clientCertificates: boolean
  /** Time a new connection has to say what it speaks (its TLS handshake, or its first bytes). */
  readonly firstBytesTimeout: number
}

export class Listener {
  readonly front: NetServer | TlsServer
  readonly http1: HttpServer
  readonly http2: Http2Server
  /** Every accepted connection (the TCP socket), until it closes: the drain waits on them. */
  readonly connections = new Set<Socket>()
  /** Open HTTP/2 sessions, for GOAWAY on drain. */
  readonly sessions = new Set<ServerHttp2Session>()
  #tls: TlsMaterial | null
  readonly #timeout: number

  constructor(opts: ListenerOptions) {
    this.http1 = opts.http1
    this.http2 = opts.http2
    this.#tls = opts.tls
    this.#timeout = opts.firstBytesTimeout
    const material = opts.tls
    if (material === null) {
      this.front = createNetServer({ noDelay: true }, this.#sniff)
    } else {
      const tls = createTlsServer({
        ...material.options,
        ALPNProtocols: ['h2', 'http/1.1'],
        SNICallback: (name, done) => {
          done(null, this.#tls === null ? undefined : pickContext(this.#tls, name))
        },
        requestCert: opts.clientCertificates,
        rejectUnauthorized: opts.clientCertificates,
        handshakeTimeout: opts.firstBytesTimeout,
        noDelay: true,
      })
      tls.on('secureConnection', this.#secure)
      // A failed handshake (no common protocol version, a missing or untrusted client certificate)
      // ends that connection; nothing else is owed to it.
      tls.on('tlsClientError', destroyQuietly)
      this.front = tls
    }
    this.front.on('connection', this.#track)
    // The HTTP/1.1 server never listens itself, but its timeout checks (headersTimeout, requestTimeout)
    // and connection tracking (closeIdleConnections) start on its 'listening' event.
    this.http1.emit('listening')
    this.http2.on('session', this.#session)
  }

  /** New certificates for the handshakes from now on; established connections keep theirs. */
  setCertificates(material: TlsMaterial): void {
    if (this.#tls === null) return
    this.#tls = material
    ;(this.front as TlsServer).setSecureContext(material.options)
  }

  listen(host: string, port: number): Promise<AddressInfo> {
    return new Promise((ok, fail) => {
      this.front.once('error', fail)
      this.front.listen({ host, port, backlog: 1024 }, () => {
        this.front.off('error', fail)
        ok(this.front.address() as AddressInfo)
      })
    })
  }

  /** Stop accepting; resolves once the listening socket is closed (connections may remain). */
  stopAccepting(): Promise<void> {
    return new Promise((ok) => this.front.close(() => ok()))
  }

  /** GOAWAY on every HTTP/2 connection: their streams finish, new ones go elsewhere. */
  goAway(): void {
    for (const session of this.sessions) if (!session.closed) session.close()
  }

  /** Cut every connection that is left. */
  destroyAll(): void {
    this.http1.closeAllConnections()
    for (const session of this.sessions) session.destroy()
    for (const socket of this.connections) socket.destroy()
  }

  #track = (socket: Socket): void => {
    const connections = this.connections
    connections.add(socket)
    socket.once('close', () => connections.delete(socket))
  }

  #session = (session: ServerHttp2Session): void => {
    const sessions = this.sessions
    sessions.add(session)
    session.once('close', () => sessions.delete(session))
  }

  #secure = (socket: TLSSocket): void => {
    if (socket.alpnProtocol === 'h2') this.http2.emit('connection', socket)
    else this.http1.emit('connection', socket)
  }

  /** A cleartext connection: read until the first bytes tell HTTP/2's preface from HTTP/1.1. */
  #sniff = (socket: Socket): void => {
    let seen: Buffer | null = null
    const timer = setTimeout(silent, this.#timeout, socket).unref()
    const onData = (chunk: Buffer): void => {
      seen = seen === null ? chunk : Buffer.concat([seen, chunk])
      const n = Math.min(seen.length, PREFACE.length)
      const h2 = seen.compare(PREFACE, 0, n, 0, n) === 0
      if (h2 && n < PREFACE.length) return
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('end', onEnd)
      socket.off('error', destroySocket)
      socket.pause()
      socket.unshift(seen)
      if (h2) {
        // The HTTP/2 session reads what is buffered itself (and would lose it to a flowing stream).
        this.http2.emit('connection', socket)
      } else {
        this.http1.emit('connection', socket)
        socket.resume()
      }
    }
    const onEnd = (): void => {
      clearTimeout(timer)
      socket.destroy()
    }
    socket.on('data', onData)
    socket.once('end', onEnd)
    socket.on('error', destroySocket)
  }
}

/** A connection that said nothing in time gets the 408 the HTTP/1.1 server gives a silent one. */
function silent(socket: Socket): void {
  if (socket.bytesRead === 0) sendErrorOnSocket(socket, 'request_timeout')
  else socket.destroy()
}

function destroySocket(this: Socket): void {
  this.destroy()
}

function destroyQuietly(_err: Error, socket: Socket): void {
  socket.destroy()
}
