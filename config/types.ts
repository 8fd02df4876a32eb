/** The validated, frozen proxy configuration (see schema.ts for each key's meaning and default). */
import type { HostPort } from './schema-kit.ts'

export type { HostPort }

export interface UpstreamConfig {
  readonly url: string
  readonly release: string
  /** https:// only: CA file that verifies the upstream's certificate. */
  readonly ca?: string
  /** https:// only: SNI and the name checked in the certificate. */
  readonly serverName?: string
}

export interface ShadowConfig extends UpstreamConfig {
  readonly percent: number
  readonly methods: readonly string[]
  readonly paths: readonly string[]
  readonly header: string
  readonly hostSuffix: string
  readonly maxBodyBytes: number
  readonly connections: number
  readonly maxInflight: number
  readonly timeouts: { readonly connect: number; readonly headers: number; readonly body: number }
  readonly compare: {
    readonly enabled: boolean
    readonly headers: readonly string[]
    readonly ignore: readonly string[]
    readonly noiseSample: number
    readonly maxDiffs: number
    readonly redact: readonly string[]
  }
}

/** One A/B rule: exactly one of header, cookie, query, and the value that sends a request to the canary. */
export interface CanaryMatch {
  readonly header?: string
  readonly cookie?: string
  readonly query?: string
  readonly value: string
}

export interface TimeoutsConfig {
  readonly connect: number
  readonly headers: number
  readonly body: number
  readonly idle: number
}

export interface RouteConfig {
  readonly name: string
  readonly match: { readonly host: string; readonly pathPrefix: string }
  readonly stable: UpstreamConfig
  readonly canary?: UpstreamConfig
  readonly shadow?: ShadowConfig
  readonly canaryWeight: number
  readonly canaryMatch: readonly CanaryMatch[]
  readonly sticky?: { readonly header?: string; readonly cookie?: string }
  readonly allowOverride: boolean
  readonly preserveHost: boolean
  readonly connections: number
  readonly streams: number
  readonly maxPending: number
  readonly timeouts: TimeoutsConfig
  readonly analysis: AnalysisConfig
}

export interface AnalysisConfig {
  readonly errorStatuses: readonly string[]
  readonly grpcErrorCodes: readonly string[]
  readonly outcomeHeader: string
  readonly fallback: {
    readonly enabled: boolean
    readonly methods: readonly string[]
    readonly idempotencyKey: string
    readonly maxBodyBytes: number
  }
  readonly fuse: { readonly consecutiveFailures: number }
}

export interface Http2Limits {
  readonly maxConcurrentStreams: number
  readonly initialWindowSize: number
  readonly maxSessionMemory: number
  readonly resetBurst: number
  readonly resetRate: number
  readonly idleTimeout: number
}

export interface CertificateFiles {
  readonly cert: string
  readonly key: string
}

export interface TlsConfig extends CertificateFiles {
  readonly certificates: readonly CertificateFiles[]
  readonly clientCA?: string
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3'
}

export interface ProxyConfig {
  readonly listen: HostPort
  readonly admin: HostPort
  readonly tls?: TlsConfig
  readonly trustedHops: number
  readonly versionHeader: string
  readonly via: boolean
  readonly server: {
    readonly headersTimeout: number
    readonly requestTimeout: number
    readonly keepAliveTimeout: number
    readonly maxHeaderBytes: number
    readonly maxHeaders: number
    readonly normalizePath: boolean
    readonly http2: Http2Limits
  }
  readonly shutdown: { readonly grace: number; readonly deadline: number }
  readonly health: { readonly ejectAfter: number; readonly ejectFor: number }
  readonly log: { readonly level: string; readonly access: boolean; readonly accessSample: number }
  readonly routes: readonly RouteConfig[]
}
