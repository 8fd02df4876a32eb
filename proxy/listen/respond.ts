/** The one place the proxy's own error answers are written (see errors.ts for the codes). */
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http'
import { constants, type ServerHttp2Stream } from 'node:http2'
import type { Socket } from 'node:net'
import { grpcCodeFor } from '../chain/grpc.ts'
import { errorBody, PROXY_ERRORS, type ProxyErrorCode } from '../errors.ts'
import { fieldObject } from './headers.ts'

export const ERROR_HEADER = 'x-veer-error'

/**
 * Answer with the proxy's JSON error. When the response has already started, the only honest thing
 * left is to abort the client connection, so the client cannot take a cut-short body for a whole one.
 */
export function sendError(res: ServerResponse, code: ProxyErrorCode, extra?: readonly string[]): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const body = errorBody(code)
  const headers = [
    'content-type',
    'application/json',
    ERROR_HEADER,
    code,
    'content-length',
    String(body.length),
  ]
  if (extra) headers.push(...extra)
  res.writeHead(PROXY_ERRORS[code].status, headers)
  res.end(body)
}

/**
 * Whether a stream can still take the proxy's answer: false when it is gone, or when its answer had
 * started, in which case only this stream is reset (RST_STREAM INTERNAL_ERROR).
 */
function answerable(stream: ServerHttp2Stream): boolean {
  if (stream.destroyed || stream.closed) return false
  if (!stream.headersSent) return true
  stream.close(constants.NGHTTP2_INTERNAL_ERROR)
  return false
}

/**
 * The same answer on an HTTP/2 stream. Once the answer has started, only this stream is reset
 * (RST_STREAM INTERNAL_ERROR): the connection and its other streams carry on.
 */
export function sendErrorOnStream(
  stream: ServerHttp2Stream,
  code: ProxyErrorCode,
  extra?: readonly string[],
): void {
  if (!answerable(stream)) return
  const body = errorBody(code)
  const headers = fieldObject(extra ?? [])
  headers[':status'] = PROXY_ERRORS[code].status
  headers['content-type'] = 'application/json'
  headers[ERROR_HEADER] = code
  headers['content-length'] = String(body.length)
  stream.respond(headers)
  stream.end(body)
}

/**
 * The proxy's error to a gRPC client: trailers-only (HTTP 200, `grpc-status`, `grpc-message`), as
 * gRPC clients read failures; `x-veer-error` still names the code. After the answer started, a reset.
 */
export function sendGrpcError(
  stream: ServerHttp2Stream,
  code: ProxyErrorCode,
  extra?: readonly string[],
): void {
  if (!answerable(stream)) return
  const headers = grpcErrorFields(code, extra)
  headers[':status'] = 200
  headers['content-type'] = 'application/grpc'
  stream.respond(headers, { endStream: true })
}

/** The proxy's error as gRPC status fields: a trailers-only head's, or the trailers of a started answer. */
export function grpcErrorFields(code: ProxyErrorCode, extra?: readonly string[]): OutgoingHttpHeaders {
  const fields = fieldObject(extra ?? [])
  fields['grpc-status'] = String(grpcCodeFor(code))
  fields['grpc-message'] = GRPC_MESSAGES[code]
  fields[ERROR_HEADER] = code
  return fields
}

/**
 * grpc-message, percent-encoded as gRPC's HTTP/2 spec asks: every byte outside 0x20..0x7E, and `%`
 * (the messages are plain ASCII, so this keeps them as they are).
 */
const GRPC_MESSAGES = Object.fromEntries(
  Object.entries(PROXY_ERRORS).map(([code, { message }]) => [
    code,
    [...Buffer.from(`veer: ${message}`)]
      .map((b) =>
        b >= 0x20 && b <= 0x7e && b !== 0x25
          ? String.fromCharCode(b)
          : `%${b.toString(16).toUpperCase().padStart(2, '0')}`,
      )
      .join(''),
  ]),
) as Record<ProxyErrorCode, string>

/** The same answer on a bare socket (parser errors, refused upgrades), then close it. */
export function sendErrorOnSocket(socket: Socket, code: ProxyErrorCode): void {
  if (!socket.writable) {
    socket.destroy()
    return
  }
  const { status } = PROXY_ERRORS[code]
  const body = errorBody(code)
  endSocket(
    socket,
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\ncontent-type: application/json\r\n${ERROR_HEADER}: ${code}\r\n` +
      `content-length: ${body.length}\r\nconnection: close\r\n\r\n${body.toString()}`,
  )
}

/** How long a connection the proxy has ended waits for the client to close its side before it is destroyed. */
const LINGER_MS = 2000

function destroySocket(socket: Socket): void {
  socket.destroy()
}

/**
 * End a connection the proxy is done with. A socket handed over by an 'upgrade' event is read by no one,
 * so the client's close would never be seen and the socket never released: read on, discarding, until
 * the client closes (sending FIN and then destroying at once could reset the answer away), and destroy
 * it after a short linger if the client keeps its side open.
 */
export function endSocket(socket: Socket, last?: string): void {
  if (last === undefined) socket.end()
  else socket.end(last)
  socket.resume()
  setTimeout(destroySocket, LINGER_MS, socket).unref()
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  431: 'Request Header Fields Too Large',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
}
