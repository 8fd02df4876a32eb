/**
 * `compile(generation, config, fuses, states) → RouteTable`: a validated config becomes a frozen
 * snapshot. Pure but for memoized reads of `states` (pools, version state, sequences: see states.ts);
 * it sets no gauge and closes nothing. Installing the table (`ProxyServer.swap`) is the one effect.
 */

import type { ProxyConfig, RouteConfig, UpstreamConfig } from '../../config/types.ts'
import type { FuseReport } from '../../config/wire.ts'
import { Fallback } from '../chain/fallback.ts'
import { grpcErrorTable } from '../chain/grpc.ts'
import { Chain, type ChainHandler } from '../chain/handler.ts'
import { PassiveHealth } from '../chain/health.ts'
import { MirrorTee } from '../chain/mirror-tee.ts'
import { Outcome } from '../chain/outcome.ts'
import { Trace } from '../chain/trace.ts'
import { jsonFields } from '../log.ts'
import type { VersionName } from '../metrics.ts'
import { FieldFilter } from '../shadow/compare.ts'
import type { ShadowTarget } from '../shadow/mirror.ts'
import { compileMatches } from '../split/match.ts'
import { weightThreshold } from '../split/weighted.ts'
import type { RouteStates } from './states.ts'
import {
  type AnswerFields,
  type Backend,
  type CompiledRoute,
  type EdgeSettings,
  RouteTable,
} from './table.ts'

/**
 * The statuses a route counts as errors, as a table indexed by status (0..599): one array read per
 * request. `codes` are validated by config/load.ts: `503` or a class `5xx`.
 */
export function errorTable(codes: readonly string[]): Uint8Array {
  const table = new Uint8Array(600)
  for (const code of codes) {
    if (code.endsWith('xx')) table.fill(1, Number(code[0]) * 100, Number(code[0]) * 100 + 100)
    else table[Number(code)] = 1
  }
  return table
}

/** The handlers every route of a table shares (each route composes the ones it uses). */
interface Handlers {
  readonly health: PassiveHealth
  readonly outcome: Outcome
  readonly fallback: Fallback
  readonly mirror: MirrorTee
  readonly trace: Trace | null
}

function handlersFor(config: ProxyConfig, states: RouteStates): Handlers {
  const log = states.log
  // Access and shadow lines: with the access log, at level info.
  const sink = config.log.access && log.isLevelEnabled('info') ? states.sink : null
  const sample = config.log.accessSample
  const health = new PassiveHealth(config.health.ejectAfter, config.health.ejectFor)
  return {
    health,
    outcome: new Outcome({ sink, sample, log, onFuse: states.onFuse }),
    fallback: new Fallback(),
    mirror: new MirrorTee(health, sink, sample),
    trace: states.tracing === null ? null : new Trace(states.tracing),
  }
}

/** health → outcome → fallback → mirror → trace, each only where the route uses it. */
function chainsFor(h: Handlers, hasFallback: boolean, hasShadow: boolean): { chain: Chain; upgrade: Chain } {
  const all: ChainHandler[] = [h.health, h.outcome]
  const upgrade = [...all]
  if (hasFallback) all.push(h.fallback)
  if (hasShadow) all.push(h.mirror)
  if (h.trace !== null) {
    all.push(h.trace)
    upgrade.push(h.trace)
  }
  return { chain: new Chain(all), upgrade: new Chain(upgrade) }
}

function compileShadow(
  rc: RouteConfig,
  states: RouteStates,
  errorStatus: Uint8Array,
  log: boolean,
): ShadowTarget {
  const sh = rc.shadow!
  const stats = states.shadowStats(rc.name)
  const ignore = new FieldFilter(sh.compare.ignore)
  // Its own small pool (distinct settings make a distinct pool even for a shared origin): a slow or
  // dead shadow fills only this one, and nothing queues behind it (maxPending 0; maxInflight drops).
  const upstream = states.pools.get(sh, {
    connections: sh.connections,
    maxPending: 0,
    streams: rc.streams,
    timeouts: { ...sh.timeouts, idle: 4000 },
  })
  return Object.freeze({
    route: rc.name,
    config: sh,
    upstream,
    threshold: weightThreshold(sh.percent),
    sequence: states.sequence(`${rc.name} shadow`),
    noiseThreshold: weightThreshold(sh.compare.noiseSample * 100),
    noiseSequence: states.sequence(`${rc.name} noise`),
    methods: sh.methods.length > 0 ? new Set(sh.methods.map((m) => m.toUpperCase())) : null,
    paths: sh.paths.length > 0 ? [...sh.paths] : null,
    header: sh.header === '' ? null : sh.header.toLowerCase(),
    preserveHost: rc.preserveHost,
    state: states.version(rc.name, 'shadow'),
    errorStatus,
    stats,
    log: log ? states.log : null,
    lineFields: jsonFields({
      pid: process.pid,
      route: rc.name,
      version: 'shadow',
      release: sh.release,
      upstream: upstream.origin,
    }),
    ignore,
    ignoreOrNoise: { has: (field: string) => ignore.has(field) || stats.noise.has(field) },
    answerHeaders: [...new Set([...sh.compare.headers, 'content-type'])],
    redact: new Set(sh.compare.redact.map((h) => h.toLowerCase())),
  })
}

/** Build a snapshot from a validated config; `fuses` holds the routes whose canary a fuse zeroed. */
export function compile(
  generation: number,
  config: ProxyConfig,
  fuses: ReadonlyMap<string, FuseReport>,
  states: RouteStates,
): RouteTable {
  const { pools } = states
  const handlers = handlersFor(config, states)
  const linesOn = config.log.access && states.log.isLevelEnabled('info')
  const answer: AnswerFields = Object.freeze({
    via: config.via,
    versionHeader: config.versionHeader,
  })
  const edge: EdgeSettings = Object.freeze({
    policy: Object.freeze({
      trustedHops: config.trustedHops,
      via: answer.via,
      overrideHeader: config.versionHeader === '' ? 'x-veer-version' : config.versionHeader.toLowerCase(),
    }),
    maxHeaderFields: config.server.maxHeaders,
    normalizePath: config.server.normalizePath,
  })
  const routes = config.routes.map((file): CompiledRoute => {
    const fuse = fuses.get(file.name) ?? null
    const rc = fuse === null || file.canaryWeight === 0 ? file : { ...file, canaryWeight: 0 }
    const settings = {
      connections: rc.connections,
      maxPending: rc.maxPending,
      streams: rc.streams,
      timeouts: rc.timeouts,
    }
    const backend = (version: VersionName, u: UpstreamConfig): Backend => ({
      version,
      release: u.release,
      upstream: pools.get(u, settings),
      state: states.version(rc.name, version),
      lineFields: jsonFields({
        pid: process.pid,
        route: rc.name,
        version,
        release: u.release,
        upstream: u.url,
      }),
    })
    const canary = rc.canary ? backend('canary', rc.canary) : null
    const weight = canary ? rc.canaryWeight : 0
    const a = rc.analysis
    const errorStatus = errorTable(a.errorStatuses)
    const fallback =
      canary !== null && a.fallback.enabled
        ? Object.freeze({
            methods: new Set(a.fallback.methods.map((m) => m.toUpperCase())),
            idempotencyKey: a.fallback.idempotencyKey === '' ? null : a.fallback.idempotencyKey.toLowerCase(),
            maxBodyBytes: a.fallback.maxBodyBytes,
          })
        : null
    const shadow = rc.shadow ? compileShadow(rc, states, errorStatus, linesOn) : null
    const chains = chainsFor(handlers, fallback !== null, shadow !== null)
    return Object.freeze({
      name: rc.name,
      config: rc,
      prefix: rc.match.pathPrefix,
      stable: backend('stable', rc.stable),
      canary,
      threshold: weightThreshold(weight),
      sequence: states.sequence(rc.name),
      stickyHeader: rc.sticky?.header?.toLowerCase() ?? null,
      stickyCookie: rc.sticky?.cookie ?? null,
      canaryMatch:
        canary !== null && fuse === null && rc.canaryMatch.length > 0 ? compileMatches(rc.canaryMatch) : null,
      allowOverride: rc.allowOverride,
      preserveHost: rc.preserveHost,
      headersTimeout: rc.timeouts.headers,
      bodyTimeout: rc.timeouts.body,
      shadow,
      errorStatus,
      grpcErrors: grpcErrorTable(a.grpcErrorCodes),
      outcomeHeader: a.outcomeHeader === '' ? null : a.outcomeHeader.toLowerCase(),
      fallback,
      fuseAfter: canary !== null ? a.fuse.consecutiveFailures : 0,
      fuse,
      answer,
      chain: chains.chain,
      upgradeChain: chains.upgrade,
    })
  })
  return new RouteTable(generation, config, edge, routes)
}
