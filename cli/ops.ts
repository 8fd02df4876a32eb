/**
 * `veer status | history | set-weight | shadow | rollout | promote-shadow | promote | pause | resume | abort`: the
 * operator client of the control API. Human output by default, the API's JSON with --output json;
 * errors are one line on stderr and the exit codes of client.ts.
 */
import { readFileSync } from 'node:fs'
import { formatIssue, parseYaml } from '../config/load.ts'
import { ACTIONS_HINT, parseActions, parseTime, TIME_HINT } from '../control/audit-query.ts'
import type { ProxyView } from '../control/proxies.ts'
import type { AuditEntry } from '../control/store.ts'
import type { RouteView } from '../control/views.ts'
import { CliError, ControlClient, EXIT, readToken, usage } from './client.ts'
import { parseFlags } from './flags.ts'
import { historyTable, proxiesLine, statusTable, summary } from './format.ts'
import type { OpsCommand } from './ops-commands.ts'

const COMMON = `  --control URL[,URL…]   control API (default http://127.0.0.1:9900, or VEER_CONTROL_URL); several
                         replicas: the next one when one cannot be reached
  --token-file FILE      file holding the token (or VEER_TOKEN)
  --output table|json    human output (default) or the API's JSON
  -h, --help             this help
Exit codes: 0 done, 1 the API refused, 2 usage, 3 control cannot be reached.
`

const COMMANDS = {
  status: {
    usage: 'veer status [ROUTE] [--watch]',
    about: 'Routes with their weights, rollout step and time left, and how many live proxies are in sync.',
    flags:
      '  --watch                redraw every second until Ctrl-C; to a pipe or file, or with --output json\n                         (one JSON document a line), print again only when it changed\n',
    positionals: [0, 1],
  },
  history: {
    usage: 'veer history ROUTE [--action A[,B]] [--since T] [--until T] [--limit N]',
    about:
      "ROUTE's audit entries, oldest first: time, who, action, from → to, why (the newest --limit of those that match).",
    flags:
      '  --action A[,B]         only these actions (e.g. release-change,rollout-abort)\n  --since T, --until T   an RFC 3339 time (2025-06-01T12:00:00Z) or a duration ago (90m, 2h)\n  --limit N              at most N entries (default 50, at most 10000), fetched page by page\n',
    positionals: [1, 1],
  },
  'set-weight': {
    usage: 'veer set-weight ROUTE N [--if-match VERSION] [--reason TEXT]',
    about: 'Set the canary weight of ROUTE to N percent (stable gets the rest).',
    flags:
      '  --if-match VERSION     refuse (412) unless the route is still at this version\n  --reason TEXT          why, for the audit log\n',
    positionals: [2, 2],
  },
  shadow: {
    usage: 'veer shadow ROUTE --percent N [--if-match VERSION] [--reason TEXT]',
    about: "Set the share of ROUTE's requests the proxies mirror to its shadow upstream to N percent.",
    flags:
      '  --percent N            0..100 (0 stops mirroring)\n  --if-match VERSION     refuse (412) unless the route is still at this version\n  --reason TEXT          why, for the audit log\n',
    positionals: [1, 1],
  },
  rollout: {
    usage: 'veer rollout ROUTE --plan FILE [--reason TEXT]',
    about: 'Start a staged rollout from a plan file (YAML or JSON; see README "Control process").',
    flags:
      '  --plan FILE            the plan: steps of weight and pause\n  --reason TEXT          why, for the audit log\n',
    positionals: [1, 1],
  },
  'promote-shadow': {
    usage: 'veer promote-shadow ROUTE --plan FILE [--reason TEXT]',
    about:
      "Make ROUTE's shadow release its canary at 0% (mirroring stops) and start a rollout of it from a plan file, as veer rollout does.",
    flags:
      '  --plan FILE            the plan: steps of weight and pause (YAML or JSON)\n  --reason TEXT          why, for the audit log\n',
    positionals: [1, 1],
  },
  promote: {
    usage: 'veer promote ROUTE [--full] [--reason TEXT]',
    about: 'Move the rollout to its next step now; --full goes straight to 100% and completes it.',
    flags:
      '  --full                 skip the remaining steps\n  --reason TEXT          why, for the audit log\n',
    positionals: [1, 1],
  },
  pause: {
    usage: 'veer pause ROUTE [--reason TEXT]',
    about: 'Hold the rollout at its step; the pause time left is kept for resume.',
    flags: '  --reason TEXT          why, for the audit log\n',
    positionals: [1, 1],
  },
  resume: {
    usage: 'veer resume ROUTE [--reason TEXT]',
    about: 'Continue a paused rollout with the pause time it had left.',
    flags: '  --reason TEXT          why, for the audit log\n',
    positionals: [1, 1],
  },
  abort: {
    usage: 'veer abort ROUTE [--reason TEXT]',
    about: 'Roll back: canary 0% at once, and the rollout ends as aborted.',
    flags: '  --reason TEXT          why, for the audit log\n',
    positionals: [1, 1],
  },
} as const satisfies Record<OpsCommand, unknown>

export type { OpsCommand }

export function opsHelp(command: OpsCommand): string {
  const c = COMMANDS[command]
  return `Usage: ${c.usage}\n\n${c.about}\n\n${c.flags}${COMMON}`
}

/** The flags of the operator commands: the parser's table, and what `veer completion` completes. */
export const OPS_OPTIONS = {
  control: { type: 'string' },
  'token-file': { type: 'string' },
  output: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  watch: { type: 'boolean' },
  'if-match': { type: 'string' },
  percent: { type: 'string' },
  reason: { type: 'string' },
  plan: { type: 'string' },
  full: { type: 'boolean' },
  action: { type: 'string' },
  since: { type: 'string' },
  until: { type: 'string' },
  limit: { type: 'string' },
} as const

/** The flags only some commands take; the others take every flag of OPS_OPTIONS. */
const ONLY: Record<string, OpsCommand[]> = {
  watch: ['status'],
  'if-match': ['set-weight', 'shadow'],
  percent: ['shadow'],
  reason: ['set-weight', 'shadow', 'rollout', 'promote-shadow', 'promote', 'pause', 'resume', 'abort'],
  plan: ['rollout', 'promote-shadow'],
  full: ['promote'],
  action: ['history'],
  since: ['history'],
  until: ['history'],
  limit: ['history'],
}

export const OUTPUTS = ['table', 'json'] as const

/** The flags `command` takes. */
export function opsFlags(command: OpsCommand): string[] {
  return Object.keys(OPS_OPTIONS).filter((f) => ONLY[f]?.includes(command) ?? true)
}

/** `--output json` as the command line gives it, for errors before (or while) it is parsed. */
const wantsJson = (argv: readonly string[]): boolean =>
  argv.some((a, i) => a === '--output=json' || (a === '--output' && argv[i + 1] === 'json'))

const write = (text: string) => process.stdout.write(text.endsWith('\n') ? text : `${text}\n`)

/** Run `veer COMMAND`; with `--output json` an error is `{"error", "message"}` on stdout, same exit code. */
export async function runOps(command: OpsCommand, argv: string[]): Promise<void> {
  try {
    await ops(command, argv)
  } catch (err) {
    if (!(err instanceof CliError) || !wantsJson(argv)) throw err
    write(err.json())
    process.exitCode = err.exitCode
  }
}

async function ops(command: OpsCommand, argv: string[]): Promise<void> {
  const spec = COMMANDS[command]
  let values: Record<string, string | boolean | undefined>
  let positionals: string[]
  try {
    ;({ values, positionals } = parseFlags(command, argv, OPS_OPTIONS, {
      positionals: true,
      flags: opsFlags(command),
    }))
  } catch (err) {
    throw usage((err as Error).message)
  }
  if (values.help === true) {
    process.stdout.write(opsHelp(command))
    return
  }
  for (const [flag, commands] of Object.entries(ONLY)) {
    if (values[flag] !== undefined && !commands.includes(command))
      throw usage(`--${flag} is not a flag of veer ${command}; see veer ${command} --help`)
  }
  const [min, max] = spec.positionals
  if (positionals.length < min || positionals.length > max) throw usage(`usage: ${spec.usage}`)
  const output = (values.output as string | undefined) ?? 'table'
  if (!(OUTPUTS as readonly string[]).includes(output))
    throw usage(`--output must be ${OUTPUTS.join(' or ')} (got ${JSON.stringify(output)})`)
  const json = output === 'json'
  // Everything local is checked before the token and the network: a usage error is always exit 2.
  let body: unknown
  const route = positionals[0]
  if (command === 'set-weight') {
    const n = Number(positionals[1])
    if (positionals[1]!.trim() === '' || !Number.isInteger(n) || n < 0 || n > 100)
      throw usage(`N must be a whole number from 0 to 100 (got ${JSON.stringify(positionals[1])})`)
    body = { canary: n }
  } else if (command === 'shadow') {
    const text = values.percent
    if (typeof text !== 'string') throw usage('--percent N is required (0..100); see veer shadow --help')
    const n = Number(text)
    if (text.trim() === '' || !Number.isFinite(n) || n < 0 || n > 100)
      throw usage(`--percent must be a number from 0 to 100 (got ${JSON.stringify(text)})`)
    body = { percent: n }
  } else if (command === 'rollout' || command === 'promote-shadow') {
    if (typeof values.plan !== 'string')
      throw usage(`--plan FILE is required (a YAML or JSON plan); see veer ${command} --help`)
    body = readPlan(values.plan)
  } else if (command === 'promote') body = values.full === true ? { full: true } : {}
  else if (command !== 'status' && command !== 'history') body = {}
  const query = command === 'history' ? historyQuery(route!, values) : null
  if (typeof values.reason === 'string' && body !== undefined)
    (body as Record<string, unknown>).reason = values.reason
  const client = new ControlClient(
    (values.control as string | undefined) ?? process.env.VEER_CONTROL_URL ?? 'http://127.0.0.1:9900',
    readToken(values['token-file'] as string | undefined, process.env),
  )

  if (command === 'status') return status(client, route, json, values.watch === true)
  if (query !== null) return history(client, query, json)
  const path = `/v1/routes/${encodeURIComponent(route!)}`
  const headers: Record<string, string> = {}
  if (typeof values['if-match'] === 'string')
    headers['if-match'] = `"${values['if-match'].replace(/"/g, '')}"`
  const reply =
    command === 'set-weight'
      ? await client.call('PUT', `${path}/weights`, body, headers)
      : command === 'shadow'
        ? await client.call('PUT', `${path}/shadow`, body, headers)
        : await client.call('POST', `${path}/${command}`, body)
  const view = reply.body as RouteView
  write(json ? JSON.stringify(view, null, 2) : summary(view))
}

interface HistoryQuery {
  readonly params: URLSearchParams
  readonly limit: number
}

/** `veer history`'s flags as the query of GET /v1/audit, checked here first (a usage error is exit 2). */
function historyQuery(route: string, values: Record<string, string | boolean | undefined>): HistoryQuery {
  const params = new URLSearchParams({ route })
  const now = Date.now()
  for (const name of ['since', 'until'] as const) {
    const text = values[name]
    if (typeof text !== 'string') continue
    if (parseTime(text, now) === undefined)
      throw usage(`--${name} must be ${TIME_HINT} (got ${JSON.stringify(text)})`)
    params.set(name, text)
  }
  if (typeof values.action === 'string') {
    if (parseActions(values.action) === undefined)
      throw usage(`--action must be ${ACTIONS_HINT} (got ${JSON.stringify(values.action)})`)
    params.set('action', values.action)
  }
  const text = values.limit
  const limit = typeof text === 'string' ? Number(text) : 50
  if (!Number.isInteger(limit) || limit < 1 || limit > 10_000)
    throw usage(`--limit must be a whole number from 1 to 10000 (got ${JSON.stringify(text)})`)
  return { params, limit }
}

/** Pages of GET /v1/audit, newest first, until `limit` entries or no more; printed oldest first. */
async function history(client: ControlClient, q: HistoryQuery, json: boolean): Promise<void> {
  const pages: AuditEntry[][] = []
  let got = 0
  let before: string | null = null
  do {
    const params = new URLSearchParams(q.params)
    params.set('limit', String(Math.min(1000, q.limit - got)))
    if (before !== null) params.set('before', before)
    const page = (await client.call('GET', `/v1/audit?${params}`)).body as {
      entries: AuditEntry[]
      next: string | null
    }
    pages.unshift(page.entries)
    got += page.entries.length
    before = page.next
  } while (before !== null && got < q.limit)
  const entries = pages.flat()
  write(json ? JSON.stringify({ entries }, null, 2) : historyTable(entries))
}

function readPlan(file: string): unknown {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw usage(`--plan ${file}: cannot read it (${(err as NodeJS.ErrnoException).code})`)
  }
  // YAML is a superset of JSON: one parser reads both (`veer check` reads plans with it too).
  const doc = parseYaml(text, `--plan ${file}:`)
  if (!doc.ok) throw usage(formatIssue(doc.issues[0]!))
  return doc.value
}

async function status(
  client: ControlClient,
  route: string | undefined,
  json: boolean,
  watch: boolean,
): Promise<void> {
  /** The routes and proxies: JSON (compact in a watch: one document a line), or the table. */
  const once = async (): Promise<string> => {
    const [routes, proxies] = await Promise.all([
      client.call('GET', route === undefined ? '/v1/routes' : `/v1/routes/${encodeURIComponent(route)}`),
      client.call('GET', '/v1/proxies'),
    ])
    const list =
      route === undefined ? (routes.body as { routes: RouteView[] }).routes : [routes.body as RouteView]
    const known = (proxies.body as { proxies: ProxyView[] }).proxies
    if (json) return JSON.stringify({ routes: list, proxies: known }, null, watch ? undefined : 2)
    if (list.length === 0)
      return `no routes yet: they appear when a proxy started with --control registers\n${proxiesLine(known)}`
    return `${statusTable(list)}\n${proxiesLine(known)}`
  }
  if (!watch) {
    write(await once())
    return
  }
  // A terminal is redrawn in place every second; a pipe or file (or JSON) gets no screen codes, and a
  // new document only when it changed.
  const redraw = process.stdout.isTTY === true && !json
  let last: string | null = null
  for (;;) {
    let text: string
    try {
      text = await once()
    } catch (err) {
      // Control away: said, and the watch goes on until it is back.
      if (!(err instanceof CliError) || err.exitCode !== EXIT.unreachable) throw err
      text = json ? err.json() : err.message
    }
    if (redraw) process.stdout.write(`\x1b[H\x1b[2J${new Date().toISOString()}\n${text}\n`)
    else if (text !== last)
      process.stdout.write(json ? `${text}\n` : `${new Date().toISOString()}\n${text}\n\n`)
    last = text
    await new Promise((r) => setTimeout(r, 1000))
  }
}
