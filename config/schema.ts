/**
 * The proxy's configuration: every key, its type, default and meaning, in one place. `load.ts` validates
 * with it, `write-schema.ts` publishes it as JSON Schema for editors, README documents it.
 */
import { GRPC_CODES } from './grpc-codes.ts'
import { bool, duration, hostPort, int, list, num, obj, oneOf, origin, str } from './schema-kit.ts'

const SECOND = 1000
const MINUTE = 60 * SECOND

/** How an https:// upstream is verified (shared by stable, canary and shadow). */
const upstreamTls = {
  ca: str(
    'https:// only: PEM file of the CAs that sign the upstream certificate (default: the system CAs); read at start and on reload',
  ),
  serverName: str(
    'https:// only: the name sent as SNI and checked against the upstream certificate (default: the URL host)',
  ),
}

const upstream = obj(
  'An upstream version of the service',
  {
    url: origin(
      'Origin of the upstream: http://host:port (HTTP/1.1), https:// (TLS, h2 or HTTP/1.1 by ALPN) or h2c:// (cleartext HTTP/2)',
    ),
    release: str('Release id of this version (image tag, commit): in logs, spans and veer_release_info', {
      fallback: 'unknown',
    }),
    ...upstreamTls,
  },
  { required: ['url'], optional: true },
)

const shadow = obj(
  'A shadow upstream: receives a copy of live traffic, its answers are never shown to users',
  {
    url: origin('Origin of the shadow upstream'),
    release: str('Release id of the shadow version', { fallback: 'unknown' }),
    ...upstreamTls,
    percent: num(
      'Share of requests mirrored, 0..100 (deterministic: 10 means exactly every tenth)',
      0,
      100,
      100,
    ),
    methods: list(
      'Methods mirrored (empty: all). Mirroring writes duplicates them: list GET, HEAD to stay read-only',
      str('An HTTP method such as GET'),
    ),
    paths: list('Path prefixes mirrored (empty: all)', str('A path prefix starting with /')),
    header: str('Header (value 1) added to shadow requests so the shadow can tell them apart; "" for none', {
      minLength: 0,
      fallback: 'x-veer-shadow',
    }),
    hostSuffix: str('Appended to the host name of shadow requests (Istio adds -shadow); "" keeps the Host', {
      minLength: 0,
      fallback: '',
    }),
    maxBodyBytes: int(
      'Largest request body copied to the shadow, and largest answer body compared; larger is dropped',
      0,
      64 * 1024 * 1024,
      1024 * 1024,
    ),
    connections: int(
      'Most connections to the shadow upstream (opened as needed). Keep it at maxInflight or at least the concurrent requests mirrored: copies waiting for a connection fall behind the primary and are dropped past maxInflight',
      1,
      1024,
      64,
    ),
    maxInflight: int('Most shadow requests in flight; more are dropped, never queued', 1, 100_000, 64),
    timeouts: obj('Shadow timeouts (short: a slow shadow only loses its own requests)', {
      connect: duration('Time to connect to the shadow', 1, 60 * SECOND, 500),
      headers: duration('Time for the shadow to answer with headers', 1, 10 * MINUTE, 5 * SECOND),
      body: duration('Longest gap between two chunks of the shadow answer', 1, 10 * MINUTE, 5 * SECOND),
    }),
    compare: obj('Comparing the shadow answer with the primary answer', {
      enabled: bool('Compare answers (status, headers, body)', true),
      headers: list('Response headers compared (lower case)', str('A header name'), {
        fallback: ['content-type'],
      }),
      ignore: list(
        'JSON fields never compared: `ts`, `meta.*` (subtree), `items[*].updatedAt`',
        str('A field path'),
      ),
      noiseSample: num(
        'Share of compared GET/HEAD requests also sent a second time to the primary version to learn noisy fields, 0..1',
        0,
        1,
        0.05,
      ),
      maxDiffs: int('Recent mismatches kept for GET /v1/shadow/diffs', 0, 10_000, 100),
      redact: list('Headers redacted in diff samples', str('A header name'), {
        fallback: ['authorization', 'cookie', 'set-cookie', 'proxy-authorization', 'x-api-key'],
      }),
    }),
  },
  { required: ['url'], optional: true },
)

export const timeoutsField = obj('Upstream timeouts', {
  connect: duration('Time to open a TCP connection to the upstream', 1, 5 * MINUTE, 2 * SECOND),
  headers: duration(
    'Time from sending the request to the upstream answering with headers',
    1,
    60 * MINUTE,
    30 * SECOND,
  ),
  body: duration('Longest gap between two chunks of the upstream answer body', 1, 60 * MINUTE, 30 * SECOND),
  idle: duration(
    'How long an idle keep-alive connection to the upstream is kept',
    1,
    60 * MINUTE,
    4 * SECOND,
  ),
})

const analysis = obj('What counts against a version, the fallback to stable, and the fuse', {
  errorStatuses: list(
    'Answers counted as errors, besides transport failures and timeouts: a code (429) or a class (5xx)',
    str('A status code such as 503, or a class such as 5xx'),
    { fallback: ['5xx'] },
  ),
  grpcErrorCodes: list(
    'gRPC status codes counted as errors (a call answers HTTP 200 whatever its grpc-status)',
    oneOf('A gRPC status code name', [...GRPC_CODES]),
    { fallback: ['UNKNOWN', 'DEADLINE_EXCEEDED', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS'] },
  ),
  outcomeHeader: str(
    'Response header by which the upstream reports a business outcome: the value `fail` counts as a failed outcome ("" for none)',
    { minLength: 0, fallback: 'x-veer-outcome' },
  ),
  fallback: obj(
    "A request that fails on canary (an error status, a reset, a timeout) is retried once on stable, so the user gets stable's answer; the failure still counts against canary",
    {
      enabled: bool('Retry failed canary requests on stable', true),
      methods: list('Methods retried (idempotent ones)', str('An HTTP method such as GET'), {
        fallback: ['GET', 'HEAD', 'OPTIONS'],
      }),
      idempotencyKey: str('A request carrying this header is retried whatever its method ("" for none)', {
        minLength: 0,
        fallback: 'idempotency-key',
      }),
      maxBodyBytes: int(
        'Largest request body kept for a retry (read before the canary request); a larger body, or one of unknown length, is streamed and retried only when the canary could not be connected',
        0,
        16 * 1024 * 1024,
        64 * 1024,
      ),
    },
  ),
  fuse: obj('A hard trigger before any statistics: the proxy zeroes the canary at once and tells control', {
    consecutiveFailures: int('Consecutive canary errors that trip the fuse (0: off)', 0, 1_000_000, 20),
  }),
})

const route = obj(
  'A route: which requests it takes, and the versions that serve them',
  {
    name: str('Route name, used in metrics and the API (letters, digits, - and _)'),
    match: obj('Which requests this route takes', {
      host: str('Host to match: exact (api.example.com), wildcard (*.example.com) or * for any', {
        fallback: '*',
      }),
      pathPrefix: str('Path prefix to match, starting with /', { fallback: '/' }),
    }),
    stable: upstream,
    canary: upstream,
    shadow,
    canaryWeight: int('Percent of traffic to the canary, 0..100', 0, 100, 0),
    canaryMatch: list(
      'A/B rules: a request whose header, cookie or query parameter has the value goes to the canary before weights apply (not while the fuse holds)',
      obj(
        'One rule: exactly one of header, cookie, query, and the value',
        {
          header: str('Request header name, e.g. x-beta'),
          cookie: str('Cookie name'),
          query: str('Query parameter name'),
          value: str('The value that matches (exact, case-sensitive)', { minLength: 0 }),
        },
        { required: ['value'] },
      ),
    ),
    sticky: obj(
      'Sticky assignment: the hash of this header or cookie picks the version, so one user keeps one version',
      {
        header: str('Request header whose value identifies a user, e.g. x-user-id'),
        cookie: str('Cookie whose value identifies a user, e.g. session'),
      },
      { optional: true },
    ),
    allowOverride: bool('Honour the override header (x-veer-version: stable|canary) from testers', false),
    preserveHost: bool('Send the client Host header to the upstream (false: the upstream host)', true),
    connections: int('Most connections to each upstream origin of this route', 1, 65535, 128),
    streams: int(
      'Most concurrent requests on one HTTP/2 connection to an upstream (h2c://, or https:// that chose h2); the upstream may set fewer',
      1,
      1000,
      100,
    ),
    maxPending: int(
      'Most requests queued per origin beyond its connections before answering 503',
      0,
      1_000_000,
      1024,
    ),
    timeouts: timeoutsField,
    analysis,
  },
  { required: ['name', 'stable'] },
)

const certificate = obj(
  'A certificate and its key (PEM files)',
  {
    cert: str('PEM file with the certificate chain, leaf first'),
    key: str('PEM file with the private key'),
  },
  { required: ['cert', 'key'] },
)

const tls = obj(
  'TLS on the traffic listener (ALPN h2 and http/1.1); the files are read again when they change',
  {
    cert: str('PEM file with the default certificate chain, leaf first (or --tls-cert)'),
    key: str('PEM file with its private key (or --tls-key)'),
    certificates: list(
      'More certificates, each served to clients whose SNI name matches one of its DNS names (subjectAltName, *.wildcards too)',
      certificate,
    ),
    clientCA: str(
      'PEM file of the CAs that sign client certificates: every client must present a valid one (mTLS)',
    ),
    minVersion: oneOf('Oldest TLS version accepted', ['TLSv1.2', 'TLSv1.3'], 'TLSv1.2'),
  },
  { required: ['cert', 'key'], optional: true },
)

export const configField = obj('veer proxy configuration', {
  listen: hostPort('Address of the traffic listener', { host: '127.0.0.1', port: 8080 }),
  admin: hostPort('Address of the admin listener (/healthz, /readyz, /metrics, /v1/*)', {
    host: '127.0.0.1',
    port: 9901,
  }),
  tls,
  trustedHops: int(
    'How many proxies in front of veer are trusted to set X-Forwarded-For/Proto/Host and Forwarded (0: none, the client talks to veer directly)',
    0,
    16,
    0,
  ),
  versionHeader: str(
    'Request override and response header naming the version; "" to switch the response header off',
    {
      minLength: 0,
      fallback: 'x-veer-version',
    },
  ),
  via: bool('Add a Via header (RFC 9110 section 7.6.3) both ways', true),
  server: obj('Client-side limits of the traffic listener', {
    headersTimeout: duration(
      'Time a client has to send the request headers (slowloris gets 408)',
      100,
      10 * MINUTE,
      10 * SECOND,
    ),
    requestTimeout: duration(
      'Time a client has to send the whole request, body included',
      100,
      60 * MINUTE,
      5 * MINUTE,
    ),
    keepAliveTimeout: duration(
      'How long an idle client connection is kept open',
      100,
      10 * MINUTE,
      5 * SECOND,
    ),
    maxHeaderBytes: int('Largest request header block in bytes (431 above)', 1024, 1024 * 1024, 16 * 1024),
    maxHeaders: int('Most request header fields (431 above)', 8, 10_000, 100),
    normalizePath: bool(
      'Route and forward the normalised path: dot segments removed, // merged, escaped unreserved characters decoded (false: the path as sent)',
      true,
    ),
    http2: obj('HTTP/2 limits per client connection (a client past them is cut off with GOAWAY)', {
      maxConcurrentStreams: int('Most streams open at once on one connection', 1, 100_000, 100),
      initialWindowSize: int(
        'Flow-control window of each stream, in bytes (the connection gets 4 times this)',
        65_535,
        16 * 1024 * 1024,
        256 * 1024,
      ),
      maxSessionMemory: int(
        'Memory one connection may hold for headers and frames in flight, in MiB (streams past it are refused)',
        1,
        1024,
        10,
      ),
      resetBurst: int(
        'Stream resets (RST_STREAM) a client may send in a burst (rapid-reset guard)',
        1,
        1_000_000,
        1000,
      ),
      resetRate: int('Stream resets per second a client may send after its burst', 1, 1_000_000, 33),
      idleTimeout: duration(
        'How long a connection with no open stream is kept before it is closed with GOAWAY',
        100,
        24 * 60 * MINUTE,
        5 * MINUTE,
      ),
    }),
  }),
  shutdown: obj('Graceful shutdown on SIGTERM/SIGINT', {
    grace: duration(
      'After SIGTERM, how long veer keeps accepting new connections while /readyz says 503',
      0,
      10 * MINUTE,
      SECOND,
    ),
    deadline: duration(
      'Longest wait for in-flight requests to finish before closing them',
      0,
      60 * MINUTE,
      30 * SECOND,
    ),
  }),
  health: obj('Passive health: an upstream that fails to connect repeatedly is ejected for a while', {
    ejectAfter: int('Consecutive connect failures that eject an upstream', 1, 1000, 5),
    ejectFor: duration('How long an ejected upstream gets no traffic', 100, 60 * MINUTE, 5 * SECOND),
  }),
  log: obj('Logging (JSON lines on stdout)', {
    level: oneOf('Log level', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], 'info'),
    access: bool('Write one access line per request', true),
    accessSample: num('Share of requests that get an access line, 0..1 (errors are always logged)', 0, 1, 1),
  }),
  routes: list('Routes, matched by most specific host, then longest path prefix', route, { minItems: 1 }),
})
