/** `veer proxy` flags: the contract's quick-start flags, or `--config FILE` (with --listen/--admin overrides). */
import { readFile } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { parseFlags } from '../cli/flags.ts'
import { type Issue, type LoadResult, loadConfigFile, validateConfig } from '../config/load.ts'

export const PROXY_HELP = `Usage: veer proxy [--config FILE] [flags]

The data plane: a listener that splits traffic between a stable and a canary upstream, and an admin
listener (/healthz /readyz /metrics /v1/config /v1/stats).

  --config FILE          YAML configuration (see README); reloaded on SIGHUP and when the file changes
  --listen HOST:PORT     traffic listener (default 127.0.0.1:8080)
  --admin HOST:PORT      admin listener (default 127.0.0.1:9901)
  --tls-cert FILE        serve TLS (ALPN h2, http/1.1) with this PEM certificate chain (needs --tls-key)
  --tls-key FILE         the certificate's PEM private key
Quick start, one route named "default" (not with --config):
  --stable URL           stable upstream origin, e.g. http://127.0.0.1:3000 (required)
  --canary URL           canary upstream origin
  --canary-weight N      percent of traffic to the canary, 0..100 (default 0)
  --shadow URL           shadow upstream that gets a copy of the traffic
  --shadow-percent N     percent of requests mirrored, 0..100 (default 100 with --shadow)
  --sticky-header NAME   the hash of this header's value picks the version (one user, one version)
  --allow-override       honour x-veer-version: stable|canary from testers
  --control URL[,URL…]   follow the weights of veer control (their source of truth then); several
                         replicas' URLs: the next one is used when one does not answer
  --token-file FILE      file holding the token for --control (or set VEER_TOKEN)
  --state-dir DIR        keeps control's last weights across restarts (default ./.veer-proxy)
  --workers N|auto       traffic worker processes sharing the listener (default 1; auto: one per core)
  --dry-run              check everything a start checks (flags, config, TLS and CA files, token file,
                         state dir), print one line and exit 0; nothing listens or is written
  -h, --help             this help
`

/** The flags of `veer proxy`: its parser's table, and what `veer completion` completes. */
export const PROXY_OPTIONS = {
  config: { type: 'string' },
  listen: { type: 'string' },
  admin: { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  stable: { type: 'string' },
  canary: { type: 'string' },
  'canary-weight': { type: 'string' },
  shadow: { type: 'string' },
  'shadow-percent': { type: 'string' },
  'sticky-header': { type: 'string' },
  'allow-override': { type: 'boolean' },
  control: { type: 'string' },
  'token-file': { type: 'string' },
  'state-dir': { type: 'string' },
  workers: { type: 'string' },
  'dry-run': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const

/** Where a quick-start flag lands in the config, so errors name the flag the user typed. */
const FLAG_PATHS: Record<string, string> = {
  listen: '--listen',
  admin: '--admin',
  'tls.cert': '--tls-cert',
  'tls.key': '--tls-key',
  'routes[0].stable.url': '--stable',
  'routes[0].canary.url': '--canary',
  'routes[0].canaryWeight': '--canary-weight',
  'routes[0].shadow.url': '--shadow',
  'routes[0].shadow.percent': '--shadow-percent',
  'routes[0].sticky.header': '--sticky-header',
}

const ROUTE_FLAGS = [
  'stable',
  'canary',
  'canary-weight',
  'shadow',
  'shadow-percent',
  'sticky-header',
  'allow-override',
] as const

export interface ControlArgs {
  /** One URL, or several control replicas' comma-separated. */
  url: string
  stateDir: string
  /** Reads the token (from --token-file or VEER_TOKEN); a FlagError when it cannot. */
  token: () => Promise<string>
}

export interface ProxyArgs {
  help: boolean
  configPath: string | null
  /** Loads (and on reload re-loads) the configuration these flags describe. */
  load: () => Promise<LoadResult>
  /** `--control` and its token and state dir; null without --control. */
  control: ControlArgs | null
  /** Traffic worker processes (`--workers`); 1 runs everything in this process. */
  workers: number
  /** `--dry-run`: check what a start checks, bind and write nothing. */
  dryRun: boolean
}

export class FlagError extends Error {}

/** `--workers N` (1..64) or `auto` (one per core this process may use). */
function workerCount(text: string | undefined): number {
  if (text === undefined) return 1
  if (text === 'auto') return availableParallelism()
  const n = Number(text)
  if (!Number.isInteger(n) || n < 1 || n > 64) {
    throw new FlagError(
      `--workers must be a whole number from 1 to 64, or auto (got ${JSON.stringify(text)})`,
    )
  }
  return n
}

/** A number flag as a number when it is one; otherwise the text, so validation names it. */
function numeric(text: string | undefined): number | string | undefined {
  if (text === undefined) return undefined
  const n = Number(text)
  return text.trim() !== '' && Number.isFinite(n) ? n : text
}

export function parseProxyArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): ProxyArgs {
  const { values } = parseFlags('proxy', argv, PROXY_OPTIONS)
  const help = values.help === true
  const control = help ? null : controlArgs(values, env)
  const workers = workerCount(values.workers as string | undefined)
  const dryRun = values['dry-run'] === true
  const overrides: Record<string, unknown> = {}
  if (values.listen !== undefined) overrides.listen = values.listen
  if (values.admin !== undefined) overrides.admin = values.admin
  const tlsCert = values['tls-cert'] as string | undefined
  const tlsKey = values['tls-key'] as string | undefined
  if ((tlsCert === undefined) !== (tlsKey === undefined))
    throw new FlagError(
      tlsCert === undefined ? '--tls-key needs --tls-cert FILE' : '--tls-cert needs --tls-key FILE',
    )
  // Laid over the file's tls section (its certificates list and clientCA stay).
  if (tlsCert !== undefined) overrides.tls = { cert: tlsCert, key: tlsKey }
  const configPath = typeof values.config === 'string' ? values.config : null
  if (configPath !== null) {
    const clash = ROUTE_FLAGS.find((f) => values[f] !== undefined)
    if (clash)
      throw new FlagError(
        `--${clash}: quick-start route flags cannot be combined with --config; put the route in the config file`,
      )
    return { help, configPath, load: () => loadConfigFile(configPath, overrides), control, workers, dryRun }
  }
  if (!help && values.stable === undefined) {
    throw new FlagError(
      '--stable is required (the stable upstream URL, e.g. --stable http://127.0.0.1:3000), or use --config FILE',
    )
  }
  if (values.shadow === undefined && values['shadow-percent'] !== undefined) {
    throw new FlagError('--shadow-percent needs --shadow URL')
  }
  const route: Record<string, unknown> = {
    name: 'default',
    stable: { url: values.stable },
    canaryWeight: numeric(values['canary-weight'] as string | undefined),
    allowOverride: values['allow-override'] === true,
  }
  if (values.canary !== undefined) route.canary = { url: values.canary }
  if (values.shadow !== undefined) {
    route.shadow = {
      url: values.shadow,
      percent: numeric(values['shadow-percent'] as string | undefined) ?? 100,
    }
  }
  if (values['sticky-header'] !== undefined) route.sticky = { header: values['sticky-header'] }
  const raw = { ...overrides, routes: [route] }
  const result = validateConfig(raw)
  const named: LoadResult = result.ok ? result : { ok: false, issues: result.issues.map(renameFlag) }
  return { help, configPath: null, load: () => Promise.resolve(named), control, workers, dryRun }
}

function controlArgs(
  values: Readonly<Record<string, string | boolean | undefined>>,
  env: NodeJS.ProcessEnv,
): ControlArgs | null {
  const url = values.control as string | undefined
  const tokenFile = values['token-file'] as string | undefined
  if (url === undefined) {
    if (tokenFile !== undefined) throw new FlagError('--token-file needs --control URL')
    return null
  }
  for (const one of url.split(',')) {
    let parsed: URL | null = null
    try {
      parsed = new URL(one)
    } catch {}
    if (parsed === null || !/^https?:$/.test(parsed.protocol) || parsed.search !== '' || parsed.hash !== '') {
      throw new FlagError(
        `--control must be the http:// or https:// URL of veer control (several: comma-separated), e.g. http://127.0.0.1:9900 (got ${JSON.stringify(one)})`,
      )
    }
  }
  const envToken = env.VEER_TOKEN?.trim() ?? ''
  if (tokenFile === undefined && envToken === '') {
    throw new FlagError('--control needs a token: pass --token-file FILE or set VEER_TOKEN')
  }
  if (tokenFile === undefined && /\s/.test(envToken))
    throw new FlagError('VEER_TOKEN must hold just the token')
  const token = async () => {
    if (tokenFile === undefined) return envToken
    let text: string
    try {
      text = await readFile(tokenFile, 'utf8')
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      throw new FlagError(
        `--token-file: cannot read ${tokenFile} (${e.code === 'ENOENT' ? 'no such file' : (e.code ?? e.message)})`,
      )
    }
    const value = text.trim()
    if (value === '') throw new FlagError(`--token-file: ${tokenFile} is empty; put the proxy's token in it`)
    if (/\s/.test(value))
      throw new FlagError(`--token-file: ${tokenFile} must hold just the token, on one line`)
    return value
  }
  return { url, stateDir: (values['state-dir'] as string | undefined) ?? '.veer-proxy', token }
}

function renameFlag(issue: Issue): Issue {
  const flag = FLAG_PATHS[issue.path]
  if (flag === '--canary-weight' && issue.message.startsWith('is above 0 but the route has no canary')) {
    // The config-file wording ("add canary.url") would send a flag user looking for a key.
    return {
      path: flag,
      message: 'is above 0 but there is no canary; add --canary URL or drop --canary-weight',
    }
  }
  return flag ? { path: flag, message: issue.message } : issue
}
