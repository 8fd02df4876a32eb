/** Control's weights for tests that are not about release pairs: each route's pair as its file serves it. */
import type { ProxyConfig } from '../../config/types.ts'
import type { RouteWeights } from '../../config/wire.ts'
import { servedPair } from '../../proxy/control/weights.ts'

type Unpaired = Omit<RouteWeights, 'pair'>

const NO_ROUTE = { stable: { url: 'http://127.0.0.1:9', release: 'none' }, canary: null }

export function paired(config: ProxyConfig, weights: Record<string, Unpaired>): Record<string, RouteWeights> {
  const out: Record<string, RouteWeights> = {}
  for (const [name, w] of Object.entries(weights)) {
    const rc = config.routes.find((r) => r.name === name)
    out[name] = { ...w, pair: rc === undefined ? NO_ROUTE : servedPair(rc, w as RouteWeights) }
  }
  return out
}
