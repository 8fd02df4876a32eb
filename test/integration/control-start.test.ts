/**
 * `veer control` start-up: a bad flag, token file, address or state dir exits 2 with one line and starts
 * nothing; --listen 127.0.0.1:0 logs the real address; repeated auth failures get 429; HTTPS.
 */
import { existsSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { join } from 'node:path'
import { Agent } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import { makeCa } from '../helpers/certs.ts'
import { runCli, startControl, TOKENS, tempDir, writeTokenFile } from '../helpers/control.ts'

let holders: Server[] = []
afterEach(async () => {
  await Promise.all(holders.map((s) => new Promise((r) => s.close(r))))
  holders = []
})

describe('refused start-up', () => {
  const tokens = writeTokenFile()
  const badTokens = join(tempDir(), 'tokens')
  writeFileSync(badTokens, `${TOKENS.operator} operator alice\nsecret-but-short admin eve\n`)
  const ca = makeCa()
  const one = ca.leaf('one', ['127.0.0.1'])
  const other = ca.leaf('other', ['127.0.0.1'])

  const CASES: [string, string[], Record<string, string>, RegExp][] = [
    ['an unknown flag', ['--bogus'], {}, /^veer control: unknown flag --bogus; see veer control --help$/],
    ['a bad --listen', ['--listen', 'nowhere'], {}, /^veer control: --listen must be HOST:PORT/],
    ['no token', [], {}, /^veer control: no token: give --token-file FILE or set VEER_TOKEN/],
    [
      'a missing token file',
      ['--token-file', '/nonexistent/tokens'],
      {},
      /^veer control: --token-file \/nonexistent\/tokens: cannot read it \(ENOENT\)$/,
    ],
    [
      'a bad token line',
      ['--token-file', badTokens],
      {},
      /^veer control: .*tokens line 2: the role \(second field\) must be one of read, operator, proxy$/,
    ],
    [
      'a short VEER_TOKEN',
      [],
      { VEER_TOKEN: 'short' },
      /^veer control: VEER_TOKEN: the token is shorter than 16 characters/,
    ],
    [
      'a bad webhook',
      ['--token-file', tokens, '--webhook', 'ftp://x'],
      {},
      /^veer control: --webhook must be an http:\/\/ or https:\/\/ URL/,
    ],
    [
      'half of TLS',
      ['--token-file', tokens, '--tls-cert', 'c.pem'],
      {},
      /^veer control: --tls-cert and --tls-key go together/,
    ],
    [
      "a TLS key that is not the certificate's",
      ['--token-file', tokens, '--tls-cert', one.cert, '--tls-key', other.key],
      {},
      /^veer control: --tls-cert\/--tls-key \(tls\.key: .*other\.key is not the key of .*one\.crt; give the key/,
    ],
    [
      'a missing TLS certificate',
      ['--token-file', tokens, '--tls-cert', '/nonexistent/c.pem', '--tls-key', one.key],
      {},
      /^veer control: --tls-cert\/--tls-key \(tls\.cert: cannot read \/nonexistent\/c\.pem \(no such file\)\)$/,
    ],
    [
      'a bad env knob',
      ['--token-file', tokens],
      { VEER_CONTROL_WATCH_MS: 'soon' },
      /^veer control: VEER_CONTROL_WATCH_MS must be a whole number/,
    ],
  ]
  for (const [what, args, env, message] of CASES) {
    it(`${what}: exit 2, one line, no state dir created`, async () => {
      const dir = join(tempDir(), 'state')
      const r = await runCli(['control', '--listen', '127.0.0.1:0', '--state-dir', dir, ...args], env)
      expect(r.code).toBe(2)
      expect(r.stderr.trim().split('\n')).toHaveLength(1)
      expect(r.stderr.trim()).toMatch(message)
      expect(r.stderr).not.toContain('secret-but-short')
      expect(r.stdout).toBe('')
      expect(existsSync(dir)).toBe(false)
    })
  }

  it('an address in use: exit 2 naming --listen, and the state dir lock is released', async () => {
    const holder = createServer()
    holders.push(holder)
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r))
    const port = (holder.address() as { port: number }).port
    const dir = tempDir()
    const r = await runCli([
      'control',
      '--listen',
      `127.0.0.1:${port}`,
      '--state-dir',
      dir,
      '--token-file',
      tokens,
    ])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(
      /^veer control: --listen: cannot listen on 127\.0\.0\.1:\d+ \(EADDRINUSE\); pick a free address\n$/,
    )
    expect(existsSync(join(dir, 'control.lock'))).toBe(false)
  })

  it('a state dir of an unknown format: exit 2 with one clear line', async () => {
    const dir = tempDir()
    writeFileSync(join(dir, 'state.json'), JSON.stringify({ formatVersion: 99, revision: 3, routes: {} }))
    const r = await runCli(['control', '--listen', '127.0.0.1:0', '--state-dir', dir, '--token-file', tokens])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(
      /^veer control: .*state\.json: state format 99 is not one this veer reads \(format 1\); run the veer version that wrote it, or move the state dir away to start empty\n$/,
    )
  })

  it('a state dir in use by a running control: exit 2', async () => {
    const first = await startControl()
    try {
      const r = await runCli([
        'control',
        '--listen',
        '127.0.0.1:0',
        '--state-dir',
        first.stateDir,
        '--token-file',
        tokens,
      ])
      expect(r.code).toBe(2)
      expect(r.stderr).toMatch(/another veer control \(pid \d+\) is using it/)
    } finally {
      expect(await first.stop()).toBe(0)
    }
  })

  it('--help prints usage and exits 0', async () => {
    const r = await runCli(['control', '--help'])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^Usage: veer control/)
  })
})

describe('running', () => {
  it('--listen 127.0.0.1:0 logs the real address; a config file gives the settings flags do not', async () => {
    const dir = tempDir()
    const config = join(dir, 'control.yaml')
    writeFileSync(config, `stateDir: ${join(dir, 'from-file')}\nlog: { level: info }\n`)
    const c = await startControl({ stateDir: join(dir, 'ignored-by-flag'), args: ['--config', config] })
    try {
      const started = await c.waitForLog((l) => l.msg === 'veer control started')
      expect(started.listen).toMatch(/^127\.0\.0\.1:[1-9]\d*$/)
      expect(started.stateDir).toBe(join(dir, 'ignored-by-flag'))
      expect((await c.api('GET', '/healthz', { token: null })).status).toBe(200)
      expect(JSON.stringify(c.logs)).not.toContain(TOKENS.operator)
    } finally {
      expect(await c.stop()).toBe(0)
    }
  })

  it("starts with VEER_TOKEN exported for the CLI when the token file lists it: the file's line holds", async () => {
    const c = await startControl({ env: { VEER_TOKEN: TOKENS.operator } })
    try {
      const note = await c.waitForLog((l) => l.msg === 'token sources overlap')
      expect(note.note).toBe(
        `VEER_TOKEN is also listed in ${c.tokenFile}; the file's line holds (role operator, name alice)`,
      )
      expect(JSON.stringify(c.logs)).not.toContain(TOKENS.operator)
      const r = await c.api('PUT', '/v1/routes/none/weights', { body: { canary: 1 } })
      expect(r.status).toBe(404) // authenticated as alice, the route is unknown
      const denied = await c.api('GET', '/v1/audit?limit=5', { token: TOKENS.operator })
      expect(denied.status).toBe(200)
    } finally {
      expect(await c.stop()).toBe(0)
    }
  })

  it('repeated auth failures from one address get 429 with Retry-After; a valid token still passes', async () => {
    const c = await startControl({
      env: { VEER_CONTROL_AUTH_BURST: '3', VEER_CONTROL_AUTH_REFILL_MS: '60000' },
    })
    try {
      for (let i = 0; i < 3; i++)
        expect((await c.api('GET', '/v1/routes', { token: `wrong-token-number-${i}` })).status).toBe(401)
      const blocked = await c.api('GET', '/v1/routes', { token: 'wrong-token-number-3' })
      expect(blocked.status).toBe(429)
      expect(blocked.json.error).toBe('too_many_auth_failures')
      expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0)
      // An operator on the same address (a proxy retrying with a stale token beside it) is not locked out.
      expect((await c.api('GET', '/v1/routes')).status).toBe(200)
      expect((await c.api('GET', '/healthz', { token: null })).status).toBe(200)
      const warned = c.logs.filter((l) => l.msg === 'unauthenticated request refused')
      expect(warned).toHaveLength(3)
      expect(JSON.stringify(warned)).not.toContain('wrong-token-number')
    } finally {
      expect(await c.stop()).toBe(0)
    }
  })

  it('serves HTTPS with --tls-cert and --tls-key', async () => {
    const ca = makeCa()
    const { cert, key } = ca.leaf('control', ['127.0.0.1'])
    const c = await startControl({ args: ['--tls-cert', cert, '--tls-key', key] })
    try {
      expect(c.url).toMatch(/^https:/)
      const dispatcher = new Agent({ connect: { ca: ca.certText } })
      const { request } = await import('undici')
      const r = await request(`${c.url}/v1/routes`, {
        dispatcher,
        headers: { authorization: `Bearer ${TOKENS.read}` },
      })
      expect(r.statusCode).toBe(200)
      expect(await r.body.json()).toEqual({ revision: 0, routes: [] })
      await dispatcher.close()
    } finally {
      expect(await c.stop()).toBe(0)
    }
  })
})
