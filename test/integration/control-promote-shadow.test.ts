/**
 * `veer promote-shadow ROUTE --plan FILE` with a real `veer control`, a real `veer proxy --control` and
 * real stable and shadow upstreams: the proxy's file has no canary, only a shadow; after the promotion
 * the shadow serves the canary's share (`x-veer-version: canary`), nothing is mirrored any more, and the
 * change is audited. Refusals (no shadow, a rollout running, no plan) change nothing. The registration
 * rule of the flag is played with a fake proxy over the wire protocol.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { AnnouncedRoute } from '../../config/wire.ts'
import {
  type ControlProcess,
  FakeProxy,
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
let dir: string
let planFile: string

const PLAN = { steps: [{ weight: 50, pause: '1h' }], analysis: { enabled: false } }

beforeAll(async () => {
  stable = await startUpstream('stable')
  shadow = await startUpstream('shadow')
  dir = tempDir()
  const tokenFile = join(dir, 'proxy-token')
  writeFileSync(tokenFile, `${TOKENS.proxy}\n`)
  planFile = join(dir, 'plan.json')
  writeFileSync(planFile, JSON.stringify(PLAN))
  control = await startControl()
  const file = writeConfig({
    log: { access: false },
    routes: [
      {
        name: 'default',
        stable: { url: stable.url, release: 'v1' },
        shadow: { url: shadow.url, release: 'v2', percent: 100 },
      },
      { name: 'plain', match: { pathPrefix: '/plain' }, stable: { url: stable.url, release: 'v1' } },
    ],
  })
  proxy = await startLinkedProxy(file, control, tokenFile)
  // The proxy is listed a moment before its routes are committed: wait for them, then for its ack.
  await until(async () => (await control.api('GET', '/v1/routes/plain')).status === 200, 20_000)
  await synced()
})

afterAll(async () => {
  await proxy?.stop('SIGKILL')
  await control?.stop()
  await Promise.all([stable?.close(), shadow?.close()])
})

/** Until the real proxy is live and has acked control's current revision. */
async function synced(): Promise<void> {
  const revision = (await control.api('GET', '/v1/routes')).json.revision
  await until(async () => {
    const list = (await control.api('GET', '/v1/proxies')).json.proxies
    const p = list.find((x: { id: string }) => !x.id.startsWith('fake-'))
    return p?.live && p.appliedRevision >= revision && p.lastError === null
  }, 20_000)
}

/** Send `n` requests to the default route: which version and which upstream answered each. */
async function send(n: number): Promise<{ stable: number; canary: number; fromShadow: number }> {
  const out = { stable: 0, canary: 0, fromShadow: 0 }
  for (let i = 0; i < n; i++) {
    const res = await fetch(`${proxy.url}/item/${i}`)
    expect(res.status).toBe(200)
    const version = res.headers.get('x-veer-version')
    const upstream = res.headers.get('x-upstream')
    await res.text()
    if (version === 'canary') {
      out.canary++
      expect(upstream).toBe('shadow')
    } else {
      expect([version, upstream]).toEqual(['stable', 'stable'])
      out.stable++
    }
    if (upstream === 'shadow') out.fromShadow++
  }
  return out
}

const cli = (...args: string[]) =>
  runCli([...args, '--control', control.url], { VEER_TOKEN: TOKENS.operator })

const route = async (name = 'default') => (await control.api('GET', `/v1/routes/${name}`)).json

/** What must not move when a call is refused: the revision, the route's version, the audit total. */
async function snapshot(name = 'default') {
  const r = await route(name)
  return {
    revision: (await control.api('GET', '/v1/routes')).json.revision,
    version: r.version,
    weights: r.weights,
    canary: r.canary,
    shadow: r.shadow,
    canaryFromShadow: r.canaryFromShadow,
    audited: (await control.api('GET', '/v1/audit')).json.total,
  }
}

type Refusal = { status: number; json: { error: string; message: string } }

describe('veer promote-shadow', () => {
  it('before: the route has a shadow that gets every request mirrored, and no canary', async () => {
    expect(await route()).toMatchObject({
      canary: null,
      canaryFromShadow: false,
      shadow: { url: shadow.url, release: 'v2', percent: null },
      weights: { canary: 0 },
    })
    const before = shadow.seen.length
    const got = await send(5)
    expect(got).toEqual({ stable: 5, canary: 0, fromShadow: 0 })
    await until(() => shadow.seen.length >= before + 5)
  })

  it('refuses a route without a shadow, an unknown route, no plan and bad plans; nothing changes', async () => {
    const before = await snapshot()
    const beforePlain = await snapshot('plain')
    const post = (path: string, body: unknown, token?: string) =>
      control.api('POST', path, { body, token }) as Promise<Refusal>
    const refusals: [Promise<Refusal>, number, string, RegExp][] = [
      [post('/v1/routes/plain/promote-shadow', PLAN), 409, 'no_shadow', /route plain has no shadow upstream/],
      [post('/v1/routes/nope/promote-shadow', PLAN), 404, 'unknown_route', /no route named "nope"/],
      [post('/v1/routes/default/promote-shadow', undefined), 400, 'invalid_plan', /send a rollout plan/],
      [post('/v1/routes/default/promote-shadow', { steps: [] }), 400, 'invalid_plan', /at least one step/],
      [
        post('/v1/routes/default/promote-shadow', { steps: [{ weight: 5 }], bogus: 1 }),
        400,
        'invalid_plan',
        /bogus/,
      ],
      [
        post('/v1/routes/default/promote-shadow', { steps: [{ weight: 10 }], smoke: { url: proxy.url } }),
        400,
        'invalid_plan',
        /starts at weight 0/,
      ],
    ]
    for (const [call, status, code, message] of refusals) {
      const r = await call
      expect([r.status, r.json.error]).toEqual([status, code])
      expect(r.json.message).toMatch(message)
    }
    const raw = await control.api('POST', '/v1/routes/default/promote-shadow', {
      raw: '{"steps": [',
      headers: { 'content-type': 'application/json' },
    })
    expect([raw.status, raw.json.error]).toEqual([400, 'malformed_json'])
    const denied = await post('/v1/routes/default/promote-shadow', PLAN, TOKENS.read)
    expect([denied.status, denied.json.error]).toEqual([403, 'forbidden'])

    const plain = await cli('promote-shadow', 'plain', '--plan', planFile)
    expect(plain.code).toBe(1)
    expect(plain.stderr).toMatch(/^veer promote-shadow: route plain has no shadow upstream.*\(no_shadow\)\n$/)
    for (const args of [
      ['promote-shadow', 'default'],
      ['promote-shadow', 'default', '--plan', join(dir, 'missing.json')],
      ['promote-shadow', '--plan', planFile],
      ['promote-shadow', 'default', '--plan', planFile, '--full'],
    ]) {
      const r = await cli(...args)
      expect(r.code).toBe(2)
      expect(r.stderr).toMatch(/^veer promote-shadow: /)
    }

    // Only the denied attempt is audited.
    expect(await snapshot()).toEqual({ ...before, audited: before.audited + 1 })
    expect(await snapshot('plain')).toEqual({ ...beforePlain, audited: before.audited + 1 })
    const seen = shadow.seen.length
    expect((await send(5)).canary).toBe(0)
    await until(() => shadow.seen.length >= seen + 5)
  })

  it('--help describes it', async () => {
    const r = await runCli(['promote-shadow', '--help'])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^Usage: veer promote-shadow ROUTE --plan FILE \[--reason TEXT\]\n/)
    expect((await runCli(['--help'])).stdout).toMatch(/promote-shadow/)
  })

  it('makes the shadow the canary at the plan weight, stops mirroring, and audits it', async () => {
    const before = await snapshot()
    const r = await cli('promote-shadow', 'default', '--plan', planFile, '--reason', 'ship the dark launch')
    expect(r).toMatchObject({ code: 0, stderr: '' })
    expect(r.stdout).toMatch(
      /^default: canary 50% \(stable 50%\), canary from shadow v2, step 1\/1 [a-z-]+.*, version \d+\n$/,
    )
    const after = await route()
    expect(after).toMatchObject({
      weights: { stable: 50, canary: 50 },
      canary: { url: shadow.url, release: 'v2' },
      canaryFromShadow: true,
      shadow: { url: shadow.url, release: 'v2', percent: 0 },
      rollout: {
        phase: 'progressing',
        step: 1,
        steps: 1,
        stepWeight: 50,
        plan: { analysis: { enabled: false } },
      },
    })
    // One revision: the proxies never saw the promotion without step 1.
    expect((await control.api('GET', '/v1/routes')).json.revision).toBe(before.revision + 1)
    expect(after.version).toBe(before.version + 2)

    await synced()
    const config = (await (await fetch(`${proxy.adminUrl}/v1/config`)).json()) as {
      routes: { name: string; weights: unknown; canary: unknown; shadow: { percent: number } }[]
    }
    expect(config.routes.find((x) => x.name === 'default')).toMatchObject({
      weights: { stable: 50, canary: 50 },
      canary: { url: shadow.url, release: 'v2' },
      shadow: { url: shadow.url, percent: 0 },
    })

    // The copies of requests from before the change have ended: what the shadow saw of them is in.
    const { sent } = await settled(proxy)
    expect(sent).toBeGreaterThan(0)
    const seen = shadow.seen.length
    const got = await send(200)
    expect(got.canary).toBeGreaterThanOrEqual(80)
    expect(got.canary).toBeLessThanOrEqual(120)
    expect(got.fromShadow).toBe(got.canary)
    // A copy goes out before its primary's answer comes back: with the 200 answers in, none went, and
    // every request the shadow got was a canary request.
    expect(await settled(proxy)).toMatchObject({ sent, dropped: 0 })
    expect(shadow.seen.length - seen).toBe(got.canary)
    expect(shadow.seen.slice(seen).some((req) => req.headers['x-veer-shadow'] !== undefined)).toBe(false)

    const audit = (await control.api('GET', '/v1/audit?route=default')).json.entries
    const revision = before.revision + 1
    expect(audit.slice(-2)).toMatchObject([
      {
        who: 'alice',
        role: 'operator',
        action: 'promote-shadow',
        from: {
          canary: 0,
          shadow: null,
          canaryUpstream: null,
          shadowUpstream: { url: shadow.url, release: 'v2' },
          canaryFromShadow: false,
        },
        to: {
          canary: 0,
          shadow: 0,
          canaryUpstream: { url: shadow.url, release: 'v2' },
          canaryFromShadow: true,
        },
        why: 'ship the dark launch',
        revision,
      },
      {
        who: 'alice',
        action: 'rollout-start',
        from: { canary: 0 },
        to: { canary: 50, step: 1, steps: 1 },
        why: 'ship the dark launch',
        revision,
      },
    ])
  })

  it('refuses a second promotion (409 rollout_active) and a shadow percent; nothing changes', async () => {
    const before = await snapshot()
    const again = (await control.api('POST', '/v1/routes/default/promote-shadow', { body: PLAN })) as Refusal
    expect([again.status, again.json.error]).toEqual([409, 'rollout_active'])
    expect(again.json.message).toMatch(/already has a rollout in progress/)
    const viaCli = await cli('promote-shadow', 'default', '--plan', planFile)
    expect(viaCli.code).toBe(1)
    expect(viaCli.stderr).toMatch(/\(rollout_active\)\n$/)
    const percent = (await control.api('PUT', '/v1/routes/default/shadow', {
      body: { percent: 10 },
    })) as Refusal
    expect([percent.status, percent.json.error]).toEqual([409, 'no_shadow'])
    expect(percent.json.message).toMatch(/serves as its canary since promote-shadow/)
    expect(await snapshot()).toEqual(before)
    expect((await route()).rollout).toMatchObject({ phase: 'progressing', step: 1 })
  })

  it('abort: canary 0, the shadow stays the canary (at 0) and is still not mirrored', async () => {
    const r = await cli('abort', 'default', '--reason', 'enough')
    expect(r.code).toBe(0)
    expect(await route()).toMatchObject({
      weights: { canary: 0 },
      canaryFromShadow: true,
      canary: { url: shadow.url, release: 'v2' },
      rollout: { phase: 'aborted' },
    })
    await synced()
    const { sent } = await settled(proxy)
    expect(sent).toBeGreaterThan(0)
    const seen = shadow.seen.length
    expect(await send(20)).toEqual({ stable: 20, canary: 0, fromShadow: 0 })
    expect(await settled(proxy)).toMatchObject({ sent, dropped: 0 })
    expect(shadow.seen.length).toBe(seen)
  })
})

describe('the flag across registrations (a fake proxy)', () => {
  const S = { url: 'http://127.0.0.1:3003', release: 'v3' }
  const C = { url: 'http://127.0.0.1:3002', release: 'v2' }
  const announce = (
    shadow: AnnouncedRoute['shadow'],
    canary: AnnouncedRoute['canary'] = C,
  ): AnnouncedRoute => ({
    name: 'fp',
    stable: { url: 'http://127.0.0.1:3001', release: 'v1' },
    canary,
    shadow,
    canaryWeight: 0,
  })

  it('stays while the same shadow is announced, and ends with another shadow or none', async () => {
    const fake = new FakeProxy(control, 'fake-1', [announce(S)])
    const first = await fake.register()
    expect(first.routes.fp).toEqual({
      version: 1,
      pair: { stable: { url: 'http://127.0.0.1:3001', release: 'v1' }, canary: C },
      canary: 0,
    })
    const promoted = await control.api('POST', '/v1/routes/fp/promote-shadow', {
      body: { steps: [{ weight: 0 }] },
    })
    expect(promoted.status).toBe(200)
    expect(promoted.json).toMatchObject({ canary: S, canaryFromShadow: true })
    const watched = await fake.watch(first.revision)
    expect(watched!.routes.fp).toMatchObject({ canary: 0, shadow: 0, canaryFromShadow: true })

    // Same shadow again (the file's canary C is still there): the canary stays the shadow.
    const same = await fake.register()
    expect(same.routes.fp).toMatchObject({ canaryFromShadow: true })
    expect(await route('fp')).toMatchObject({ canary: S, canaryFromShadow: true })

    // A registration with no shadow and the file's canary C: the proxies serve C again, another release
    // than the promoted S, so it is a release change (C starts at the file's weight), and the flag ends.
    fake.routes = [announce(null)]
    const none = await fake.register()
    expect(Object.hasOwn(none.routes.fp!, 'canaryFromShadow')).toBe(false)
    expect(none.routes.fp!.pair.canary).toEqual(C)
    expect(await route('fp')).toMatchObject({ canary: C, canaryFromShadow: false, shadow: null })
    const last = (await control.api('GET', '/v1/audit?route=fp&limit=100')).json.entries.at(-1)
    expect(last).toMatchObject({ action: 'release-change', proxy: 'fake-1' })

    // A new shadow release after that is a release to mirror, not the promoted one.
    fake.routes = [announce({ url: S.url, release: 'v4' })]
    const next = await fake.register()
    expect(Object.hasOwn(next.routes.fp!, 'canaryFromShadow')).toBe(false)
    expect(await route('fp')).toMatchObject({ canary: C, canaryFromShadow: false })
  })

  it('ending it is a versioned, audited change, and aborts a rollout of the promoted shadow', async () => {
    const fake = new FakeProxy(control, 'fake-3', [{ ...announce(S, C), name: 'fr' }])
    await fake.register()
    const promoted = await control.api('POST', '/v1/routes/fr/promote-shadow', {
      body: { steps: [{ weight: 10, pause: '1h' }] },
    })
    expect(promoted.status).toBe(200)
    const before = await route('fr')
    expect(before.rollout.phase).not.toMatch(/aborted|completed/)
    fake.routes = [{ ...announce({ url: S.url, release: 'v6' }, C), name: 'fr' }]
    await fake.register()
    const after = await route('fr')
    expect(after).toMatchObject({ canary: C, canaryFromShadow: false, weights: { canary: 0 } })
    expect(after.version).toBeGreaterThan(before.version)
    expect(after.rollout.phase).toBe('aborted')
    const entries = (await control.api('GET', '/v1/audit?route=fr&limit=100')).json.entries as {
      action: string
      who: string
      why: string
    }[]
    // The proxies serve C again, not the promoted S: a release change, and the rollout of S is aborted
    // first (its own entry, saying why).
    expect(entries.slice(-2).map((e) => e.action)).toEqual(['rollout-abort', 'release-change'])
    expect(entries.at(-2)).toMatchObject({ why: expect.stringMatching(/^release changed \(/) })
    expect(entries.at(-1)).toMatchObject({ who: expect.any(String), why: expect.stringMatching(/fake-3/) })
  })

  it('ends without a release change when the config names the promoted release as its canary', async () => {
    const fake = new FakeProxy(control, 'fake-4', [{ ...announce(S, C), name: 'fs' }])
    await fake.register()
    const promoted = await control.api('POST', '/v1/routes/fs/promote-shadow', {
      body: { steps: [{ weight: 30 }] },
    })
    expect(promoted.status).toBe(200)
    const before = await route('fs')
    // The file now names S as its canary, and mirrors nothing: the same pair is served, at the same weight.
    fake.routes = [{ ...announce(null, S), name: 'fs' }]
    const reg = await fake.register()
    expect(reg.routes.fs).not.toHaveProperty('canaryFromShadow')
    expect(reg.routes.fs!.pair.canary).toEqual(S)
    const after = await route('fs')
    expect(after).toMatchObject({ canary: S, canaryFromShadow: false, weights: before.weights })
    expect(after.version).toBeGreaterThan(before.version)
    const entries = (await control.api('GET', '/v1/audit?route=fs&limit=100')).json.entries as {
      action: string
      why: string
    }[]
    expect(entries.at(-1)).toMatchObject({
      action: 'canary-from-shadow-end',
      why: expect.stringMatching(/fake-4 announced no shadow/),
    })
    expect(entries.some((e) => e.action === 'release-change')).toBe(false)
  })

  it('ends when a registration announces a different shadow release', async () => {
    const fake = new FakeProxy(control, 'fake-2', [{ ...announce(S, null), name: 'fq' }])
    await fake.register()
    const promoted = await control.api('POST', '/v1/routes/fq/promote-shadow', {
      body: { steps: [{ weight: 0 }] },
    })
    expect(promoted.json).toMatchObject({ canary: S, canaryFromShadow: true })
    fake.routes = [{ ...announce({ url: S.url, release: 'v5' }, null), name: 'fq' }]
    const reg = await fake.register()
    expect(reg.routes.fq).not.toHaveProperty('canaryFromShadow')
    expect(await route('fq')).toMatchObject({
      canary: null,
      canaryFromShadow: false,
      shadow: { url: S.url, release: 'v5' },
    })
  })
})
