/**
 * A real etcd cluster (Debian's etcd-server, /usr/bin/etcd) of 1 or 3 members for tests, on unix
 * sockets in a temp dir: no port is ever taken. etcd 3.4 wants URLs of the form HOST:PORT, so
 * `unix://m0:1` is the socket file `m0:1` in the members' working dir (all share it, so peers find each
 * other); clients reach it as `unix:///TMP/m0:1`. Healthy means a linearizable read answered (quorum).
 * With `tls` the client URL is https://localhost:PORT (listening on 127.0.0.1) instead (etcd 3.4 has no TLS on a unix socket
 * that clients check by name): the port is one listen(0) gave and closed again just before.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Etcd3 } from 'etcd3'
import type { Ca, Pem } from './certs.ts'
import { until } from './control.ts'

export const ETCD_BIN = process.env.VEER_ETCD_BIN ?? '/usr/bin/etcd'

export interface EtcdMember {
  readonly name: string
  /** The client URL, unix:///…/NAME:1. */
  readonly endpoint: string
  process: ChildProcess | null
  log: string
}

export interface EtcdCluster {
  readonly dir: string
  readonly members: readonly EtcdMember[]
  /** Every member's client URL, comma-separated, as --etcd takes them. */
  readonly endpoints: string
  /** SIGTERM member `i` and wait for its exit. */
  stop(i: number): Promise<void>
  /** SIGKILL member `i` and wait for its exit. */
  kill(i: number): Promise<void>
  /** Start member `i` again on its data dir and wait until it answers. */
  start(i: number): Promise<void>
  /** Wait until every running member answers a linearizable read. */
  healthy(): Promise<void>
  /** `etcdctl ARGS` against the cluster: its stdout. */
  ctl(...args: string[]): Promise<string>
  close(): Promise<void>
}

/**
 * A port on 127.0.0.1 that was free a moment ago, for a server that must be told its port before it
 * listens (etcd's TLS client URL above, a control replica's advertise URL).
 */
export function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer()
    s.once('error', fail)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => ok(port))
    })
  })
}

export interface EtcdTls {
  readonly ca: Ca
  /** The server's certificate (for localhost); clients must show one the CA signed. */
  readonly server: Pem
  /** A client certificate for etcdctl and the health check. */
  readonly client: Pem
}

export async function startEtcd(size: 1 | 3 = 1, tls: EtcdTls | null = null): Promise<EtcdCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'veer-etcd-'))
  const names = Array.from({ length: size }, (_, i) => `m${i}`)
  const initial = names.map((n) => `${n}=unix://${n}:2`).join(',')
  const clientUrls: string[] = []
  for (const name of names)
    clientUrls.push(tls === null ? `unix://${name}:1` : `https://127.0.0.1:${await freePort()}`)
  const members: EtcdMember[] = names.map((name, i) => ({
    name,
    // By name: node warns on a TLS server name that is an IP address.
    endpoint:
      tls === null ? `unix://${join(dir, `${name}:1`)}` : clientUrls[i]!.replace('127.0.0.1', 'localhost'),
    process: null,
    log: '',
  }))
  const tlsFlags =
    tls === null
      ? []
      : [
          '--cert-file',
          tls.server.cert,
          '--key-file',
          tls.server.key,
          '--trusted-ca-file',
          tls.ca.cert,
          '--client-cert-auth',
        ]
  const ctlTls =
    tls === null ? [] : ['--cacert', tls.ca.cert, '--cert', tls.client.cert, '--key', tls.client.key]
  const credentials =
    tls === null
      ? undefined
      : {
          rootCertificate: readFileSync(tls.ca.cert),
          certChain: readFileSync(tls.client.cert),
          privateKey: readFileSync(tls.client.key),
        }
  const launch = (m: EtcdMember) => {
    const child = spawn(
      ETCD_BIN,
      [
        '--name',
        m.name,
        '--data-dir',
        join(dir, `${m.name}.data`),
        '--listen-client-urls',
        clientUrls[members.indexOf(m)]!,
        '--advertise-client-urls',
        tls === null ? clientUrls[members.indexOf(m)]! : m.endpoint,
        ...tlsFlags,
        '--listen-peer-urls',
        `unix://${m.name}:2`,
        '--initial-advertise-peer-urls',
        `unix://${m.name}:2`,
        '--initial-cluster',
        initial,
        '--initial-cluster-state',
        'new',
        '--initial-cluster-token',
        dir,
        // Quick elections: a test that stops members waits on them.
        '--heartbeat-interval',
        '50',
        '--election-timeout',
        '500',
      ],
      { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] },
    )
    m.log = ''
    child.stderr!.on('data', (d) => {
      m.log = (m.log + d).slice(-20_000)
    })
    m.process = child
  }
  const exit = async (i: number, signal: NodeJS.Signals) => {
    const p = members[i]!.process
    if (p === null) return
    members[i]!.process = null
    if (p.exitCode !== null || p.signalCode !== null) return
    const gone = new Promise((r) => p.once('exit', r))
    p.kill(signal)
    await gone
  }
  const answers = async (m: EtcdMember) => {
    const client = new Etcd3({
      hosts: m.endpoint,
      ...(credentials && { credentials }),
      defaultCallOptions: () => ({ deadline: Date.now() + 1000 }),
    })
    try {
      await client.get('veer-test-health').string()
      return true
    } catch {
      return false
    } finally {
      client.close()
    }
  }
  const healthy = async () => {
    for (const m of members) {
      if (m.process === null) continue
      await until(() => answers(m), 20_000, 50).catch((err) => {
        throw new Error(`etcd ${m.name} is not healthy: ${(err as Error).message}\n${m.log.slice(-2000)}`)
      })
    }
  }
  const cluster: EtcdCluster = {
    dir,
    members,
    endpoints: members.map((m) => m.endpoint).join(','),
    stop: (i) => exit(i, 'SIGTERM'),
    kill: (i) => exit(i, 'SIGKILL'),
    start: async (i) => {
      launch(members[i]!)
      await until(() => answers(members[i]!), 20_000, 50)
    },
    healthy,
    ctl: (...args) =>
      new Promise((ok, fail) =>
        execFile(
          'etcdctl',
          [
            '--endpoints',
            members
              .filter((m) => m.process !== null)
              .map((m) => m.endpoint)
              .join(','),
            ...ctlTls,
            ...args,
          ],
          { env: { ...process.env, ETCDCTL_API: '3' }, timeout: 10_000 },
          (err, stdout, stderr) =>
            err ? fail(new Error(`etcdctl ${args.join(' ')}: ${stderr}`)) : ok(stdout),
        ),
      ),
    close: async () => {
      await Promise.all(members.map((_, i) => exit(i, 'SIGKILL')))
    },
  }
  for (const m of members) launch(m)
  try {
    await healthy()
  } catch (err) {
    await cluster.close()
    throw err
  }
  return cluster
}
