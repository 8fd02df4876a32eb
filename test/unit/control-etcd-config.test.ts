import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { loadControlConfig, validateControlConfig } from '../../config/control-config.ts'
import { ControlUsageError, parseControlArgs } from '../../control/args.ts'
import { tempDir } from '../helpers/control.ts'

const issues = (raw: unknown) => {
  const r = validateControlConfig(raw)
  return r.ok ? [] : r.issues.map((i) => `${i.path} ${i.message}`)
}

describe('store.etcd in the control config', () => {
  it('defaults: no etcd; with endpoints the prefix is /veer/ and TLS none', () => {
    const none = validateControlConfig({})
    expect(none.ok && none.config.store).toEqual({ etcd: null })
    const some = validateControlConfig({ store: { etcd: { endpoints: ['http://10.0.0.1:2379'] } } })
    expect(some.ok && some.config.store.etcd).toEqual({
      endpoints: ['http://10.0.0.1:2379'],
      prefix: '/veer/',
      leaseTtl: 5,
      tls: null,
    })
  })

  it('names the field and the fix', () => {
    expect(issues({ store: { etcd: { endpoints: [] } } })).toEqual([
      'store.etcd.endpoints must have at least 1 item(s)',
    ])
    expect(issues({ store: { etcd: { endpoints: ['etcd:2379', 'unix://rel'] } } })).toEqual([
      'store.etcd.endpoints[0] must be http://HOST:PORT, https://HOST:PORT or unix:///PATH (got "etcd:2379")',
      'store.etcd.endpoints[1] must be http://HOST:PORT, https://HOST:PORT or unix:///PATH (got "unix://rel")',
    ])
    expect(issues({ store: { etcd: { endpoints: ['http://a:1'], prefix: 'veer' } } })).toEqual([
      'store.etcd.prefix must start and end with / and have no spaces, such as /veer/ (got "veer")',
    ])
    expect(issues({ store: { etcd: { endpoints: ['http://a:1'], tls: { cert: 'c.pem' } } } })).toEqual([
      'store.etcd.tls cert and key go together; give both or neither',
      'store.etcd.tls needs https:// endpoints',
    ])
    expect(
      issues({ store: { etcd: { endpoints: ['http://a:1'], leaseTtl: 0, advertise: 'c1:9900' } } }),
    ).toEqual([
      'store.etcd.leaseTtl must be a whole number from 1 to 60 (got 0)',
      'store.etcd.advertise must be an http:// or https:// URL such as http://10.0.0.5:9900 (got "c1:9900")',
    ])
    // Listening on any address, the replica's own address must be said; an unspecified one is no one's.
    expect(issues({ listen: '0.0.0.0:9900', store: { etcd: { endpoints: ['http://a:1'] } } })).toEqual([
      'store.etcd.advertise must be given when listen is 0.0.0.0 (any address): the URL the other replicas reach this one at, such as https://veer-control-0.veer-control:9900',
    ])
    expect(
      issues({ store: { etcd: { endpoints: ['http://a:1'], advertise: 'http://0.0.0.0:9900' } } }),
    ).toEqual([
      'store.etcd.advertise names no one replica (http://0.0.0.0:9900); give the address the other replicas reach this one at',
    ])
    expect(
      issues({
        listen: '0.0.0.0:9900',
        store: { etcd: { endpoints: ['http://a:1'], advertise: 'https://c-0.c:9900' } },
      }),
    ).toEqual([])
    expect(issues({ listen: '0.0.0.0:9900' })).toEqual([])
    expect(issues({ stateDir: '/x', store: { etcd: { endpoints: ['http://a:1'] } } })).toEqual([
      'stateDir and --etcd (store.etcd) are two stores; give one of them',
    ])
  })

  it('--etcd gives the endpoints; the file keeps its prefix and TLS', async () => {
    const file = join(tempDir(), 'control.yaml')
    writeFileSync(
      file,
      'store:\n  etcd:\n    endpoints: [https://old:2379]\n    prefix: /mine/\n    tls: { ca: ca.pem }\n',
    )
    const r = await loadControlConfig(file, { store: { etcd: { endpoints: ['https://new:2379'] } } })
    expect(r.ok && r.config.store.etcd).toEqual({
      endpoints: ['https://new:2379'],
      prefix: '/mine/',
      leaseTtl: 5,
      tls: { ca: 'ca.pem' },
    })
  })
})

describe('veer control --advertise', () => {
  const env = { VEER_TOKEN: 'op-token-0123456789abcdef' }
  const parse = async (argv: string[]) => {
    const r = await parseControlArgs(argv, env)
    if (r === 'help') throw new Error('help')
    return r.config.store.etcd
  }
  const refusal = (argv: string[]) =>
    parseControlArgs(argv, env).then(
      () => 'started',
      (err: Error) => (err instanceof ControlUsageError ? err.message : `not a usage error: ${err}`),
    )
  const pod = ['--listen', '0.0.0.0:9900', '--etcd', 'http://e-0.e:2379,http://e-1.e:2379']

  it('sets store.etcd.advertise (trailing / dropped), which a replica on 0.0.0.0 needs', async () => {
    expect(await parse([...pod, '--advertise', 'https://veer-control-1.veer-control:9900/'])).toEqual({
      endpoints: ['http://e-0.e:2379', 'http://e-1.e:2379'],
      prefix: '/veer/',
      leaseTtl: 5,
      tls: null,
      advertise: 'https://veer-control-1.veer-control:9900',
    })
    expect(await refusal(pod)).toMatch(/^store\.etcd\.advertise must be given when listen is 0\.0\.0\.0/)
  })

  it("wins over the file's store.etcd.advertise; with the file's endpoints it needs no --etcd", async () => {
    const file = join(tempDir(), 'control.yaml')
    writeFileSync(
      file,
      'store:\n  etcd:\n    endpoints: [http://file:2379]\n    advertise: http://from-file:9900\n    prefix: /p/\n',
    )
    expect(await parse(['--config', file, '--advertise', 'http://flag:9900'])).toMatchObject({
      endpoints: ['http://file:2379'],
      prefix: '/p/',
      advertise: 'http://flag:9900',
    })
    expect(await parse(['--config', file])).toMatchObject({ advertise: 'http://from-file:9900' })
    expect(await parse(['--config', file, '--etcd', 'http://flag:2379'])).toMatchObject({
      endpoints: ['http://flag:2379'],
      advertise: 'http://from-file:9900',
    })
  })

  it('is refused in one line without etcd, with a URL that is not one, or naming no one replica', async () => {
    expect(await refusal(['--advertise', 'http://c-0.c:9900'])).toBe(
      "--advertise is this replica's address for the other replicas on etcd; give it with --etcd URL",
    )
    expect(await refusal(['--state-dir', '/tmp/x', '--advertise', 'http://c-0.c:9900'])).toBe(
      "--advertise is this replica's address for the other replicas on etcd; give it with --etcd URL",
    )
    expect(await refusal([...pod, '--advertise', 'c-0.c:9900'])).toBe(
      '--advertise must be an http:// or https:// URL such as http://10.0.0.5:9900 (got "c-0.c:9900")',
    )
    expect(await refusal([...pod, '--advertise', 'http://0.0.0.0:9900'])).toBe(
      '--advertise names no one replica (http://0.0.0.0:9900); give the address the other replicas reach this one at',
    )
    expect(await refusal([...pod, '--advertise'])).toMatch(/--advertise/)
  })
})
