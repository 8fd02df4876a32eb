/**
 * Real HTTP/2 upstreams on 127.0.0.1 for integration tests: cleartext (what an `h2c://` upstream is) or
 * TLS with ALPN (an `https://` upstream; `allowHTTP1` also answers HTTP/1.1 clients). The default
 * handler answers JSON `{ name, method, url, headers, httpVersion }`; every session is counted.
 */
import {
  createSecureServer,
  createServer,
  type Http2SecureServer,
  type Http2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type ServerHttp2Session,
} from 'node:http2'
import type { AddressInfo } from 'node:net'
import type { Pem } from './certs.ts'

export type H2Handler = (req: Http2ServerRequest, res: Http2ServerResponse) => void

export interface H2Upstream {
  /** `h2c://127.0.0.1:PORT` or `https://127.0.0.1:PORT`. */
  readonly url: string
  readonly port: number
  readonly server: Http2Server | Http2SecureServer
  /** Every session (connection) opened to it, in order. */
  readonly sessions: ServerHttp2Session[]
  readonly seen: Http2ServerRequest[]
  close(): Promise<void>
}

function echo(name: string): H2Handler {
  return (req, res) => {
    req.resume()
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': name })
      res.end(
        JSON.stringify({
          name,
          method: req.method,
          url: req.url,
          headers: req.headers,
          httpVersion: req.httpVersion,
        }),
      )
    })
  }
}

export async function startH2Upstream(
  name: string,
  opts: { tls?: Pem; allowHTTP1?: boolean; handler?: H2Handler } = {},
): Promise<H2Upstream> {
  const handler = opts.handler ?? echo(name)
  const sessions: ServerHttp2Session[] = []
  const seen: Http2ServerRequest[] = []
  const onRequest = (req: Http2ServerRequest, res: Http2ServerResponse) => {
    seen.push(req)
    handler(req, res)
  }
  const server =
    opts.tls === undefined
      ? createServer(onRequest)
      : createSecureServer(
          { cert: opts.tls.certText, key: opts.tls.keyText, allowHTTP1: opts.allowHTTP1 ?? false },
          onRequest,
        )
  server.on('session', (s) => sessions.push(s))
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok))
  const port = (server.address() as AddressInfo).port
  return {
    url: `${opts.tls === undefined ? 'h2c' : 'https'}://127.0.0.1:${port}`,
    port,
    server,
    sessions,
    seen,
    close: () =>
      new Promise<void>((ok) => {
        for (const s of sessions) s.destroy()
        server.close(() => ok())
      }),
  }
}
