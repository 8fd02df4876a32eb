/**
 * `veer control`'s configuration: an optional YAML file (--config) whose keys the flags override,
 * validated in one pass like the proxy's (every problem with its path and a fix).
 */
import { readFile } from 'node:fs/promises'
import { parseYaml } from './load.ts'
import { type HostPort, hostPort, type Issue, list, obj, oneOf, str } from './schema-kit.ts'

export interface ControlConfig {
  readonly listen: HostPort
  readonly stateDir: string
  readonly tokenFile: string | null
  readonly webhooks: readonly string[]
  readonly tls: { readonly cert: string; readonly key: string } | null
  readonly log: { readonly level: string }
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
  log: obj('Logging (JSON lines on stdout)', {
    level: oneOf('Log level', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], 'info'),
  }),
})

export type ControlLoad = { ok: true; config: ControlConfig } | { ok: false; issues: Issue[] }

/** Validate a raw config (from YAML and flags merged). */
export function validateControlConfig(raw: unknown): ControlLoad {
  const issues: Issue[] = []
  const parsed = controlConfigField.parse(raw, '', issues) as Record<string, unknown> | undefined
  if (issues.length > 0 || parsed === undefined) return { ok: false, issues }
  return {
    ok: true,
    config: Object.freeze({
      ...(parsed as unknown as ControlConfig),
      tokenFile: (parsed.tokenFile as string | undefined) ?? null,
      tls: (parsed.tls as ControlConfig['tls'] | undefined) ?? null,
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
  return validateControlConfig({ ...raw, ...overrides })
}
