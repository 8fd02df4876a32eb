/** Reading JSON bodies and writing JSON answers for the control API; every refusal leaves through `sendError`. */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { ApiError } from './errors.ts'

export const MAX_BODY = 64 * 1024

function isJson(type: string | undefined): boolean {
  if (type === undefined) return false
  const media = type.split(';')[0]!.trim().toLowerCase()
  return media === 'application/json' || (media.startsWith('application/') && media.endsWith('+json'))
}

/**
 * The request body as parsed JSON; undefined when there is none. A body must be JSON with a JSON
 * content type and at most 64 KiB (refused before reading when Content-Length says more).
 */
export async function readJson(req: IncomingMessage): Promise<unknown> {
  const declared = req.headers['content-length']
  if (declared !== undefined && Number(declared) > MAX_BODY)
    throw new ApiError(
      'body_too_large',
      `the body is ${declared} bytes; the most the API takes is ${MAX_BODY} (64 KiB)`,
    )
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > MAX_BODY)
      throw new ApiError(
        'body_too_large',
        `the body is over ${MAX_BODY} bytes (64 KiB), the most the API takes`,
      )
    chunks.push(chunk)
  }
  if (size === 0) return undefined
  if (!isJson(req.headers['content-type']))
    throw new ApiError(
      'unsupported_media_type',
      `the body is sent as ${JSON.stringify(req.headers['content-type'] ?? 'no content type')}; send JSON with Content-Type: application/json`,
    )
  const text = Buffer.concat(chunks).toString('utf8')
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new ApiError('malformed_json', `the body is not valid JSON: ${(err as Error).message}`)
  }
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = `${JSON.stringify(body)}\n`
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(text)),
    'cache-control': 'no-store',
    ...headers,
  })
  res.end(text)
}

export function sendError(res: ServerResponse, err: ApiError): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const headers: Record<string, string> = { ...err.headers }
  // An unread or cut-short body leaves the connection unusable: close it after this answer.
  if (err.code === 'body_too_large') headers.connection = 'close'
  sendJson(res, err.status, { error: err.code, message: err.message }, headers)
}
