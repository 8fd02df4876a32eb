/**
 * WebSocket passthrough: the upgrade request goes to the upstream through the route's chain and pool;
 * only after the upstream answers 101 are the two sockets joined (the exchange ends there: what follows
 * is not HTTP). Any other answer is relayed as a plain response and the client connection closed, so a
 * refused upgrade never leaves a half-open tunnel.
 */
import { createHash } from 'node:crypto'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Dispatcher } from 'undici'
import type { ProxyErrorCode } from '../errors.ts'
import { type RequestHead, responseHeaders, VIA_HOP } from '../listen/headers.ts'
import { endSocket, sendErrorOnSocket } from '../listen/respond.ts'
import type { Backend, CompiledRoute } from '../routes/table.ts'
import { Exchange, type ExchangeHost, PROTOCOL } from './exchange.ts'
import type { UpstreamFields } from './handler.ts'

type Controller = Dispatcher.DispatchController

/** Classified upstream_reset (errors.ts). */
const UPGRADE_STREAM_CUT = new Error('the upstream reset the refused upgrade stream')

const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

/** RFC 6455 4.2.2: the Sec-WebSocket-Accept that answers a client's Sec-WebSocket-Key. */
function acceptOf(key: string): string {
  return createHash('sha1')
    .update(key.trim() + WEBSOCKET_GUID)
    .digest('base64')
}

function rawHead(status: number, text: string, fields: readonly (string | Buffer)[]): string {
  let out = `HTTP/1.1 ${status} ${text}\r\n`
  for (let i = 0; i < fields.length; i += 2)
    out += `${fields[i]!.toString()}: ${fields[i + 1]!.toString()}\r\n`
  return `${out}\r\n`
}

export class UpgradeExchange extends Exchange {
  /** An upgrade is HTTP/1.1's (HTTP/2's extended CONNECT is not served). */
  readonly protocol = PROTOCOL.http11
  readonly #client: Socket
  readonly #first: Buffer
  /** A (refused) answer's head went to the client: an error now can only cut the connection. */
  #answered = false

  constructor(
    host: ExchangeHost,
    route: CompiledRoute,
    backend: Backend,
    head: RequestHead,
    client: Socket,
    first: Buffer,
    start: number,
  ) {
    super(host, route.upgradeChain, route, backend, head, 'GET', head.target, null, start)
    this.#client = client
    this.#first = first
    client.on('error', () => this.controller?.abort(new Error('client socket error')))
  }

  override dispatchOptions(): Dispatcher.DispatchOptions {
    return { ...super.dispatchOptions(), upgrade: 'websocket' }
  }

  get answered(): boolean {
    return this.#answered
  }

  get gone(): boolean {
    return this.#client.destroyed
  }

  again(): Exchange {
    throw new Error('an upgrade is never sent twice')
  }

  onRequestUpgrade(
    controller: Controller,
    statusCode: number,
    headers: UpstreamFields,
    upstream: Duplex,
  ): void {
    // An HTTP/2 upstream answers the extended CONNECT undici sends it (RFC 8441) with a 2xx instead of a
    // 101, and any other status as the end of the upgrade stream: that is a refusal, relayed as one.
    const h2 = statusCode !== 101
    if (h2 && (statusCode < 200 || statusCode > 299))
      return this.#refusedOnStream(statusCode, headers, upstream)
    // The client gets a 101 either way, and that is what is counted.
    this.status = 101
    this.chain.head(this, 101, {})
    const client = this.#client
    if (client.destroyed) {
      upstream.destroy()
      this.error = 'client_closed'
      this.finish()
      return
    }
    // Upgrade and Connection are the point of a 101, so they pass here; Via and the version are added.
    let fields: string[] = []
    if (h2) {
      // RFC 8441 drops the key exchange: the HTTP/1.1 client still wants RFC 6455's 101 and its accept.
      const key = this.head.get('sec-websocket-key')
      fields = responseHeaders(headers, fields)
      fields.push('upgrade', 'websocket', 'connection', 'Upgrade')
      if (key !== undefined) fields.push('sec-websocket-accept', acceptOf(key))
    } else {
      const raw = (controller.rawHeaders as Buffer[]) ?? []
      for (let i = 0; i < raw.length; i += 2)
        fields.push(raw[i]!.toString('latin1'), raw[i + 1]!.toString('latin1'))
    }
    // A 101's Connection: upgrade must stand alone, even while draining. Its Via names the version this
    // tunnel's answer came in, whatever the pool's latest connection negotiated.
    this.decorate(fields, false, VIA_HOP[h2 ? '2' : '1.1'])
    client.write(rawHead(101, 'Switching Protocols', fields))
    if (this.#first.length > 0) upstream.write(this.#first)
    upstream.on('error', () => client.destroy())
    client.on('error', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
    client.on('close', () => upstream.destroy())
    upstream.pipe(client)
    client.pipe(upstream)
    this.finish()
  }

  /** An HTTP/2 upstream's refusal of an extended CONNECT, its body read from the upgrade stream. */
  #refusedOnStream(statusCode: number, headers: UpstreamFields, upstream: Duplex): void {
    const controller = this.controller!
    this.onResponseStart(controller, statusCode, headers)
    if (this.done) return void upstream.destroy()
    upstream.on('data', (chunk: Buffer) => this.onResponseData(controller, chunk))
    upstream.on('end', () => this.onResponseEnd(controller, {}))
    upstream.on('error', (err) => this.onResponseError(controller, err))
    // Destroyed without an end or an error (a reset): the answer was cut.
    upstream.on('close', () => this.onResponseError(controller, UPGRADE_STREAM_CUT))
    upstream.resume()
  }

  protected answer(status: number, message: string | undefined, fields: string[]): void {
    fields.push('connection', 'close')
    this.#answered = true
    this.#client.write(rawHead(status, message || 'Upgrade Refused', fields))
  }

  protected write(chunk: Buffer): boolean {
    if (this.#client.write(chunk)) return true
    this.#client.once('drain', () => this.controller?.resume())
    return false
  }

  protected end(_trailers: UpstreamFields): void {
    endSocket(this.#client)
  }

  protected fail(code: ProxyErrorCode): void {
    if (this.#answered) this.#client.destroy()
    else sendErrorOnSocket(this.#client, code)
  }
}
