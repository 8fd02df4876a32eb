/**
 * A real etcd cluster (Debian's etcd-server, /usr/bin/etcd) of 1 or 3 members for tests, on unix
 * sockets in a temp dir: no port is ever taken. etcd 3.4 wants URLs of the form HOST:PORT, so
 * `unix://m0:1` is the socket file `m0:1` in the members' working dir (all share it, so peers find each
 * other); clients reach it as `unix:///TMP/m0:1`. Healthy means a linearizable read answered (quorum).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Etcd3 } from 'etcd3'
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

export async function startEtcd(size: 1 | 3 = 1): Promise<EtcdCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'veer-etcd-'))
  const names = Array.from({ length: size }, (_, i) => `m${i}`)
  const initial = names.map((n) => `${n}=unix://${n}:2`).join(',')
  const members: EtcdMember[] = names.map((name) => ({
    name,
    endpoint: `unix://${join(dir, `${name}:1`)}`,
    process: null,
    log: '',
  }))
  const launch = (m: EtcdMember) => {
    const child = spawn(
      ETCD_BIN,
      [
        '--name',
        m.name,
        '--data-dir',
        join(dir, `${m.name}.data`),
        '--listen-client-urls',
        `unix://${m.name}:1`,
        '--advertise-client-urls',
        `unix://${m.name}:1`,
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
