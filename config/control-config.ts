/**
 * `veer control`'s configuration: an optional YAML file (--config) whose keys the flags override,
 * validated in one pass like the proxy's (every problem with its path and a fix).
 */
import { readFile } from 'node:fs/promises'
import { parseYaml } from './load.ts'
import { type HostPort, hostPort, type Issue, int, list, obj, oneOf, str } from './schema-kit.ts'

export interface ControlConfig {
  readonly listen: HostPort
  readonly stateDir: string
  readonly tokenFile: string | null
  readonly webhooks: readonly string[]
  readonly tls: { readonly cert: string; readonly key: string } | null
  readonly log: { readonly level: string }
  readonly store: { readonly etcd: EtcdConfig | null }
}

/** `store.etcd` (or --etcd): control keeps its state in etcd instead of the state dir. */
export interface EtcdConfig {
  readonly endpoints: readonly string[]
  readonly prefix: string
  readonly tls: { readonly ca?: string; readonly cert?: string; readonly key?: string } | null
  /** Seconds: the leader's lease; a dead leader is replaced within about this long. */
  readonly leaseTtl: number
  /** The URL the other replicas reach this one's API at (default: the listen URL). */
  readonly advertise?: string
}

const etcdEndpoint = {
  ...str('An etcd client URL: http://HOST:PORT, https://HOST:PORT or unix:///PATH'),
  parse(value: unknown, path: string, issues: Issue[]): string | undefined {
    const ok =
      typeof value === 'string' &&
      URL.canParse(value) &&
      (new URL(value).protocol === 'unix:'
        ? value.startsWith('unix:///')
        : ['http:', 'https:'].includes(new URL(value).protocol) && new URL(value).port !== '')
    if (!ok) {
      issues.push({
        path,
        message: `must be http://HOST:PORT, https://HOST:PORT or unix:///PATH (got ${JSON.stringify(value)})`,
      })
      return undefined
    }
    return value as string
  },
}

const etcdPrefix = {
  ...str('Key prefix in etcd under which control keeps everything', { fallback: '/veer/' }),
  parse(value: unknown, path: string, issues: Issue[]): string | undefined {
    if (value === undefined) return '/veer/'
    if (typeof value !== 'string' || !/^\/[\x21-\x7e]*\/$/.test(value)) {
      issues.push({
        path,
        message: `must start and end with / and have no spaces, such as /veer/ (got ${JSON.stringify(value)})`,
      })
      return undefined
    }
    return value
  },
}

const advertise = {
  ...str(
    "URL the other control replicas reach this one's API at (followers send the leader their proxies' reports there); default the listen address's URL",
  ),
  parse(value: unknown, path: string, issues: Issue[]): string | undefined {
    if (value === undefined) return undefined
    const ok =
      typeof value === 'string' &&
      URL.canParse(value) &&
      ['http:', 'https:'].includes(new URL(value).protocol) &&
      new URL(value).search === ''
    if (!ok) {
      issues.push({
        path,
        message: `must be an http:// or https:// URL such as http://10.0.0.5:9900 (got ${JSON.stringify(value)})`,
      })
      return undefined
    }
    return (value as string).replace(/\/+$/, '')
  },
}

const webhook = {
  ...str('A webhook URL (http:// or https://) that receives rollout events as JSON'),
  parse(value: unknown, path: string, issues: Issue[]): string | undefined {
    const ok =
      typeof value === 'string' &&
      URL.canParse(value) &&
      ['http:', 'https:'].includes(new URL(value).protocol)
    if (!ok) {
      issues.push({ path, message: `must be an http:// or https:// URL (got ${JSON.stringify(value)})` })
      return undefined
    }
    return value as string
  },
}

export const controlConfigField = obj('veer control configuration', {
  listen: hostPort('Address of the control API', { host: '127.0.0.1', port: 9900 }),
  stateDir: str('Directory for state.json and audit.log (created if missing)', { fallback: './veer-state' }),
  tokenFile: str('Token file: one TOKEN ROLE NAME per line, or a bare TOKEN (operator "default")'),
  webhooks: list('Webhook URLs that receive rollout events', webhook),
  tls: obj(
    'Serve HTTPS (for non-loopback use)',
    { cert: str('PEM certificate chain file'), key: str('PEM private key file') },
    { required: ['cert', 'key'], optional: true },
  ),
  store: obj('Where control keeps its state: the state dir (stateDir, the default) or etcd', {
    etcd: obj(
      'etcd (veer control --etcd): routes, rollouts and the audit live there instead of the state dir',
      {
        endpoints: list('Client URLs of the etcd members', etcdEndpoint, { minItems: 1 }),
        prefix: etcdPrefix,
        leaseTtl: int(
          "Seconds of the control replicas' leader lease: a leader that stops renewing it is replaced within this long",
          1,
          60,
          5,
        ),
        advertise,
        tls: obj(
          'TLS to etcd (https:// endpoints)',
          {
            ca: str('PEM CA bundle that signed the etcd servers (default: the system roots)'),
            cert: str('PEM client certificate (etcd --client-cert-auth), with key'),
            key: str('PEM private key of cert'),
          },
          { optional: true },
        ),
      },
      { required: ['endpoints'], optional: true },
    ),
  }),
  log: obj('Logging (JSON lines on stdout)', {
    level: oneOf('Log level', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], 'info'),
  }),
})

/** Hosts that mean any local address: never one replica's address. */
const UNSPECIFIED = new Set(['0.0.0.0', '::', '[::]', ''])

export type ControlLoad = { ok: true; config: ControlConfig } | { ok: false; issues: Issue[] }

/** Validate a raw config (from YAML and flags merged). */
export function validateControlConfig(raw: unknown): ControlLoad {
  const issues: Issue[] = []
  const parsed = controlConfigField.parse(raw, '', issues) as Record<string, unknown> | undefined
  const given = (raw ?? {}) as { stateDir?: unknown; store?: { etcd?: unknown } | null }
  if (given.stateDir !== undefined && given.store?.etcd != null)
    issues.push({ path: 'stateDir', message: 'and --etcd (store.etcd) are two stores; give one of them' })
  const etcd = (parsed?.store as { etcd?: EtcdConfig } | undefined)?.etcd
  if (etcd?.tls && (etcd.tls.cert === undefined) !== (etcd.tls.key === undefined))
    issues.push({ path: 'store.etcd.tls', message: 'cert and key go together; give both or neither' })
  if (etcd?.tls && etcd.endpoints.some((e) => !e.startsWith('https://')))
    issues.push({ path: 'store.etcd.tls', message: 'needs https:// endpoints' })
  // The leader's address is how followers hand it their proxies: an unspecified one (0.0.0.0, ::)
  // names every replica at once, and a follower would send its proxies' calls to itself.
  const listen = parsed?.listen as { host: string } | undefined
  if (etcd !== undefined && listen !== undefined) {
    // (An advertise given but not a URL has its own issue already.)
    const givenAdvertise = (given.store?.etcd as { advertise?: unknown } | null | undefined)?.advertise
    if (givenAdvertise === undefined && UNSPECIFIED.has(listen.host))
      issues.push({
        path: 'store.etcd.advertise',
        message: `must be given when listen is ${listen.host} (any address): the URL the other replicas reach this one at, such as https://veer-control-0.veer-control:9900`,
      })
    else if (etcd.advertise !== undefined && UNSPECIFIED.has(new URL(etcd.advertise).hostname))
      issues.push({
        path: 'store.etcd.advertise',
        message: `names no one replica (${etcd.advertise}); give the address the other replicas reach this one at`,
      })
  }
  if (issues.length > 0 || parsed === undefined) return { ok: false, issues }
  return {
    ok: true,
    config: Object.freeze({
      ...(parsed as unknown as ControlConfig),
      tokenFile: (parsed.tokenFile as string | undefined) ?? null,
      tls: (parsed.tls as ControlConfig['tls'] | undefined) ?? null,
      store: { etcd: etcd === undefined ? null : { ...etcd, tls: etcd.tls ?? null } },
    }),
  }
}

/** Read the YAML file, let `overrides` (from flags) win, validate. */
export async function loadControlConfig(
  path: string | null,
  overrides: Record<string, unknown>,
): Promise<ControlLoad> {
  let raw: Record<string, unknown> = {}
  if (path !== null) {
    let text: string
    try {
      text = await readFile(path, 'utf8')
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      return {
        ok: false,
        issues: [
          { path: '--config', message: `cannot read ${path}: ${code === 'ENOENT' ? 'no such file' : code}` },
        ],
      }
    }
    const doc = parseYaml(text, path)
    if (!doc.ok) return doc
    const js = doc.value
    if (js !== null && (typeof js !== 'object' || Array.isArray(js)))
      return { ok: false, issues: [{ path, message: 'must be a YAML mapping of settings' }] }
    raw = (js as Record<string, unknown> | null) ?? {}
  }
  // --etcd gives the endpoints; the file's store.etcd may still give the prefix and TLS.
  const store = overrides.store as { etcd: Record<string, unknown> } | undefined
  const fileStore = raw.store as { etcd?: Record<string, unknown> } | null | undefined
  const merged =
    store === undefined
      ? overrides
      : { ...overrides, store: { ...fileStore, etcd: { ...fileStore?.etcd, ...store.etcd } } }
  return validateControlConfig({ ...raw, ...merged })
}
