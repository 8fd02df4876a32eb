/**
 * The CA files that verify https:// upstreams (`ca` on stable, canary and shadow): read and checked
 * before a config is compiled, at start and on every reload, so a missing or broken file is a config
 * problem naming the field, never a failed request later.
 */
import type { Issue } from '../../config/schema-kit.ts'
import type { ProxyConfig } from '../../config/types.ts'
import { readCa } from '../listen/tls.ts'

/** File → PEM text for every `ca` the config names, or the problems. */
export async function readUpstreamTrust(config: ProxyConfig): Promise<Map<string, string> | Issue[]> {
  const trust = new Map<string, string>()
  const issues: Issue[] = []
  for (const [i, route] of config.routes.entries()) {
    for (const side of ['stable', 'canary', 'shadow'] as const) {
      const file = route[side]?.ca
      if (file === undefined || trust.has(file)) continue
      const ca = await readCa(file)
      if (typeof ca === 'string') trust.set(file, ca)
      else issues.push({ path: `routes[${i}].${side}.ca`, message: ca.problem })
    }
  }
  return issues.length > 0 ? issues : trust
}
