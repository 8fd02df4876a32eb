/**
 * WebSocket passthrough: the upgrade request goes to the upstream through the route's chain and pool;
 * only after the upstream answers 101 are the two sockets joined (the exchange ends there: what follows
 * is not HTTP). Any other answer is relayed as a plain response and the client connection closed, so a
 * refused upgrade never leaves a half-open tunnel.
 */
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Dispatcher } from 'undici'
import type { ProxyErrorCode } from '../errors.ts'
import type { RequestHead } from '../listen/headers.ts'
import { endSocket, sendErrorOnSocket } from '../listen/respond.ts'
import type { Backend, CompiledRoute } from '../routes/table.ts'
import { Exchange, type ExchangeHost, PROTOCOL } from './exchange.ts'
import type { UpstreamFields } from './handler.ts'

type Controller = Dispatcher.DispatchController

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

  onRequestUpgrade(controller: Controller, statusCode: number, _fields: unknown, upstream: Duplex): void {
    this.status = statusCode
    this.chain.head(this, statusCode, {})
    const client = this.#client
    if (client.destroyed) {
      upstream.destroy()
      this.error = 'client_closed'
      this.finish()
      return
    }
    const raw = (controller.rawHeaders as Buffer[]) ?? []
    // Upgrade and Connection are the point of a 101, so they pass here; Via and the version are added.
    const fields: string[] = []
    for (let i = 0; i < raw.length; i += 2)
      fields.push(raw[i]!.toString('latin1'), raw[i + 1]!.toString('latin1'))
    // A 101's Connection: upgrade must stand alone, even while draining.
    this.decorate(fields, false)
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
