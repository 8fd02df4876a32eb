/**
 * The control HTTP API under /v1 (README "Control process"): routes, weights, rollouts, audit, events,
 * proxies, and the proxy side of the wire protocol (config/wire.ts). Every call but GET /healthz and
 * /readyz is authenticated first (401), rate-limited after repeated failures (429), routed (404/405),
 * checked against the token's role (403), and only then read; every refusal is one JSON error (errors.ts).
 */

import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { ACTIONS_HINT, parseActions, parseTime, TIME_HINT } from './audit-query.ts'
import { type Access, allows, type FailureLimiter, type Identity, type Tokens } from './auth.ts'
import type { Denials } from './denials.ts'
import type { Engine } from './engine.ts'
import { ApiError, storageFailed } from './errors.ts'
import type { EventHub } from './events.ts'
import { FORWARDED_BY, type LeaderFeed } from './feed.ts'
import { readJson, sendError, sendJson } from './http.ts'
import { type Leadership, SOLE } from './leader.ts'
import type { ProxyLink } from './link.ts'
import type { ControlMetrics } from './metrics.ts'
import type { ProxyRegistry } from './proxies.ts'
import type { Plan, RolloutEvent } from './rollout.ts'
import {
  parseAck,
  parseAction,
  parsePlan,
  parsePromote,
  parseRegister,
  parseReport,
  parseShadow,
  parseWeights,
} from './schemas.ts'
import type { AuditDraft } from './store.ts'
import { isUiPath, serveUi, type UiAssets } from './ui.ts'
import type { RouteView } from './views.ts'

export interface ApiDeps {
  readonly engine: Engine
  /** Who leads (GET /v1/control); absent: a single control. */
  readonly lead?: Leadership
  /** A follower hands its proxies' reports on to the leader (feed.ts); absent: a single control. */
  readonly feed?: LeaderFeed
  /** etcd: whether this replica's proxy records can be kept (proxy-book.ts); absent: always. */
  readonly registryHealthy?: () => boolean
  readonly link: ProxyLink
  readonly proxies: ProxyRegistry
  readonly events: EventHub
  readonly tokens: () => Tokens
  readonly limiter: FailureLimiter
  /** Refused calls, audited aggregated (denials.ts). */
  readonly denials: Denials
  readonly log: Logger
  /** How long a watch is held before 204 (wire protocol: ~20 s). */
  readonly watchMs: number
  readonly closing: () => boolean
  readonly metrics: ControlMetrics
  /** The status page's files (ui.ts), served under /ui/ without a token; absent: no page. */
  readonly ui?: UiAssets
}

interface Call {
  readonly req: IncomingMessage
  readonly res: ServerResponse
  readonly who: Identity
  readonly params: readonly string[]
  readonly url: URL
}

type Handler = (d: ApiDeps, c: Call) => Promise<void>
interface Endpoint {
  readonly path: readonly string[]
  readonly methods: Readonly<Record<string, { readonly access: Access; readonly handle: Handler }>>
}

const etag = (version: number) => ({ etag: `"${version}"` })

const reasonOf = (body: { reason?: string }): string | null => body.reason ?? null

const routeAction = (make: (body: unknown) => { event: RolloutEvent; why: string | null }): Handler => {
  return async (d, c) => {
    const { event, why } = make(await readJson(c.req))
    const view = await d.engine.act(c.params[0]!, event, c.who, why)
    sendJson(c.res, 200, view, etag(view.version))
  }
}

/**
 * POST …/rollout and …/promote-shadow: a plan in the body (parsePlan), then `start` on the route. With
 * `required`, an empty body is refused as such (for /rollout it reads as a plan with no steps).
 */
const planCall = (
  start: (d: ApiDeps, route: string, plan: Plan, who: Identity, why: string | null) => Promise<RouteView>,
  required?: string,
): Handler => {
  return async (d, c) => {
    const body = await readJson(c.req)
    if (body === undefined && required !== undefined)
      throw new ApiError(
        'invalid_plan',
        `${required}: send a rollout plan as the body, as for POST /v1/routes/{route}/rollout, e.g. {"steps": [{"weight": 10, "pause": "5m"}, {"weight": 100}]}`,
      )
    const { plan, reason } = parsePlan(body)
    const view = await start(d, c.params[0]!, plan, c.who, reason ?? null)
    sendJson(c.res, 200, view, etag(view.version))
  }
}

function intParam(url: URL, name: string, min: number, max: number, fallback: number): number {
  const text = url.searchParams.get(name)
  if (text === null) return fallback
  const n = Number(text)
  if (text === '' || !Number.isInteger(n) || n < min || n > max)
    throw new ApiError(
      'invalid_query',
      `?${name}= must be a whole number from ${min} to ${max} (got ${JSON.stringify(text)})`,
    )
  return n
}

/**
 * Where a proxy's report goes on to (a follower's feed), or nowhere: a report another replica forwarded
 * is never forwarded again, and one this replica forwarded itself has looped back (forward_loop).
 */
function feedOf(d: ApiDeps, c: Call): LeaderFeed | undefined {
  const by = c.req.headers[FORWARDED_BY]
  if (by === undefined) return d.feed
  if (d.lead !== undefined && by === d.lead.view().replica) throw new ApiError('forward_loop')
  return undefined
}

/**
 * A replica cut off from etcd for 2/3 of its lease or more (its proxy records may soon be gone, and it sees no
 * new weights) sends its proxies elsewhere: their watch and registration get 503 and they move to the
 * next replica (with one control URL they keep serving on their last weights and retry).
 */
function servesProxies(d: ApiDeps): void {
  if (d.registryHealthy !== undefined && !d.registryHealthy())
    throw storageFailed(
      'this control replica has been cut off from etcd for 2/3 of its lease or more; try another replica',
    )
}

function proxyOf(d: ApiDeps, id: string) {
  const p = d.proxies.get(id)
  if (p === undefined)
    throw new ApiError(
      'unknown_proxy',
      `proxy ${JSON.stringify(id)} is not registered (control may have restarted); POST /v1/proxies/register again`,
    )
  return p
}

const ENDPOINTS: readonly Endpoint[] = [
  {
    path: ['v1', 'routes'],
    methods: {
      GET: {
        access: 'read',
        handle: async (d, c) =>
          sendJson(c.res, 200, { revision: d.engine.state.revision, routes: d.engine.routes() }),
      },
    },
  },
  {
    path: ['v1', 'control'],
    methods: {
      GET: { access: 'read', handle: async (d, c) => sendJson(c.res, 200, (d.lead ?? SOLE).view()) },
    },
  },
  {
    path: ['v1', 'routes', ':route'],
    methods: {
      GET: {
        access: 'read',
        handle: async (d, c) => {
          const view = d.engine.view(d.engine.route(c.params[0]!))
          sendJson(c.res, 200, view, etag(view.version))
        },
      },
    },
  },
  {
    path: ['v1', 'routes', ':route', 'weights'],
    methods: {
      PUT: {
        access: 'operate',
        handle: async (d, c) => {
          const body = parseWeights(await readJson(c.req))
          const ifMatch = c.req.headers['if-match']
          const view = await d.engine.setWeight(c.params[0]!, body.canary, ifMatch, c.who, reasonOf(body))
          sendJson(c.res, 200, view, etag(view.version))
        },
      },
    },
  },
  {
    path: ['v1', 'routes', ':route', 'shadow'],
    methods: {
      PUT: {
        access: 'operate',
        handle: async (d, c) => {
          const body = parseShadow(await readJson(c.req))
          const ifMatch = c.req.headers['if-match']
          const view = await d.engine.setShadow(c.params[0]!, body.percent, ifMatch, c.who, reasonOf(body))
          sendJson(c.res, 200, view, etag(view.version))
        },
      },
    },
  },
  {
    path: ['v1', 'routes', ':route', 'rollout'],
    methods: {
      POST: {
        access: 'operate',
        handle: planCall((d, route, plan, who, why) => d.engine.startRollout(route, plan, who, why)),
      },
    },
  },
  {
    path: ['v1', 'routes', ':route', 'promote-shadow'],
    methods: {
      POST: {
        access: 'operate',
        handle: planCall(
          (d, route, plan, who, why) => d.engine.promoteShadow(route, plan, who, why),
          'promote-shadow takes the plan to start on the promoted shadow',
        ),
      },
    },
  },
  {
    path: ['v1', 'routes', ':route', 'promote'],
    methods: {
      POST: {
        access: 'operate',
        handle: routeAction((body) => {
          const b = parsePromote(body)
          return { event: { type: 'promote', full: b.full }, why: reasonOf(b) }
        }),
      },
    },
  },
  {
    path: ['v1', 'routes', ':route', 'pause'],
    methods: {
      POST: {
        access: 'operate',
        handle: routeAction((body) => {
          const why = reasonOf(parseAction(body))
          return { event: { type: 'pause', reason: why }, why }
        }),
      },
    },
  },
  {
    path: ['v1', 'routes', ':route', 'resume'],
    methods: {
      POST: {
        access: 'operate',
        handle: routeAction((body) => ({ event: { type: 'resume' }, why: reasonOf(parseAction(body)) })),
      },
    },
  },
  {
    path: ['v1', 'routes', ':route', 'abort'],
    methods: {
      POST: {
        access: 'operate',
        handle: routeAction((body) => {
          const why = reasonOf(parseAction(body))
          return { event: { type: 'abort', reason: why }, why }
        }),
      },
    },
  },
  {
    path: ['metrics'],
    methods: {
      GET: {
        access: 'read',
        handle: async (d, c) => {
          const text = await d.metrics.registry.metrics()
          c.res.writeHead(200, { 'content-type': d.metrics.registry.contentType }).end(text)
        },
      },
    },
  },
  {
    path: ['v1', 'audit'],
    methods: {
      GET: {
        access: 'read',
        handle: async (d, c) => {
          const q = c.url.searchParams
          const limit = intParam(c.url, 'limit', 1, 10_000, 100)
          const now = d.engine.now()
          const time = (name: string): number | null => {
            const text = q.get(name)
            if (text === null) return null
            const t = parseTime(text, now)
            if (t === undefined)
              throw new ApiError(
                'invalid_query',
                `?${name}= must be ${TIME_HINT} (got ${JSON.stringify(text)})`,
              )
            return t
          }
          const actionText = q.get('action')
          const actions = actionText === null ? null : parseActions(actionText)
          if (actions === undefined)
            throw new ApiError(
              'invalid_query',
              `?action= must be ${ACTIONS_HINT} (got ${JSON.stringify(actionText)})`,
            )
          const before = q.has('before') ? intParam(c.url, 'before', 1, Number.MAX_SAFE_INTEGER, 0) : null
          sendJson(
            c.res,
            200,
            d.engine.audit({
              limit,
              route: q.get('route'),
              actions,
              since: time('since'),
              until: time('until'),
              before,
            }),
          )
        },
      },
    },
  },
  {
    path: ['v1', 'events'],
    methods: {
      GET: {
        access: 'read',
        handle: async (d, c) =>
          d.events.open(c.req, c.res, {
            revision: d.engine.state.revision,
            who: c.who.name,
            role: c.who.role,
          }),
      },
    },
  },
  {
    path: ['v1', 'proxies'],
    methods: {
      GET: {
        access: 'read',
        handle: async (d, c) =>
          sendJson(c.res, 200, {
            revision: d.engine.state.revision,
            proxies: d.proxies.list(d.engine.now()),
          }),
      },
    },
  },
  {
    path: ['v1', 'proxies', 'register'],
    methods: {
      POST: {
        access: 'wire',
        handle: async (d, c) => {
          servesProxies(d)
          const req = parseRegister(await readJson(c.req))
          // A proxy ahead of this replica: it moved here from one whose etcd watch was further on. Catch
          // up with etcd first (503 when it cannot be read), so it is never answered older weights.
          if (req.appliedRevision > d.engine.state.revision) await d.engine.catchUp()
          const answer = await d.link.register(req, c.who)
          sendJson(c.res, 200, answer)
        },
      },
    },
  },
  {
    path: ['v1', 'proxies', ':id', 'watch'],
    methods: {
      GET: {
        access: 'wire',
        handle: async (d, c) => {
          const p = proxyOf(d, c.params[0]!)
          servesProxies(d)
          const after = intParam(c.url, 'revision', 0, Number.MAX_SAFE_INTEGER, 0)
          p.lastSeen = d.engine.now()
          const closed = new Promise<void>((resolve) => c.res.once('close', resolve))
          const got = await d.proxies.watch(p, after, d.engine.state.revision, d.watchMs, closed)
          if (c.res.destroyed || c.res.writableEnded) return
          if (got === null) {
            c.res.writeHead(204, { 'cache-control': 'no-store' }).end()
            return
          }
          sendJson(c.res, 200, d.link.weightsFor(p.id))
        },
      },
    },
  },
  {
    path: ['v1', 'proxies', ':id', 'ack'],
    methods: {
      POST: {
        access: 'wire',
        handle: async (d, c) => {
          const p = proxyOf(d, c.params[0]!)
          const ack = parseAck(await readJson(c.req))
          d.link.ack(p, ack)
          c.res.writeHead(204).end()
        },
      },
    },
  },
  {
    path: ['v1', 'proxies', ':id', 'report'],
    methods: {
      POST: {
        access: 'wire',
        handle: async (d, c) => {
          const feed = feedOf(d, c)
          // Forwarded by another replica: that replica's record of its proxy (404 until it is here).
          const id = c.params[0]!
          const by = c.req.headers[FORWARDED_BY]
          const p = typeof by === 'string' ? d.proxies.record(id, by) : proxyOf(d, id)
          if (p === undefined) throw new ApiError('unknown_proxy')
          const report = parseReport(await readJson(c.req))
          d.link.report(p, report)
          feed?.report(p.id, report, c.req.headers.authorization!)
          c.res.writeHead(204).end()
        },
      },
    },
  },
]

/** The endpoint for a path: its parameters, or null when no endpoint has this shape. */
function match(segments: readonly string[]): { endpoint: Endpoint; params: string[] } | null {
  for (const endpoint of ENDPOINTS) {
    if (endpoint.path.length !== segments.length) continue
    const params: string[] = []
    let ok = true
    for (let i = 0; i < segments.length && ok; i++) {
      const want = endpoint.path[i]!
      if (want.startsWith(':')) params.push(segments[i]!)
      else ok = want === segments[i]
    }
    if (ok) return { endpoint, params }
  }
  return null
}

export function createApi(d: ApiDeps): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    if (d.ui !== undefined && isUiPath(req.url)) return serveUi(d.ui, req, res)
    handle(d, req, res).catch((err) => {
      if (err instanceof ApiError) return sendError(res, err)
      d.log.error({ err, method: req.method, path: req.url?.split('?')[0] }, 'request failed')
      sendError(res, new ApiError('internal'))
    })
  }
}

async function handle(d: ApiDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://control')
  const method = req.method ?? 'GET'
  if (url.pathname === '/healthz') {
    if (method !== 'GET' && method !== 'HEAD')
      throw new ApiError('method_not_allowed', 'GET /healthz', { allow: 'GET' })
    return sendJson(res, 200, { status: 'ok', revision: d.engine.state.revision })
  }
  if (url.pathname === '/readyz') {
    if (method !== 'GET' && method !== 'HEAD')
      throw new ApiError('method_not_allowed', 'GET /readyz', { allow: 'GET' })
    // The store is open from before the API exists until after `closing` (shutdown, a fatal write).
    if (d.closing()) return sendJson(res, 503, { status: 'shutting_down' })
    return sendJson(res, 200, { status: 'ready', revision: d.engine.state.revision })
  }
  if (d.closing()) throw new ApiError('shutting_down')
  const address = req.socket.remoteAddress ?? 'unknown'
  const now = d.engine.now()
  // A valid token is never rate limited: only failures count, and only failures are refused with 429,
  // so a proxy retrying with a stale token cannot lock operators on the same address out of abort.
  const who = d.tokens().check(req.headers.authorization)
  const wait = who === null ? d.limiter.blocked(address, now) : 0
  if (wait > 0) {
    await audited(d, `429 ${address}`, {
      ...refused(address, method, url.pathname),
      why: 'too many failed authentications (429)',
    })
    throw new ApiError(
      'too_many_auth_failures',
      `too many failed authentications from ${address}; retry in ${wait} s`,
      {
        'retry-after': String(wait),
      },
    )
  }
  if (who === null) {
    d.limiter.fail(address, now)
    const sent = req.headers.authorization === undefined ? 'no token' : 'an invalid token'
    await audited(d, `401 ${address}`, {
      ...refused(address, method, url.pathname),
      why: `${sent} (401)`,
    })
    d.log.warn(
      {
        address,
        method,
        path: url.pathname,
        sent: req.headers.authorization === undefined ? 'none' : 'invalid',
      },
      'unauthenticated request refused',
    )
    throw new ApiError(
      'unauthorized',
      req.headers.authorization === undefined
        ? 'this call needs Authorization: Bearer <token> (a token from the token file or VEER_TOKEN)'
        : 'the bearer token is not valid; check the token file or VEER_TOKEN',
      { 'www-authenticate': 'Bearer realm="veer"' },
    )
  }
  let segments: string[]
  try {
    segments = url.pathname.split('/').slice(1).map(decodeURIComponent)
  } catch {
    throw new ApiError('not_found', `${url.pathname} is not a valid path`)
  }
  const found = match(segments)
  if (found === null)
    throw new ApiError('not_found', `no endpoint ${url.pathname}; see README "Control process" for the API`)
  const op = Object.hasOwn(found.endpoint.methods, method) ? found.endpoint.methods[method] : undefined
  if (op === undefined) {
    const allow = Object.keys(found.endpoint.methods).join(', ')
    throw new ApiError('method_not_allowed', `${url.pathname} takes ${allow}, not ${method}`, { allow })
  }
  if (!allows(who.role, op.access)) {
    d.limiter.fail(address, now)
    const why = op.access === 'operate' ? 'needs the operator role' : 'needs the proxy or operator role'
    await audited(d, `403 ${who.name} ${address} ${method} ${found.endpoint.path.join('/')}`, {
      who: who.name,
      role: who.role,
      action: 'denied',
      route: null,
      from: address,
      to: `${method} ${url.pathname}`,
      why: `role ${who.role} ${why}`,
    })
    d.log.warn({ who: who.name, role: who.role, method, path: url.pathname }, 'forbidden request refused')
    throw new ApiError(
      'forbidden',
      `${method} ${url.pathname} ${why}; token ${who.name} has the ${who.role} role`,
    )
  }
  await op.handle(d, { req, res, who, params: found.params, url })
}

/**
 * Audit a refused call (denials.ts). One that cannot be written now (a full disk) still gets its 401,
 * 403 or 429, not a 503: the refusal is the answer, and it is counted for a later audit entry.
 */
async function audited(d: ApiDeps, key: string, draft: AuditDraft): Promise<void> {
  try {
    await d.denials.note(key, draft)
  } catch (err) {
    d.log.warn(
      { to: String(draft.to).slice(0, 200), reason: err instanceof ApiError ? err.message : String(err) },
      'refused call not audited yet: the state dir cannot be written; it is counted for a later entry',
    )
  }
}

/** The audit draft of a call refused before any token was accepted (401, 429). */
function refused(address: string, method: string, path: string): AuditDraft {
  return {
    who: 'unauthenticated',
    role: 'none',
    action: 'denied',
    route: null,
    from: address,
    to: `${method} ${path}`,
    why: null,
  }
}
