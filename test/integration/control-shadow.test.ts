/**
 * Shadow percent through control, with a real `veer control`, a real `veer proxy --control` and real
 * stable and shadow upstreams: `veer shadow ROUTE --percent 0` stops the mirroring once the proxy acked
 * the revision, `--percent 100` resumes it; each change is audited; bad input changes nothing.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type ControlProcess,
  runCli,
  startControl,
  startLinkedProxy,
  TOKENS,
  tempDir,
  until,
} from '../helpers/control.ts'
import { settled } from '../helpers/shadow.ts'
import { startUpstream, type Upstream } from '../helpers/upstream.ts'
import { type VeerProcess, writeConfig } from '../helpers/veer.ts'

let control: ControlProcess
let stable: Upstream
let shadow: Upstream
let proxy: VeerProcess

beforeAll(async () => {
  stable = await startUpstream('stable')
  shadow = await startUpstream('shadow')
  const tokenFile = join(tempDir(), 'proxy-token')
  writeFileSync(tokenFile, `${TOKENS.proxy}\n`)
  control = await startControl()
  const file = writeConfig({
    log: { access: false },
    routes: [
      {
        name: 'shop',
        match: { pathPrefix: '/shop' },
        stable: { url: stable.url, release: 'v1' },
        shadow: { url: shadow.url, release: 'v2', percent: 100 },
      },
      { name: 'plain', stable: { url: stable.url, release: 'v1' } },
    ],
  })
  proxy = await startLinkedProxy(file, control, tokenFile)
  await synced()
})

afterAll(async () => {
  await proxy?.stop('SIGKILL')
  await control?.stop()
  await Promise.all([stable?.close(), shadow?.close()])
})

/** Until the proxy is live and has acked control's current revision. */
async function synced(): Promise<void> {
  // The proxy is listed a moment before its routes are committed: wait for them first.
  await until(async () => (await control.api('GET', '/v1/routes/shop')).status === 200)
  const revision = (await control.api('GET', '/v1/routes')).json.revision
  await until(async () => {
    const list = (await control.api('GET', '/v1/proxies')).json.proxies
    return (
      list.length === 1 && list[0].live && list[0].appliedRevision >= revision && list[0].lastError === null
    )
  }, 20_000)
}

async function send(n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const res = await fetch(`${proxy.url}/shop/${i}`)
    expect(res.status).toBe(200)
    await res.text()
  }
}

const cli = (...args: string[]) =>
  runCli(['shadow', ...args, '--control', control.url], { VEER_TOKEN: TOKENS.operator })

const route = async (name = 'shop') => (await control.api('GET', `/v1/routes/${name}`)).json

describe('shadow percent through control', () => {
  it('shows the announced shadow, its percent null until set', async () => {
    expect((await route()).shadow).toEqual({ url: shadow.url, release: 'v2', percent: null })
    expect((await route('plain')).shadow).toBeNull()
    const before = shadow.seen.length
    await send(5)
    await until(() => shadow.seen.length >= before + 5)
  })

  it('veer shadow --percent 0 stops mirroring once the proxy acked; --percent 100 resumes it', async () => {
    const off = await cli('shop', '--percent', '0', '--reason', 'stop the dark launch')
    expect(off).toMatchObject({ code: 0, stderr: '' })
    expect(off.stdout).toMatch(/^shop: canary 0% \(stable 100%\), shadow 0%, version \d+\n$/)
    expect((await route()).shadow.percent).toBe(0)
    await synced()
    // The copies of requests from before the change have ended: what the shadow saw of them is in.
    const { sent } = await settled(proxy, 10_000, 'shop')
    expect(sent).toBeGreaterThanOrEqual(5)
    const stopped = shadow.seen.length
    await send(20)
    // A copy goes out before its primary's answer comes back: with the 20 answers in, none went.
    expect(await settled(proxy, 10_000, 'shop')).toMatchObject({ sent, dropped: 0 })
    expect(shadow.seen.length).toBe(stopped)

    const on = await cli('shop', '--percent', '100', '--output', 'json')
    expect(on.code).toBe(0)
    expect(JSON.parse(on.stdout).shadow).toEqual({ url: shadow.url, release: 'v2', percent: 100 })
    await synced()
    await send(10)
    await until(() => shadow.seen.length >= stopped + 10)

    const audit = (await control.api('GET', '/v1/audit?route=shop')).json.entries
    const changes = audit.filter((e: { action: string }) => e.action === 'set-shadow')
    expect(changes).toMatchObject([
      {
        who: 'alice',
        role: 'operator',
        from: { shadow: null },
        to: { shadow: 0 },
        why: 'stop the dark launch',
      },
      { who: 'alice', role: 'operator', from: { shadow: 0 }, to: { shadow: 100 }, why: null },
    ])
  })

  it('refuses bad input with a JSON error and changes nothing', async () => {
    const before = await route()
    const revision = (await control.api('GET', '/v1/routes')).json.revision
    const audited = (await control.api('GET', '/v1/audit')).json.total
    const put = (
      path: string,
      body: unknown,
      opts: { token?: string; headers?: Record<string, string> } = {},
    ) => control.api('PUT', path, { body, ...opts })
    const refusals: [Promise<{ status: number; json: { error: string } }>, number, string][] = [
      [put('/v1/routes/shop/shadow', { percent: 101 }), 400, 'invalid_body'],
      [put('/v1/routes/shop/shadow', { percent: -1 }), 400, 'invalid_body'],
      [put('/v1/routes/shop/shadow', { percent: '5' }), 400, 'invalid_body'],
      [put('/v1/routes/shop/shadow', { percent: 5, canary: 1 }), 400, 'invalid_body'],
      [put('/v1/routes/shop/shadow', {}), 400, 'invalid_body'],
      [put('/v1/routes/nope/shadow', { percent: 5 }), 404, 'unknown_route'],
      [put('/v1/routes/plain/shadow', { percent: 5 }), 409, 'no_shadow'],
      [
        put('/v1/routes/shop/shadow', { percent: 5 }, { headers: { 'if-match': '"1"' } }),
        412,
        'version_mismatch',
      ],
    ]
    for (const [call, status, code] of refusals) {
      const r = await call
      expect([r.status, r.json.error]).toEqual([status, code])
    }
    const noShadow = await put('/v1/routes/plain/shadow', { percent: 5 })
    expect(noShadow.json.message).toMatch(/route plain has no shadow upstream; add shadow\.url/)
    // Reading is not operating: 403, and only the denied attempt is audited.
    const denied = await put('/v1/routes/shop/shadow', { percent: 5 }, { token: TOKENS.read })
    expect([denied.status, denied.json.error]).toEqual([403, 'forbidden'])

    const unknown = await cli('nope', '--percent', '5')
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toMatch(/^veer shadow: no route named "nope".*\(unknown_route\)\n$/)
    for (const args of [['shop', '--percent', '101'], ['shop', '--percent', 'x'], ['shop'], ['shop', '5']]) {
      const r = await cli(...args)
      expect(r.code).toBe(2)
      expect(r.stderr).toMatch(/^veer shadow: /)
    }

    expect(await route()).toMatchObject({ version: before.version, shadow: { percent: 100 } })
    expect((await control.api('GET', '/v1/routes')).json.revision).toBe(revision)
    const after = (await control.api('GET', '/v1/audit?limit=10')).json
    expect(after.total).toBe(audited + 1)
    expect(after.entries.at(-1)).toMatchObject({ action: 'denied', who: 'dashboard' })
    // The proxy still mirrors everything.
    const seen = shadow.seen.length
    await send(5)
    await until(() => shadow.seen.length >= seen + 5)
  })
})
