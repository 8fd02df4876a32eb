/**
 * `veer control --etcd` on a real one-member etcd: the API behaves as on the state dir (weights,
 * If-Match, a rollout to its end, the audit), nothing acknowledged is lost to kill -9, two controls on
 * one prefix racing on one route give exactly one winner, an unreachable etcd is one line, exit 2, and
 * TLS with a client certificate works.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { makeCa } from '../helpers/certs.ts'
import {
  announced,
  type ControlProcess,
  etcdConfig,
  FakeProxy,
  keepWriting,
  runCli,
  startControl,
  until,
  writeTokenFile,
} from '../helpers/control.ts'
import { type EtcdCluster, startEtcd } from '../helpers/etcd.ts'

let etcd: EtcdCluster
let running: ControlProcess[] = []
let prefixes = 0

beforeAll(async () => {
  etcd = await startEtcd(1)
})
afterAll(async () => {
  await etcd?.close()
})
afterEach(async () => {
  await Promise.all(running.map((c) => c.stop('SIGKILL')))
  running = []
})

/** A prefix of its own for each test: the cluster is shared. */
const freshPrefix = () => `/t${++prefixes}/`

async function start(prefix: string, tokenFile = writeTokenFile()): Promise<ControlProcess> {
  const c = await startControl({ etcd: { endpoints: etcd.endpoints, prefix }, tokenFile })
  running.push(c)
  return c
}

const actions = (entries: { action: string }[]) => entries.map((e) => e.action)

describe('control on etcd', () => {
  it('answers as on the state dir: weights, If-Match 412, the audit; the keys are in etcd', async () => {
    const prefix = freshPrefix()
    const control = await start(prefix)
    expect(control.logs.find((l) => l.msg === 'veer control started')?.etcd).toEqual({
      endpoints: [etcd.endpoints],
      prefix,
    })
    await new FakeProxy(control, 'edge-1', [announced('shop', 0)]).register()
    const first = await control.api('GET', '/v1/routes/shop')
    const etag = first.headers.get('etag')!
    const set = await control.api('PUT', '/v1/routes/shop/weights', {
      body: { canary: 25 },
      headers: { 'if-match': etag },
    })
    expect(set.status).toBe(200)
    expect(set.json.weights).toEqual({ stable: 75, canary: 25 })
    const stale = await control.api('PUT', '/v1/routes/shop/weights', {
      body: { canary: 40 },
      headers: { 'if-match': etag },
    })
    expect(stale.status).toBe(412)
    expect(stale.json.error).toBe('version_mismatch')
    const audit = (await control.api('GET', '/v1/audit?route=shop')).json
    expect(actions(audit.entries)).toEqual(['route-register', 'set-weight'])
    // The layout: meta, one key per route, one per audit entry, one per proxy (written once the proxy
    // registered, not before its answer) and the leader's election key.
    const replica = (await control.api('GET', '/v1/control')).json.replica
    const proxyKey = `${prefix}proxies/${replica}/edge-1`
    await until(async () => (await etcd.ctl('get', '--keys-only', proxyKey)) !== '')
    const keys = (await etcd.ctl('get', '--prefix', '--keys-only', prefix))
      .split('\n')
      .filter((l) => l !== '')
    expect(keys).toEqual([
      `${prefix}audit/000000000001`,
      `${prefix}audit/000000000002`,
      expect.stringMatching(new RegExp(`^${prefix}election/control/[0-9a-f]+$`)),
      `${prefix}meta`,
      proxyKey,
      `${prefix}routes/shop`,
    ])
    const meta = JSON.parse(await etcd.ctl('get', '--print-value-only', `${prefix}meta`))
    expect(meta).toEqual({ formatVersion: 1, revision: set.json.revision, seq: 2 })
    const stored = JSON.parse(await etcd.ctl('get', '--print-value-only', `${prefix}routes/shop`))
    expect(stored).toMatchObject({ name: 'shop', canary: 25, version: set.json.version })
    const proxy = JSON.parse(await etcd.ctl('get', '--print-value-only', proxyKey))
    expect(proxy).toMatchObject({ id: 'edge-1', who: 'edge', replica, live: true, appliedRevision: 0 })
    // On this replica's lease: stopped, it takes its proxies' records with it.
    expect(JSON.parse(await etcd.ctl('get', '-w', 'json', proxyKey)).kvs[0].lease).toBeTruthy()
  })

  it('runs a rollout to its end, and the audit has every step once', async () => {
    const control = await start(freshPrefix())
    const proxy = new FakeProxy(control, 'edge-1', [announced('shop', 0)])
    await proxy.register()
    const plan = {
      steps: [
        { weight: 10, pause: '100ms' },
        { weight: 50, pause: '100ms' },
        { weight: 100, pause: '0s' },
      ],
      analysis: { enabled: false },
    }
    const started = await control.api('POST', '/v1/routes/shop/rollout', { body: plan })
    expect(started.status).toBe(200)
    let acked = 0
    const done = await until(async () => {
      const r = (await control.api('GET', '/v1/routes/shop')).json
      if (r.revision > acked) {
        acked = r.revision
        await proxy.ack(r.revision)
      }
      return r.rollout?.phase === 'completed' ? r : null
    }, 20_000)
    expect(done.weights).toEqual({ stable: 0, canary: 100 })
    const audit = (await control.api('GET', '/v1/audit?route=shop')).json.entries
    expect(actions(audit)).toEqual([
      'route-register',
      'rollout-start',
      'rollout-step',
      'rollout-step',
      'rollout-complete',
    ])
    expect(new Set(audit.map((e: { seq: number }) => e.seq)).size).toBe(audit.length)
  })

  it('kill -9 mid-writes, then a restart on the same etcd: every acknowledged write is there', async () => {
    const prefix = freshPrefix()
    const tokens = writeTokenFile()
    const first = await start(prefix, tokens)
    await new FakeProxy(first, 'edge-1', [announced('shop', 0)]).register()
    const writes = keepWriting(first)
    await until(() => writes.acked() >= 20)
    first.child.kill('SIGKILL')
    await first.exited
    const acked = writes.acked()
    await writes.stop()
    const second = await start(prefix, tokens)
    const route = (await second.api('GET', '/v1/routes/shop')).json
    // The write in flight at the kill may or may not have landed; none acknowledged is missing.
    expect(route.version === acked || route.version === acked + 1).toBe(true)
    const audit = (await second.api('GET', '/v1/audit?route=shop&limit=1000')).json.entries
    expect(audit.filter((e: { action: string }) => e.action === 'set-weight').length).toBe(route.version - 1)
    expect(audit.at(-1).to).toMatchObject({ canary: route.weights.canary })
  })

  it('two controls on one prefix racing with one If-Match: exactly one wins, each time', async () => {
    const prefix = freshPrefix()
    const tokens = writeTokenFile()
    const a = await start(prefix, tokens)
    await new FakeProxy(a, 'edge-1', [announced('shop', 0)]).register()
    const b = await start(prefix, tokens)
    for (let round = 1; round <= 10; round++) {
      // Both see the same version first (b follows a's writes on its watch).
      const etag = (await a.api('GET', '/v1/routes/shop')).headers.get('etag')!
      await until(async () => (await b.api('GET', '/v1/routes/shop')).headers.get('etag') === etag)
      const [ra, rb] = await Promise.all(
        [a, b].map((c, i) =>
          c.api('PUT', '/v1/routes/shop/weights', {
            body: { canary: round * 2 + i },
            headers: { 'if-match': etag },
          }),
        ),
      )
      expect([ra!.status, rb!.status].sort()).toEqual([200, 412])
    }
    const route = (await a.api('GET', '/v1/routes/shop')).json
    expect(route.version).toBe(11)
    await until(async () => (await b.api('GET', '/v1/routes/shop')).json.version === 11)
    for (const c of [a, b]) {
      const audit = (await c.api('GET', '/v1/audit?route=shop')).json.entries
      expect(audit.filter((e: { action: string }) => e.action === 'set-weight').length).toBe(10)
    }
  })

  it('a write from etcdctl shows up in the state; a record that is not valid is not taken', async () => {
    const prefix = freshPrefix()
    const control = await start(prefix)
    await new FakeProxy(control, 'edge-1', [announced('shop', 0)]).register()
    const stored = JSON.parse(await etcd.ctl('get', '--print-value-only', `${prefix}routes/shop`))
    await etcd.ctl('put', `${prefix}routes/shop`, JSON.stringify({ ...stored, canary: 7 }))
    await until(async () => (await control.api('GET', '/v1/routes/shop')).json.weights.canary === 7)
    await etcd.ctl('put', `${prefix}routes/shop`, '{"name":"shop"}')
    await control.waitForLog((l) => l.msg === 'etcd: a route record that is not valid; not taken')
    expect((await control.api('GET', '/v1/routes/shop')).json.weights.canary).toBe(7)
    // The key moved past what control took: a write to it fails its compare, nothing is written.
    const r = await control.api('PUT', '/v1/routes/shop/weights', { body: { canary: 9 } })
    expect(r.status).toBe(412)
    expect(await etcd.ctl('get', '--print-value-only', `${prefix}routes/shop`)).toBe('{"name":"shop"}\n')
  })

  it('refuses to start on a prefix whose keys do not pass the schema, naming the key', async () => {
    const prefix = freshPrefix()
    await etcd.ctl('put', `${prefix}meta`, '{"formatVersion":1,"revision":0,"seq":0}')
    await etcd.ctl('put', `${prefix}routes/shop`, '{"name":"shop"}')
    const r = await runCli([
      'control',
      '--listen',
      '127.0.0.1:0',
      '--etcd',
      etcd.endpoints,
      '--config',
      await configWithPrefix(prefix),
      '--token-file',
      writeTokenFile(),
    ])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`${prefix}routes/shop: record.version`)
  })
})

async function configWithPrefix(prefix: string): Promise<string> {
  const { writeFileSync, mkdtempSync } = await import('node:fs')
  const { join } = await import('node:path')
  const { tmpdir } = await import('node:os')
  const file = join(mkdtempSync(join(tmpdir(), 'veer-cfg-')), 'control.yaml')
  writeFileSync(file, `store:\n  etcd:\n    endpoints: ["${etcd.endpoints}"]\n    prefix: ${prefix}\n`)
  return file
}

describe('veer control --etcd: refusals', () => {
  it('an unreachable etcd: one line naming the endpoints, exit 2', async () => {
    const endpoint = `unix://${etcd.dir}/nobody:1`
    const r = await runCli([
      'control',
      '--listen',
      '127.0.0.1:0',
      '--etcd',
      endpoint,
      '--token-file',
      writeTokenFile(),
    ])
    expect(r.code).toBe(2)
    const lines = r.stderr.trim().split('\n')
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(new RegExp(`^veer control: --etcd ${endpoint}: cannot reach etcd`))
  })

  it('--etcd with --state-dir is one line; --import without --etcd too', async () => {
    const both = await runCli(['control', '--etcd', etcd.endpoints, '--state-dir', '/tmp/x'])
    expect(both.code).toBe(2)
    expect(both.stderr.trim()).toBe(
      'veer control: --state-dir and --etcd (store.etcd) are two stores; give one of them',
    )
    const imp = await runCli(['control', '--import', '/tmp/x.json'])
    expect(imp.code).toBe(2)
    expect(imp.stderr.trim()).toBe('veer control: --import writes into etcd; give --etcd URL')
    const bad = await runCli(['control', '--etcd', 'localhost'])
    expect(bad.code).toBe(2)
    expect(bad.stderr.trim()).toMatch(/^veer control: --etcd must be http:\/\/HOST:PORT/)
  })
})

describe('store.etcd.tls', () => {
  it('talks to an etcd that asks for a client certificate; without one it cannot reach it: one line, exit 2', async () => {
    const ca = makeCa()
    const tls = {
      ca,
      server: ca.leaf('server', ['localhost', '127.0.0.1']),
      client: ca.leaf('client', ['veer-control']),
    }
    const secure = await startEtcd(1, tls)
    try {
      const full = { ca: ca.cert, cert: tls.client.cert, key: tls.client.key }
      const control = await startControl({ etcd: { endpoints: secure.endpoints, tls: full } })
      running.push(control)
      await new FakeProxy(control, 'edge-1', [announced('shop', 0)]).register()
      expect((await control.api('PUT', '/v1/routes/shop/weights', { body: { canary: 3 } })).status).toBe(200)
      expect(JSON.parse(await secure.ctl('get', '--print-value-only', '/veer/routes/shop')).canary).toBe(3)
      // No client certificate: etcd refuses the handshake, control says so in one line.
      const config = etcdConfig({ endpoints: secure.endpoints, tls: { ca: ca.cert } })
      const r = await runCli([
        'control',
        '--listen',
        '127.0.0.1:0',
        '--config',
        config,
        '--token-file',
        writeTokenFile(),
      ])
      expect(r.code).toBe(2)
      expect(r.stderr.trim().split('\n')).toHaveLength(1)
      expect(r.stderr).toMatch(/^veer control: --etcd https:\/\/localhost:\d+: cannot reach etcd/)
    } finally {
      await secure.close()
    }
  })
})
