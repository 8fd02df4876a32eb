/** HTTP/2 requests with node:http2's client, for integration tests: one call, the whole answer. */
import {
  type ClientHttp2Session,
  connect,
  type IncomingHttpHeaders,
  type SecureClientSessionOptions,
} from 'node:http2'

export interface H2Answer {
  readonly status: number
  readonly headers: IncomingHttpHeaders
  readonly body: string
  readonly trailers: IncomingHttpHeaders
}

export function h2connect(
  url: string,
  options: SecureClientSessionOptions = {},
): Promise<ClientHttp2Session> {
  return new Promise((ok, fail) => {
    const session = connect(url, options)
    session.once('connect', () => {
      session.off('error', fail)
      ok(session)
    })
    session.once('error', fail)
  })
}

/** One request on `session` (`headers` may set :method, :path, :authority and any field). */
export function h2request(
  session: ClientHttp2Session,
  headers: Record<string, string>,
  body?: string | Buffer,
): Promise<H2Answer> {
  return new Promise((ok, fail) => {
    const req = session.request(headers, { endStream: body === undefined })
    let answer: IncomingHttpHeaders = {}
    let trailers: IncomingHttpHeaders = {}
    const chunks: Buffer[] = []
    req.on('response', (h) => (answer = h))
    req.on('trailers', (t) => (trailers = t))
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () =>
      ok({
        status: Number(answer[':status']),
        headers: answer,
        body: Buffer.concat(chunks).toString(),
        trailers,
      }),
    )
    req.on('error', fail)
    if (body !== undefined) req.end(body)
  })
}

/** Connect, GET `path`, close. */
export async function h2get(
  url: string,
  path: string,
  extra: Record<string, string> = {},
  options: SecureClientSessionOptions = {},
): Promise<H2Answer> {
  const session = await h2connect(url, options)
  try {
    return await h2request(session, { ':path': path, ...extra })
  } finally {
    session.close()
  }
}
