/**
 * WebSocket passthrough: the upgrade request goes to the upstream through the same pool; only after the
 * upstream answers 101 are the two sockets joined. Any other answer is relayed as a plain response and
 * the client connection closed, so a refused upgrade never leaves a half-open tunnel.
 */
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import type { Duplex } from 'node:stream'
import type { Dispatcher } from 'undici'
import { classifyUpstreamError, isConnectFailure } from '../errors.ts'
import { responseHeaders } from '../listen/headers.ts'
import { endSocket, sendErrorOnSocket } from '../listen/respond.ts'
import type { Backend } from '../routes/table.ts'
import type { ExchangeHost } from './exchange.ts'

type Controller = Dispatcher.DispatchController

function head(status: number, text: string, fields: readonly (string | Buffer)[]): string {
  let out = `HTTP/1.1 ${status} ${text}\r\n`
  for (let i = 0; i < fields.length; i += 2)
    out += `${fields[i]!.toString()}: ${fields[i + 1]!.toString()}\r\n`
  return `${out}\r\n`
}

class UpgradeHandler implements Dispatcher.DispatchHandler {
  readonly #host: ExchangeHost
  readonly #client: Socket
  readonly #first: Buffer
  readonly #backend: Backend
  readonly #start: number
  #controller: Controller | null = null
  #recorded = false
  /** A (refused) answer's head went to the client: an error now can only cut the connection. */
  #answered = false

  constructor(host: ExchangeHost, client: Socket, first: Buffer, backend: Backend, start: number) {
    this.#host = host
    this.#client = client
    this.#first = first
    this.#backend = backend
    this.#start = start
    client.on('error', () => this.#controller?.abort(new Error('client socket error')))
  }

  #record(status: number): void {
    if (this.#recorded) return
    this.#recorded = true
    this.#backend.state.metrics.record(status, (performance.now() - this.#start) / 1000)
  }

  onRequestStart(controller: Controller): void {
    this.#controller = controller
  }

  onRequestUpgrade(controller: Controller, statusCode: number, _headers: unknown, upstream: Duplex): void {
    this.#record(statusCode)
    const client = this.#client
    if (client.destroyed) {
      upstream.destroy()
      return
    }
    const raw = (controller.rawHeaders as Buffer[]) ?? []
    // Upgrade and Connection are the point of a 101, so they pass here; Via and the version are added.
    const fields: string[] = []
    for (let i = 0; i < raw.length; i += 2)
      fields.push(raw[i]!.toString('latin1'), raw[i + 1]!.toString('latin1'))
    this.#host.decorate(fields, this.#backend, true)
    client.write(head(101, 'Switching Protocols', fields))
    if (this.#first.length > 0) upstream.write(this.#first)
    upstream.on('error', () => client.destroy())
    client.on('error', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
    client.on('close', () => upstream.destroy())
    upstream.pipe(client)
    client.pipe(upstream)
  }

  onResponseStart(
    _controller: Controller,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    statusMessage?: string,
  ): void {
    if (statusCode < 200) return
    this.#record(statusCode)
    const fields = this.#host.decorate(responseHeaders(headers, []), this.#backend)
    fields.push('connection', 'close')
    this.#answered = true
    this.#client.write(head(statusCode, statusMessage || 'Upgrade Refused', fields))
  }

  onResponseData(controller: Controller, chunk: Buffer): void {
    if (!this.#client.write(chunk)) {
      controller.pause()
      this.#client.once('drain', () => controller.resume())
    }
  }

  onResponseEnd(): void {
    endSocket(this.#client)
  }

  onResponseError(_controller: Controller, err: Error): void {
    this.#record(0)
    const code = classifyUpstreamError(err)
    if (isConnectFailure(code, err))
      this.#backend.upstream.connectFailed(this.#host.ejectAfter, this.#host.ejectForMs)
    if (this.#answered) this.#client.destroy()
    else sendErrorOnSocket(this.#client, code)
  }
}

export function tunnel(
  host: ExchangeHost,
  req: IncomingMessage,
  client: Socket,
  first: Buffer,
  headers: string[],
  _route: string,
  backend: Backend,
  start: number,
): void {
  backend.upstream.pool.dispatch(
    { path: req.url!, method: 'GET', headers, upgrade: 'websocket', body: null },
    new UpgradeHandler(host, client, first, backend, start),
  )
}
