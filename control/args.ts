/** `veer control` flags and environment, checked whole before anything starts. */
import { readFileSync } from 'node:fs'
import type { SecureContextOptions } from 'node:tls'
import { parseFlags } from '../cli/flags.ts'
import { type ControlConfig, loadControlConfig } from '../config/control-config.ts'
import type { Issue } from '../config/schema-kit.ts'
import { readTls } from '../proxy/listen/tls.ts'
import { parseTokens, type TokenResult, Tokens } from './auth.ts'
import { DEFAULT_NOTIFIER, type NotifierOptions } from './notify.ts'

export const CONTROL_HELP = `Usage: veer control [--config FILE] [flags]

The control process: HTTP API (under /v1), staged rollouts, durable state and audit log. Proxies
started with --control URL register their routes and follow its weights.

  --config FILE          YAML with the keys listen, stateDir, store, tokenFile, webhooks, tls, log (flags win)
  --listen HOST:PORT     API address (default 127.0.0.1:9900; port 0 picks a free one)
  --state-dir DIR        where state.json and audit.log live (default ./veer-state)
  --etcd URL[,URL…]      keep the state and audit in etcd instead (http://, https:// or unix:/// client
                         URLs; prefix and TLS: store.etcd in --config); not with --state-dir
  --advertise URL        with --etcd: the URL the other replicas reach this one's API at
                         (store.etcd.advertise; needed when --listen is 0.0.0.0)
  --token-file FILE      tokens, one "TOKEN ROLE NAME" a line (ROLE: read, operator, proxy), or a bare
                         TOKEN (operator "default"); re-read on SIGHUP. VEER_TOKEN adds operator "env"
                         (a VEER_TOKEN the file also lists: the file's line holds)
  --webhook URL          POST rollout events (JSON with a Slack-compatible "text") here; repeatable.
                         VEER_WEBHOOKS adds URLs (separated by spaces or commas)
  --tls-cert FILE        serve HTTPS with this PEM certificate chain (with --tls-key)
  --tls-key FILE         the PEM private key for --tls-cert
  --recover              rebuild state.json from audit.log (each route as its last audited change left
                         it), audit it as "recovered", and exit; for a state dir whose two files disagree
  --dry-run              check everything a start checks (flags, config, token and TLS files, the state
                         dir's files), print one line and exit 0; nothing listens, locks or is written
  --export FILE          write the state dir's state and whole audit to FILE (JSON) and exit
  --import FILE          write an --export FILE into etcd (--etcd; its prefix must be empty) and exit
  -h, --help             this help
`

/** The flags of `veer control`: its parser's table, and what `veer completion` completes. */
export const CONTROL_OPTIONS = {
  config: { type: 'string' },
  listen: { type: 'string' },
  'state-dir': { type: 'string' },
  'token-file': { type: 'string' },
  webhook: { type: 'string', multiple: true },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  recover: { type: 'boolean' },
  'dry-run': { type: 'boolean' },
  etcd: { type: 'string' },
  advertise: { type: 'string' },
  export: { type: 'string' },
  import: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const

export class ControlUsageError extends Error {}

export interface ControlSetup {
  readonly config: ControlConfig
  /** Re-reads the token file (SIGHUP); the error is one line without any token in it. */
  readonly readTokens: () => TokenResult
  readonly tokens: Tokens
  /** What start-up says about the token sources (a VEER_TOKEN the file also lists). */
  readonly tokenNotes: readonly string[]
  /** The HTTPS server's options (certificate, key, minimum version); null: plain HTTP. */
  readonly tls: SecureContextOptions | null
  /** --recover: rebuild state.json from the audit and exit. */
  readonly recover: boolean
  /** --dry-run: check the state dir too, then exit; nothing listens, locks or is written. */
  readonly dryRun: boolean
  /** --export FILE (from the state dir) and --import FILE (into etcd): migrate and exit. */
  readonly exportFile: string | null
  readonly importFile: string | null
  readonly notifier: NotifierOptions
  /** Wire protocol long-poll hold, proxy liveness window, start-up grace, tick: env knobs (tests). */
  readonly watchMs: number
  readonly liveMs: number
  readonly graceMs: number
  readonly tickMs: number
  /** Failed authentications from one address before 429, and ms to regain one. */
  readonly authBurst: number
  readonly authRefillMs: number
  /** How long one audit entry stands for a client's repeated refusals (denials.ts). */
  readonly denialIntervalMs: number
}

function envInt(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const text = env[name]
  if (text === undefined || text === '') return fallback
  const n = Number(text)
  if (!Number.isInteger(n) || n < min || n > max)
    throw new ControlUsageError(
      `${name} must be a whole number from ${min} to ${max} (got ${JSON.stringify(text)})`,
    )
  return n
}

/** Parse flags, read the config and token files; throws ControlUsageError with every problem, one a line. */
export async function parseControlArgs(
  argv: string[],
  env: NodeJS.ProcessEnv,
): Promise<ControlSetup | 'help'> {
  let values: ReturnType<typeof parseFlags<typeof CONTROL_OPTIONS>>['values']
  try {
    ;({ values } = parseFlags('control', argv, CONTROL_OPTIONS))
  } catch (err) {
    throw new ControlUsageError((err as Error).message)
  }
  if (values.help === true) return 'help'
  const overrides: Record<string, unknown> = {}
  if (values.listen !== undefined) overrides.listen = values.listen
  if (values['state-dir'] !== undefined) overrides.stateDir = values['state-dir']
  if (values['token-file'] !== undefined) overrides.tokenFile = values['token-file']
  if (values.etcd !== undefined || values.advertise !== undefined)
    overrides.store = {
      etcd: {
        ...(values.etcd !== undefined && {
          endpoints: String(values.etcd)
            .split(',')
            .filter((u) => u !== ''),
        }),
        ...(values.advertise !== undefined && { advertise: values.advertise }),
      },
    }
  const envHooks = (env.VEER_WEBHOOKS ?? '').split(/[\s,]+/).filter((u) => u !== '')
  const flagHooks = (values.webhook as string[] | undefined) ?? []
  if (envHooks.length + flagHooks.length > 0) overrides.webhooks = [...flagHooks, ...envHooks]
  if ((values['tls-cert'] === undefined) !== (values['tls-key'] === undefined))
    throw new ControlUsageError('--tls-cert and --tls-key go together; give both or neither')
  if (values['tls-cert'] !== undefined) overrides.tls = { cert: values['tls-cert'], key: values['tls-key'] }
  const configPath = typeof values.config === 'string' ? values.config : null
  const loaded = await loadControlConfig(configPath, overrides)
  if (!loaded.ok) {
    // --advertise without etcd (no --etcd, no store.etcd in the file): its endpoints are missing.
    if (
      values.advertise !== undefined &&
      values.etcd === undefined &&
      loaded.issues.some((i) => i.path === 'store.etcd.endpoints' && i.message.startsWith('is required'))
    )
      throw new ControlUsageError(
        "--advertise is this replica's address for the other replicas on etcd; give it with --etcd URL",
      )
    const flag: Record<string, string> = {
      listen: '--listen',
      stateDir: '--state-dir',
      tokenFile: '--token-file',
    }
    const named = (path: string) =>
      flag[path] ??
      (path.startsWith('webhooks')
        ? '--webhook'
        : values.etcd !== undefined && path.startsWith('store.etcd.endpoints')
          ? '--etcd'
          : values.advertise !== undefined && path === 'store.etcd.advertise'
            ? '--advertise'
            : path)
    throw new ControlUsageError(loaded.issues.map((i) => `${named(i.path)} ${i.message}`).join('\n'))
  }
  const config = loaded.config
  const etcd = config.store.etcd !== null
  const one = (flag: 'recover' | 'export' | 'import', ok: boolean, why: string) => {
    if (values[flag] !== undefined && !ok) throw new ControlUsageError(`--${flag} ${why}`)
  }
  one('recover', !etcd, 'rebuilds a state dir; etcd keeps a change and its audit in one transaction')
  one('export', !etcd, 'reads a state dir; give --state-dir, not --etcd')
  one('import', etcd, 'writes into etcd; give --etcd URL')
  if (values.export !== undefined && values.import !== undefined)
    throw new ControlUsageError('--export and --import go one at a time')
  // --export and --import serve nothing: they need no token.
  const migrating = values.export !== undefined || values.import !== undefined
  const files = await readControlFiles(config, env, !migrating)
  if ('problems' in files) throw new ControlUsageError(files.problems.map((p) => p.line).join('\n'))
  if (values['dry-run'] === true && (values.recover === true || migrating)) {
    const writer = values.recover === true ? 'recover' : values.export !== undefined ? 'export' : 'import'
    throw new ControlUsageError(`--dry-run and --${writer} do not go together: --${writer} writes`)
  }
  const liveMs = envInt(env, 'VEER_CONTROL_LIVE_MS', 10_000, 100, 3_600_000)
  return {
    config,
    ...files,
    recover: values.recover === true,
    dryRun: values['dry-run'] === true,
    exportFile: typeof values.export === 'string' ? values.export : null,
    importFile: typeof values.import === 'string' ? values.import : null,
    notifier: {
      ...DEFAULT_NOTIFIER,
      backoffMs: envInt(env, 'VEER_CONTROL_WEBHOOK_BACKOFF_MS', DEFAULT_NOTIFIER.backoffMs, 1, 600_000),
    },
    watchMs: envInt(env, 'VEER_CONTROL_WATCH_MS', 20_000, 10, 300_000),
    liveMs,
    graceMs: envInt(env, 'VEER_CONTROL_GRACE_MS', liveMs, 0, 3_600_000),
    tickMs: envInt(env, 'VEER_CONTROL_TICK_MS', 250, 10, 60_000),
    authBurst: envInt(env, 'VEER_CONTROL_AUTH_BURST', 10, 1, 1_000_000),
    authRefillMs: envInt(env, 'VEER_CONTROL_AUTH_REFILL_MS', 6000, 1, 3_600_000),
    denialIntervalMs: envInt(env, 'VEER_CONTROL_DENIAL_INTERVAL_MS', 60_000, 10, 3_600_000),
  }
}

type ControlFiles = Pick<ControlSetup, 'readTokens' | 'tokens' | 'tokenNotes' | 'tls'>

/** A problem of a file the config names: its line at start, and its field for `veer check`. */
export interface FileProblem {
  readonly line: string
  readonly issue: Issue
}

/**
 * The token and TLS files a valid config names, read and checked as a start does (`veer check` of a
 * control config too): the setup's parts, or every problem. Without a token file the token is
 * VEER_TOKEN's, which `veer check` does not ask for (`requireToken` false).
 */
export async function readControlFiles(
  config: ControlConfig,
  env: NodeJS.ProcessEnv,
  requireToken = true,
): Promise<ControlFiles | { problems: FileProblem[] }> {
  const problems: FileProblem[] = []
  const readTokens = () => {
    let text: string | null = null
    if (config.tokenFile !== null) {
      try {
        text = readFileSync(config.tokenFile, 'utf8')
      } catch (err) {
        return {
          ok: false as const,
          error: `--token-file ${config.tokenFile}: cannot read it (${(err as NodeJS.ErrnoException).code})`,
        }
      }
    }
    return parseTokens(text, config.tokenFile ?? 'VEER_TOKEN', env.VEER_TOKEN)
  }
  const first = requireToken || config.tokenFile !== null ? readTokens() : null
  if (first !== null && !first.ok)
    problems.push({
      line: first.error,
      issue: { path: 'tokenFile', message: first.error.replace(/^--token-file /, '') },
    })
  let tls: ControlSetup['tls'] = null
  if (config.tls !== null) {
    // The proxy's reader: the key must be the certificate's, and TLS 1.2 is the floor, as on the proxy.
    const material = await readTls({ ...config.tls, certificates: [], minVersion: 'TLSv1.2' })
    if (typeof material === 'string') {
      // It names the setting first: `tls.key: cannot read …`.
      const colon = material.indexOf(': ')
      problems.push({
        line: `--tls-cert/--tls-key (${material})`,
        issue:
          colon === -1
            ? { path: 'tls', message: material }
            : { path: material.slice(0, colon), message: material.slice(colon + 2) },
      })
    } else tls = material.options
  }
  if (problems.length > 0) return { problems }
  const tokens = first?.ok ? first : { tokens: new Tokens([]), notes: [] }
  return { readTokens, tokens: tokens.tokens, tokenNotes: tokens.notes, tls }
}
