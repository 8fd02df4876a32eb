/**
 * Control's analysis judges gRPC outcomes, end to end on loopback: a real `veer control`, a real
 * `veer proxy --control`, @grpc/grpc-js stable and canary servers, and steady unary calls from this test.
 * A canary that answers UNAVAILABLE (HTTP 200) on half its calls is rolled back by the statistics, the
 * fuse being off, with its evidence in the audit; a healthy canary, and one answering NOT_FOUND (not in
 * analysis.grpcErrorCodes), are promoted.
 */
import * as grpc from '@grpc/grpc-js'
import { afterEach, describe, expect, it } from 'vitest'
import { type ControlProcess, runCli, startLinkedBed, TOKENS, until } from '../helpers/control.ts'
import { type Client, type EchoServer, echoClient, echoServer, say } from '../helpers/grpc.ts'
import type { VeerProcess } from '../helpers/veer.ts'

let running: { stop(signal?: NodeJS.Signals): Promise<unknown> }[] = []
let servers: EchoServer[] = []
let clients: Client[] = []

afterEach(async () => {
  for (const c of clients) c.close()
  await Promise.all(running.map((p) => p.stop('SIGKILL')))
  await Promise.all(servers.map((s) => s.close()))
  running = []
  servers = []
  clients = []
})

async function server(name: string, fail?: (n: number) => grpc.status | undefined): Promise<EchoServer> {
  const s = await echoServer(name, fail)
  servers.push(s)
  return s
}

/** Every other call answers `code`. */
const half = (code: grpc.status) => (n: number) => (n % 2 === 0 ? code : undefined)

/** Control and one proxy following it, route `shop` over gRPC `stable` and `canary`; the fuse off. */
async function bed(
  stable: EchoServer,
  canary: EchoServer,
): Promise<{ control: ControlProcess; proxy: VeerProcess }> {
  // Off, so only control's statistics can roll the canary back.
  const started = await startLinkedBed(stable, canary, { fuse: { consecutiveFailures: 0 } })
  running.push(started.control, started.proxy)
  return started
}

/** Unary Say calls through the proxy, 8 at a time, until `done()` or `max` calls; what the clients saw. */
async function load(proxy: VeerProcess, done: () => Promise<boolean>, max = 20_000) {
  const c = echoClient(proxy.port)
  clients.push(c)
  const seen = { calls: 0, canary: 0, codes: new Map<number, number>() }
  let stop = false
  const worker = async () => {
    while (!stop && seen.calls < max) {
      const a = await say(c, 'hi')
      seen.calls++
      const code = a.err?.code ?? grpc.status.OK
      seen.codes.set(code, (seen.codes.get(code) ?? 0) + 1)
      if (a.trailers?.get('x-served-by')[0] === 'canary') seen.canary++
    }
  }
  const workers = Array.from({ length: 8 }, worker)
  try {
    while (!stop && seen.calls < max) {
      if (await done()) break
      await new Promise((r) => setTimeout(r, 50))
    }
  } finally {
    stop = true
    await Promise.all(workers)
  }
  return seen
}

const phaseOf = async (control: ControlProcess) =>
  (await control.api('GET', '/v1/routes/shop')).json.rollout?.phase as string | undefined

const proxyMetrics = async (proxy: VeerProcess) => (await fetch(`${proxy.adminUrl}/metrics`)).text()

describe("control's analysis of gRPC calls", () => {
  it('rolls back a canary answering UNAVAILABLE on half its calls, by analysis, with evidence', async () => {
    const stable = await server('stable')
    const canary = await server('canary', half(grpc.status.UNAVAILABLE))
    const { control, proxy } = await bed(stable, canary)
    const start = await control.api('POST', '/v1/routes/shop/rollout', {
      body: { steps: [{ weight: 50, pause: '1h' }, { weight: 100 }] },
    })
    expect(start.status).toBe(200)
    const seen = await load(proxy, async () => (await phaseOf(control)) === 'aborted')
    // The canary's errors reached the clients (a gRPC error status is the answer: no fallback).
    expect(seen.codes.get(grpc.status.UNAVAILABLE)).toBeGreaterThan(0)
    expect([...seen.codes.keys()].sort()).toEqual([grpc.status.OK, grpc.status.UNAVAILABLE])

    const route = (await control.api('GET', '/v1/routes/shop')).json
    expect(route.rollout.phase).toBe('aborted')
    expect(route.weights).toEqual({ stable: 100, canary: 0 })
    expect(route.rollout.analysis).toMatchObject({ verdict: 'fail', fuse: null, saved: 0 })
    expect(route.rollout.analysis.harmed).toBeGreaterThan(0)
    const judged = route.rollout.analysis.judgement
    expect(judged.canary.errors).toBeGreaterThan(0)
    expect(judged.stable.errors).toBe(0)

    const audit = (await control.api('GET', '/v1/audit?route=shop&limit=1')).json.entries[0]
    expect(audit).toMatchObject({ who: 'analysis', action: 'rollout-abort', to: { canary: 0 } })
    expect(audit.why).toMatch(
      /^analysis failed: errors: canary \d+\.\d% \(\d+\/\d+\) vs stable 0\.0% \(0\/\d+\), evidence /,
    )
    const errors = audit.evidence.checks.find((c: { check: string }) => c.check === 'errors')
    expect(errors.result).toBe('fail')
    expect(errors.evidence.canaryEvents).toBeGreaterThan(0)
    expect(errors.evidence.evidence).toBeGreaterThanOrEqual(errors.evidence.threshold)
    expect(errors.evidence.canaryRate).toBeGreaterThan(0.25)
    const metrics = (await control.api('GET', '/metrics', { token: TOKENS.read })).text
    expect(metrics).toContain('veer_rollbacks_total{route="shop",reason="errors"} 1')
    expect(metrics).toContain('veer_rollbacks_total{route="shop",reason="fuse"} 0')
    const status = await runCli(['status', '--control', control.url], { VEER_TOKEN: TOKENS.read })
    expect(status.stdout).toMatch(/^shop: last: rollout-abort by analysis at \S+Z: .*errors: canary /m)

    // The proxy follows: canary weight 0, its fuse never tripped, and the calls were counted as gRPC
    // errors under HTTP 200.
    await until(async () => {
      const c = await fetch(`${proxy.adminUrl}/v1/config`)
      return (
        ((await c.json()) as { routes: { weights: { canary: number } }[] }).routes[0]!.weights.canary === 0
      )
    })
    const text = await proxyMetrics(proxy)
    expect(text).toMatch(
      /veer_requests_total\{route="shop",version="canary",code="200",grpc_code="UNAVAILABLE"\} [1-9]/,
    )
    expect(text).toContain('veer_rollbacks_total{route="shop",reason="fuse"} 0')
    expect(text).toContain('veer_rollbacks_total{route="shop",reason="errors"} 1')
    // Stable serves every call now.
    const before = canary.calls()
    const after = await Promise.all(Array.from({ length: 20 }, () => say(clients[0]!, 'after')))
    for (const a of after) expect(a.value?.by).toBe('stable')
    expect(canary.calls()).toBe(before)
  })

  it.each([
    ['a healthy canary (all OK)', undefined],
    ['a canary answering NOT_FOUND on half its calls (not an error code)', half(grpc.status.NOT_FOUND)],
  ])('promotes %s', async (_, fail) => {
    const stable = await server('stable')
    const canary = await server('canary', fail)
    const { control, proxy } = await bed(stable, canary)
    const start = await control.api('POST', '/v1/routes/shop/rollout', {
      body: {
        steps: [
          { weight: 50, pause: '1s' },
          { weight: 100, pause: '0s' },
        ],
        analysis: { minRequests: 30 },
      },
    })
    expect(start.status).toBe(200)
    const ended = (phase?: string) => phase === 'completed' || phase === 'aborted'
    const seen = await load(proxy, async () => ended(await phaseOf(control)))
    expect(seen.canary).toBeGreaterThan(0)
    const route = (await control.api('GET', '/v1/routes/shop')).json
    expect(route.rollout.phase).toBe('completed')
    expect(route.weights).toEqual({ stable: 0, canary: 100 })
    expect(route.rollout.analysis.verdict).toBe('pass')
    expect(route.rollout.analysis.judgement.canary.requests).toBeGreaterThanOrEqual(30)
    expect(route.rollout.analysis.judgement.canary.errors).toBe(0)
    expect(route.rollout.analysis.harmed).toBe(0)
    if (fail !== undefined) {
      expect(seen.codes.get(grpc.status.NOT_FOUND)).toBeGreaterThan(0)
      expect(await proxyMetrics(proxy)).toMatch(
        /veer_requests_total\{route="shop",version="canary",code="200",grpc_code="NOT_FOUND"\} [1-9]/,
      )
    }
  })
})
