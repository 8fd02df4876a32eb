/**
 * TLS on the traffic port through a real proxy process, certificates made in the test: ALPN puts h2
 * and http/1.1 clients on the same port, SNI picks a certificate, old protocol versions are refused,
 * mTLS requires a certificate from `tls.clientCA`, and a certificate swap on disk reaches new
 * handshakes while an HTTP/2 session that was up keeps working. Bad files stop the start with one line.
 */
import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type ConnectionOptions, type PeerCertificate, connect as tlsConnect } from 'node:tls'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { testBed } from '../helpers/bed.ts'
import { makeCa, type Pem } from '../helpers/certs.ts'
import { h2connect, h2request } from '../helpers/h2.ts'
import { proxyRefuses, writeConfig } from '../helpers/veer.ts'

const bed = testBed()
const ca = makeCa()
const shop = ca.leaf('shop', ['shop.example', 'localhost'])
const api = ca.leaf('api', ['api.example'])
const wild = ca.leaf('wild', ['*.wild.example'])
const client = ca.leaf('client', ['client.example'])
const other = makeCa('another CA')
const stranger = other.leaf('stranger', ['client.example'])

interface Hello {
  readonly protocol: string | null
  readonly alpn: string | false | null
  readonly cert: PeerCertificate
}

/** A bare TLS handshake; resolves with what was agreed, rejects with the handshake's error. */
function hello(port: number, options: ConnectionOptions): Promise<Hello> {
  return new Promise((ok, fail) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca: ca.certText, ...options }, () => {
      const answer = {
        protocol: socket.getProtocol(),
        alpn: socket.alpnProtocol,
        cert: socket.getPeerCertificate(),
      }
      socket.end()
      ok(answer)
    })
    socket.once('error', fail)
  })
}

/** An HTTPS/1.1 GET; with a client certificate when `options` carry one. */
function httpsGet(
  port: number,
  path: string,
  options: ConnectionOptions = {},
): Promise<{ status: number; body: string; alpn: string | false | null }> {
  return new Promise((ok, fail) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        servername: 'shop.example',
        headers: { host: 'shop.example' },
        ca: ca.certText,
        agent: false,
        ...options,
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () =>
          ok({
            status: res.statusCode!,
            body: Buffer.concat(chunks).toString(),
            alpn: (res.socket as import('node:tls').TLSSocket).alpnProtocol,
          }),
        )
        res.on('error', fail)
      },
    )
    req.on('error', fail)
    req.end()
  })
}

const tlsOf = (extra: Record<string, unknown> = {}) => ({ tls: { cert: shop.cert, key: shop.key, ...extra } })

describe('TLS on the traffic port', () => {
  it('serves HTTP/2 and HTTP/1.1 on one port by ALPN, with x-forwarded-proto https', async () => {
    const up = await bed.upstream('stable')
    const veer = await bed.proxy({ stable: { url: up.url } }, tlsOf())
    const h1 = await httpsGet(veer.port, '/one')
    expect(h1.status).toBe(200)
    // A client that offers no ALPN is an HTTP/1.1 client; one that offers http/1.1 gets it.
    expect(h1.alpn).toBe(false)
    const offered = await httpsGet(veer.port, '/one', { ALPNProtocols: ['http/1.1'] })
    expect(offered).toMatchObject({ status: 200, alpn: 'http/1.1' })
    const seen1 = JSON.parse(h1.body)
    expect(seen1.headers['x-forwarded-proto']).toBe('https')
    expect(seen1.headers.host).toBe('shop.example')

    const session = await h2connect(`https://127.0.0.1:${veer.port}`, {
      ca: ca.certText,
      servername: 'shop.example',
    })
    expect(session.alpnProtocol).toBe('h2')
    const answers = await Promise.all(
      [1, 2, 3].map((i) => h2request(session, { ':path': `/two/${i}`, ':authority': 'shop.example' })),
    )
    session.close()
    for (const [i, a] of answers.entries()) {
      expect(a.status).toBe(200)
      const seen = JSON.parse(a.body)
      expect(seen.url).toBe(`/two/${i + 1}`)
      expect(seen.headers['x-forwarded-proto']).toBe('https')
      expect(seen.headers.host).toBe('shop.example')
    }
    // Cleartext on the TLS port is not served.
    await expect(fetch(`${veer.url}/plain`)).rejects.toThrow()
  })

  it('answers curl over --http2 and --http1.1 with --cacert', async () => {
    const up = await bed.upstream('stable')
    const veer = await bed.proxy({ stable: { url: up.url } }, tlsOf())
    const curl = async (version: string) => {
      const { stdout } = await promisify(execFile)('curl', [
        '-sS',
        version,
        '--cacert',
        ca.cert,
        '--resolve',
        `shop.example:${veer.port}:127.0.0.1`,
        '-o',
        '/dev/null',
        '-w',
        '%{http_version} %{http_code}',
        `https://shop.example:${veer.port}/curl`,
      ])
      return stdout
    }
    expect(await curl('--http2')).toBe('2 200')
    expect(await curl('--http1.1')).toBe('1.1 200')
  })

  it('picks the certificate by SNI: exact names, a wildcard one level up, else the default', async () => {
    const up = await bed.upstream('stable')
    const veer = await bed.proxy(
      { stable: { url: up.url } },
      tlsOf({
        certificates: [
          { cert: api.cert, key: api.key },
          { cert: wild.cert, key: wild.key },
        ],
      }),
    )
    const subject = async (servername: string) => (await hello(veer.port, { servername })).cert.subjectaltname
    expect(await subject('api.example')).toBe('DNS:api.example')
    expect(await subject('API.Example')).toBe('DNS:api.example')
    expect(await subject('x.wild.example')).toBe('DNS:*.wild.example')
    expect(await subject('shop.example')).toBe('DNS:shop.example, DNS:localhost')
    // Two levels below the wildcard is not covered by it: the default certificate answers.
    expect(await subject('a.b.wild.example').catch(() => 'refused')).toBe('refused')
    expect(
      (await hello(veer.port, { servername: 'a.b.wild.example', checkServerIdentity: () => undefined })).cert
        .subjectaltname,
    ).toBe('DNS:shop.example, DNS:localhost')
  })

  it('refuses TLS 1.1 with a protocol-version alert, and TLS 1.2 when minVersion is TLSv1.3', async () => {
    const up = await bed.upstream('stable')
    const veer = await bed.proxy({ stable: { url: up.url } }, tlsOf())
    expect((await hello(veer.port, { servername: 'shop.example', maxVersion: 'TLSv1.2' })).protocol).toBe(
      'TLSv1.2',
    )
    expect((await hello(veer.port, { servername: 'shop.example' })).protocol).toBe('TLSv1.3')
    // The client's own security level would refuse TLS 1.1 before a byte is sent; lowered, the refusal
    // seen is the server's alert.
    const old = hello(veer.port, {
      servername: 'shop.example',
      minVersion: 'TLSv1',
      maxVersion: 'TLSv1.1',
      ciphers: 'DEFAULT@SECLEVEL=0',
    })
    await expect(old).rejects.toThrow(/alert protocol version/)

    const strict = await bed.proxy({ stable: { url: up.url } }, tlsOf({ minVersion: 'TLSv1.3' }))
    await expect(hello(strict.port, { servername: 'shop.example', maxVersion: 'TLSv1.2' })).rejects.toThrow(
      /alert protocol version/,
    )
    expect((await hello(strict.port, { servername: 'shop.example' })).protocol).toBe('TLSv1.3')
  })

  it('with clientCA, serves only clients with a certificate that CA signed', async () => {
    const up = await bed.upstream('stable')
    const veer = await bed.proxy({ stable: { url: up.url } }, tlsOf({ clientCA: ca.cert }))
    const good = await httpsGet(veer.port, '/mtls', { cert: client.certText, key: client.keyText })
    expect(good.status).toBe(200)
    await expect(httpsGet(veer.port, '/none')).rejects.toThrow(
      /certificate required|socket hang up|ECONNRESET/,
    )
    await expect(
      httpsGet(veer.port, '/stranger', { cert: stranger.certText, key: stranger.keyText }),
    ).rejects.toThrow(/unknown ca|socket hang up|ECONNRESET/)
    // Over HTTP/2 the same.
    const session = await h2connect(`https://127.0.0.1:${veer.port}`, {
      ca: ca.certText,
      servername: 'shop.example',
      cert: client.certText,
      key: client.keyText,
    })
    const a = await h2request(session, { ':path': '/mtls2', ':authority': 'shop.example' })
    session.close()
    expect(a.status).toBe(200)
    // Only the certified requests reached the upstream.
    expect(up.seen.map((r) => r.url)).toEqual(['/mtls', '/mtls2'])
  })

  it('reads swapped certificate files for new handshakes while an HTTP/2 session carries on; rejects a broken swap', async () => {
    const up = await bed.upstream('stable')
    // Laid out as a mounted Kubernetes Secret: the files are links through `..data`, which the kubelet
    // swaps in one rename.
    const dir = mkdtempSync(join(tmpdir(), 'veer-secret-'))
    const version = (name: string, pem: Pem) => {
      mkdirSync(join(dir, name))
      writeFileSync(join(dir, name, 'tls.crt'), pem.certText)
      writeFileSync(join(dir, name, 'tls.key'), pem.keyText)
      symlinkSync(name, join(dir, '..data_tmp'))
      renameSync(join(dir, '..data_tmp'), join(dir, '..data'))
    }
    version('v1', shop)
    const cert = join(dir, 'tls.crt')
    const key = join(dir, 'tls.key')
    symlinkSync('..data/tls.crt', cert)
    symlinkSync('..data/tls.key', key)
    const veer = await bed.proxy({ stable: { url: up.url } }, { tls: { cert, key } })
    const session = await h2connect(`https://127.0.0.1:${veer.port}`, {
      ca: ca.certText,
      servername: 'shop.example',
    })
    expect((await h2request(session, { ':path': '/before', ':authority': 'shop.example' })).status).toBe(200)

    // The Secret swap: a certificate from another CA for the same name.
    version('v2', other.leaf('next', ['shop.example']))
    await veer.waitForLog((l) => l.msg === 'certificates reloaded')
    // The session that was up keeps its connection and its certificate.
    expect((await h2request(session, { ':path': '/during', ':authority': 'shop.example' })).status).toBe(200)
    expect(session.closed).toBe(false)
    session.close()
    // New handshakes get the new certificate.
    await expect(hello(veer.port, { servername: 'shop.example' })).rejects.toThrow(
      /self-signed|unable to verify|issuer/,
    )
    const fresh = await hello(veer.port, { servername: 'shop.example', ca: other.certText })
    expect(fresh.cert.issuer.CN).toBe('another CA')

    // A broken swap (a key that does not match) is refused, and the last good certificate stays.
    const from = veer.logs.length
    version('v3', { ...shop, certText: readFileSync(join(dir, 'v2', 'tls.crt'), 'utf8') })
    const rejected = await veer.waitForLog(
      (l) => l.msg === 'certificates rejected, keeping the current ones' && veer.logs.indexOf(l) >= from,
    )
    expect(String(rejected.reason)).toMatch(/tls\.key: .* is not the key of/)
    const still = await hello(veer.port, { servername: 'shop.example', ca: other.certText })
    expect(still.cert.fingerprint256).toBe(fresh.cert.fingerprint256)
    expect(await httpsGet(veer.port, '/after', { ca: other.certText })).toMatchObject({ status: 200 })
  })
})

describe('TLS settings that cannot work stop the start with one line', () => {
  const fails = async (args: string[], ...patterns: RegExp[]) => {
    const lines = await proxyRefuses(args)
    expect(lines, lines.join('\n')).toHaveLength(1)
    for (const p of patterns) expect(lines[0]).toMatch(p)
  }
  const stable = ['--stable', 'http://127.0.0.1:9']

  it('names the flag or setting and the file', async () => {
    await fails([...stable, '--tls-cert', shop.cert], /--tls-cert/, /--tls-key/)
    await fails(
      [...stable, '--tls-cert', shop.cert, '--tls-key', `${ca.dir}/missing.key`],
      /tls\.key/,
      /missing\.key/,
      /no such file/,
    )
    await fails([...stable, '--tls-cert', shop.cert, '--tls-key', api.key], /tls\.key/, /is not the key of/)
    await fails(
      [...stable, '--tls-cert', shop.key, '--tls-key', shop.key],
      /tls\.cert/,
      /not a PEM certificate/,
    )
    const config = writeConfig({
      tls: { cert: shop.cert, key: shop.key, clientCA: shop.key },
      routes: [{ name: 'default', stable: { url: 'http://127.0.0.1:9' } }],
    })
    await fails(['--config', config], /tls\.clientCA/, /not a PEM CA certificate/)
    const noName = ca.leaf('ip-only', ['127.0.0.1'])
    const config2 = writeConfig({
      tls: { cert: shop.cert, key: shop.key, certificates: [{ cert: noName.cert, key: noName.key }] },
      routes: [{ name: 'default', stable: { url: 'http://127.0.0.1:9' } }],
    })
    await fails(['--config', config2], /tls\.certificates\[0\]\.cert/, /names no DNS name/)
  })
})
