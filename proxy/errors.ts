/**
 * Every answer the proxy makes itself, one code each: status, `x-veer-error` header and a JSON body
 * `{"error": code, "message": …}`. README's table of error codes is checked against this one by a test.
 */
export const PROXY_ERRORS = {
  bad_request: { status: 400, message: 'the request is malformed' },
  bad_request_target: {
    status: 400,
    message: 'the request target must be a path (origin-form), not an absolute URI',
  },
  duplicate_host: { status: 400, message: 'the request carries more than one Host header' },
  missing_host: { status: 400, message: 'an HTTP/1.1 request must carry a Host header' },
  no_route: { status: 404, message: 'no route matches this host and path' },
  connect_not_supported: { status: 405, message: 'the proxy does not tunnel CONNECT requests' },
  request_timeout: { status: 408, message: 'the client did not send the request in time' },
  headers_too_large: { status: 431, message: 'the request header block is larger than the proxy allows' },
  too_many_headers: { status: 431, message: 'the request has more header fields than the proxy allows' },
  upstream_connect_failed: { status: 502, message: 'the upstream refused or failed the connection' },
  upstream_tls_failed: {
    status: 502,
    message: 'the TLS handshake with the upstream failed or its certificate did not verify',
  },
  upstream_reset: { status: 502, message: 'the upstream closed the connection before answering' },
  upstream_bad_response: { status: 502, message: 'the upstream sent an invalid response' },
  upstream_no_websocket: {
    status: 502,
    message: 'the upstream speaks HTTP/2 and does not accept WebSocket over it (RFC 8441 extended CONNECT)',
  },
  no_healthy_upstream: {
    status: 503,
    message: 'every upstream of this route is ejected after repeated connect failures',
  },
  upstream_overloaded: { status: 503, message: 'too many requests are queued for this upstream' },
  unsupported_transfer_coding: {
    status: 501,
    message: 'the request uses a transfer coding other than chunked, which the proxy does not decode',
  },
  upstream_timeout: { status: 504, message: 'the upstream did not answer in time' },
} as const

export type ProxyErrorCode = keyof typeof PROXY_ERRORS

/** Pre-rendered bodies: an error answer serializes nothing per request. */
const BODIES = new Map<ProxyErrorCode, Buffer>()
for (const [code, { message }] of Object.entries(PROXY_ERRORS)) {
  BODIES.set(code as ProxyErrorCode, Buffer.from(`${JSON.stringify({ error: code, message })}\n`))
}

export function errorBody(code: ProxyErrorCode): Buffer {
  return BODIES.get(code)!
}

/** Map an undici (or socket) failure to the proxy's answer. */
export function classifyUpstreamError(err: unknown): ProxyErrorCode {
  const code = (err as { code?: string } | null)?.code
  switch (code) {
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
    case 'ETIMEDOUT':
      return 'upstream_timeout'
    case 'ECONNREFUSED':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EADDRNOTAVAIL':
      return 'upstream_connect_failed'
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'CERT_HAS_EXPIRED':
    case 'CERT_NOT_YET_VALID':
    case 'CERT_UNTRUSTED':
    case 'CERT_REVOKED':
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return 'upstream_tls_failed'
    case 'UND_ERR_INFO':
      // undici's one refusal of its own before a stream: an HTTP/2 upstream without SETTINGS_ENABLE_CONNECT_PROTOCOL.
      return (err as Error).message.includes('Extended CONNECT')
        ? 'upstream_no_websocket'
        : 'upstream_bad_response'
    case 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH':
    case 'HPE_INVALID_CONSTANT':
    case 'HPE_INVALID_STATUS':
    case 'HPE_INVALID_HEADER_TOKEN':
    case 'HPE_UNEXPECTED_CONTENT_LENGTH':
      return 'upstream_bad_response'
    default:
      // OpenSSL's handshake failures (an alert from the upstream, no common version) are ERR_SSL_*.
      if (code?.startsWith('ERR_SSL_')) return 'upstream_tls_failed'
      // undici's HTTPParserError often has no code (it looks the llhttp error number up in a table keyed
      // by name), so its name is what tells an unparsable answer from a dropped connection.
      return (err as { name?: string } | null)?.name === 'HTTPParserError'
        ? 'upstream_bad_response'
        : 'upstream_reset'
  }
}

/** Failures that happen before a connection exists: they count towards passive ejection. */
export function isConnectFailure(code: ProxyErrorCode, err: unknown): boolean {
  return (
    code === 'upstream_connect_failed' ||
    code === 'upstream_tls_failed' ||
    (err as { code?: string } | null)?.code === 'UND_ERR_CONNECT_TIMEOUT'
  )
}
