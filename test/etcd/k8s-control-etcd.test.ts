/**
 * deploy/k8s/overlays/control-etcd's control StatefulSet, its three pods run from the rendered
 * manifest on a real 3-member etcd (test/helpers/etcd.ts): each replica gets the container's args and
 * env as the kubelet expands them ($(POD_NAME) from the downward API), its volumes' files laid out from
 * stand-ins of the Secrets and the ConfigMap. One leader is elected, it is known by the URL its pod
 * advertises, a follower feeds it a proxy registered with it over HTTPS, and a weight written to the
 * other follower reaches that proxy. Plain processes (no pod emulation of the filesystem: the manifests
 * test does that for the one-replica overlay); no Kubernetes DNS, see `pod` below.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, posix } from 'node:path'
import { Agent, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseAllDocuments } from 'yaml'
import { makeCa } from '../helpers/certs.ts'
import {
  announced,
  type ControlProcess,
  FakeProxy,
  TEST_ENV,
  TOKENS,
  tempDir,
  until,
  writeTokenFile,
} from '../helpers/control.ts'
import { type EtcdCluster, freePort, startEtcd } from '../helpers/etcd.ts'
import type { Obj } from '../helpers/pod.ts'
import { spawnVeer, started } from '../helpers/process.ts'

const ROOT = new URL('../../', import.meta.url).pathname
const kubectl = existsSync('/usr/bin/kubectl') ? '/usr/bin/kubectl' : 'kubectl'
const rendered = parseAllDocuments(
  execFileSync(kubectl, ['kustomize', join(ROOT, 'deploy/k8s/overlays/control-etcd')], { encoding: 'utf8' }),
).map((d) => d.toJSON() as Obj)
const sts = rendered.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'veer-control')!
const container = (sts.spec.template.spec.containers as Obj[]).find((c) => c.name === 'control')!

/** The cluster's Secrets and ConfigMap the pods mount, as the test's own files (by `Kind/name`). */
const ca = makeCa()
// The followers call the leader at its advertise URL, rewritten to 127.0.0.1 (below): the name its
// certificate must hold here, where the cluster's holds veer-control-N.veer-control.
const server = ca.leaf('control', ['127.0.0.1'])
const cluster: Record<string, Record<string, string>> = {
  'Secret/veer-control-tokens': { tokens: readFileSync(writeTokenFile(), 'utf8') },
  'Secret/veer-control-tls': { 'tls.crt': server.certText, 'tls.key': server.keyText },
  'ConfigMap/veer-control-ca': { 'ca.crt': ca.certText },
}

/** `$(NAME)` of the container's env, as the kubelet expands args and env values. */
const expand = (text: string, env: Record<string, string>) =>
  text.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, name: string) => env[name] ?? all)

/** Replace the value of `--flag V` in args (it must be there). */
function rewrite(args: string[], flag: string, to: (value: string) => string): string[] {
  const i = args.indexOf(flag)
  if (i === -1 || i + 1 >= args.length) throw new Error(`the rendered control has no ${flag} VALUE`)
  return args.map((a, j) => (j === i + 1 ? to(a) : a))
}

interface Replica {
  readonly name: string
  /** The advertise URL as rendered for this pod, and as rewritten for this host. */
  readonly rendered: string
  readonly advertise: string
  readonly control: ControlProcess
}

let etcd: EtcdCluster
const replicas: Replica[] = []
const dispatcher = new Agent({ connect: { ca: ca.certText } })

/**
 * Pod `i` of the StatefulSet as a process on this host. What is substituted, and why:
 * - `$(POD_NAME)` (args, env) by the pod's name, veer-control-i: the downward API's metadata.name.
 * - the volumes' paths (/etc/veer-tokens/…, /etc/veer-tls/…, /etc/veer-control-ca/…) by the same paths
 *   under a temp dir holding the items of the stand-in Secrets and ConfigMap: no mount namespace here.
 * - --etcd by the test cluster's endpoints: veer-etcd-N.veer-etcd do not exist here.
 * - --listen 0.0.0.0:9900 by 127.0.0.1:PORT, and only the host:port of --advertise (its scheme, and so
 *   TLS, stay) by the same: the pods' DNS names cannot resolve here, and three replicas on one host
 *   cannot share port 9900. PORT is free just before the start, as the advertise URL must name it.
 * The env adds TEST_ENV's short long-polls and tick, as every control test does.
 */
async function pod(i: number): Promise<Replica> {
  const name = `${sts.metadata.name}-${i}`
  const env: Record<string, string> = {}
  for (const e of (container.env ?? []) as Obj[]) {
    if (e.valueFrom !== undefined) {
      expect(e.valueFrom, `env ${e.name}`).toEqual({ fieldRef: { fieldPath: 'metadata.name' } })
      env[e.name] = name
    } else env[e.name] = expand(String(e.value), env)
  }
  let args = (container.args as string[]).map((a) => expand(a, env))
  const root = tempDir(`veer-${name}-`)
  const volumes = new Map((sts.spec.template.spec.volumes as Obj[]).map((v) => [v.name, v]))
  const mounts = (container.volumeMounts as Obj[]).map((m) => m.mountPath as string)
  for (const m of container.volumeMounts as Obj[]) {
    const v = volumes.get(m.name)!
    const key = v.secret ? `Secret/${v.secret.secretName}` : `ConfigMap/${v.configMap?.name}`
    const data = cluster[key]
    if (data === undefined) throw new Error(`volume ${m.name}: no stand-in for ${key}`)
    for (const item of (v.secret ?? v.configMap).items as Obj[]) {
      const file = join(root, m.mountPath, item.path)
      mkdirSync(dirname(file), { recursive: true })
      writeFileSync(file, data[item.key]!)
    }
  }
  const onHost = (value: string) =>
    mounts.some((m) => value.startsWith(`${m}/`)) ? join(root, posix.normalize(value)) : value
  args = args.map(onHost)
  for (const k of Object.keys(env)) env[k] = onHost(env[k]!)
  const port = await freePort()
  const listen = `127.0.0.1:${port}`
  args = rewrite(args, '--etcd', () => etcd.endpoints)
  args = rewrite(args, '--listen', (v) => {
    expect(v).toBe('0.0.0.0:9900')
    return listen
  })
  let advertised = ''
  args = rewrite(args, '--advertise', (v) => {
    advertised = v
    const url = new URL(v)
    url.host = listen
    return url.href.replace(/\/$/, '')
  })
  const proc = spawnVeer(args, { ...process.env, VEER_TOKEN: '', ...TEST_ENV, ...env })
  const up = await started(proc, 'veer control started')
  const url = String(up.url)
  const control: ControlProcess = {
    ...proc,
    url,
    stateDir: '',
    tokenFile: '',
    api: async (method, path, o = {}) => {
      const token = o.token === undefined ? TOKENS.operator : o.token
      const headers: Record<string, string> = { ...o.headers }
      if (token !== null) headers.authorization = `Bearer ${token}`
      let body: string | undefined
      if (o.body !== undefined) {
        body = JSON.stringify(o.body)
        headers['content-type'] = 'application/json'
      }
      const res = await request(`${url}${path}`, { method: method as 'GET', headers, body, dispatcher })
      const text = await res.body.text()
      let json: unknown = null
      try {
        json = text === '' ? null : JSON.parse(text)
      } catch {}
      return { status: res.statusCode, headers: new Headers(), text, json }
    },
  }
  return { name, rendered: advertised, advertise: args[args.indexOf('--advertise') + 1]!, control }
}

beforeAll(async () => {
  etcd = await startEtcd(3)
})
afterAll(async () => {
  await Promise.all(replicas.map((r) => r.control.stop('SIGKILL')))
  await dispatcher.close()
  await etcd?.close()
})

describe('overlays/control-etcd: the StatefulSet of control, its three pods on a real etcd', () => {
  it('elects one leader, known by its advertised URL; a weight written to a follower reaches a proxy of the other', async () => {
    expect(sts.spec.replicas).toBe(3)
    replicas.push(...(await Promise.all([0, 1, 2].map(pod))))
    // Each pod advertises its own name under the headless Service, on the port and scheme it serves.
    expect(replicas.map((r) => r.rendered)).toEqual(
      replicas.map((r) => `https://${r.name}.${sts.spec.serviceName}:9900`),
    )
    for (const r of replicas) {
      expect(r.control.url).toBe(r.advertise)
      const probe = container.readinessProbe.httpGet
      expect((await r.control.api('GET', probe.path, { token: null })).status).toBe(200)
    }
    let views: Obj[] = []
    // until() returns only a truthy value (or throws).
    const leader: Replica = (await until(async () => {
      views = await Promise.all(replicas.map(async (r) => (await r.control.api('GET', '/v1/control')).json))
      const id = views[0]?.leader?.id
      if (id === undefined || !views.every((v) => v.leader?.id === id)) return null
      const leading = views.filter((v) => v.role === 'leader')
      return leading.length === 1 ? replicas[views.indexOf(leading[0]!)]! : null
    }).catch((err) => {
      throw new Error(`${err.message}: the replicas say ${JSON.stringify(views)}`)
    }))!
    expect(views.map((v) => v.role).sort()).toEqual(['follower', 'follower', 'leader'])
    expect(views.every((v) => v.leader.url === leader.advertise)).toBe(true)
    const [a, b] = replicas.filter((r) => r !== leader)
    // A proxy on follower a; the weight written on follower b.
    const proxy = new FakeProxy(a!.control, 'edge-1', [announced('shop', 0)])
    const reg = await proxy.register()
    expect(await proxy.ack(reg.revision)).toBe(204)
    await until(async () => (await b!.control.api('GET', '/v1/routes/shop')).status === 200)
    const polling = proxy.watch(reg.revision)
    const set = await b!.control.api('PUT', '/v1/routes/shop/weights', { body: { canary: 30 } })
    expect(set.status, set.text).toBe(200)
    const woke = await polling
    expect([woke?.revision, woke?.routes.shop?.canary]).toEqual([set.json.revision, 30])
    expect(await proxy.ack(set.json.revision)).toBe(204)
    // Follower a fed the leader its proxy at the leader's advertise URL (HTTPS, the CA of
    // NODE_EXTRA_CA_CERTS): the leader knows the proxy it never talked to, in sync with the new weight.
    const seen: Obj = (await until(async () => {
      const { proxies } = (await leader.control.api('GET', '/v1/proxies')).json
      const p = (proxies as Obj[]).find((x) => x.id === 'edge-1')
      return p?.appliedRevision === set.json.revision ? p : null
    }))!
    expect([seen.routes, seen.live]).toEqual([['shop'], true])
    for (const r of replicas)
      expect(r.control.logs.filter((l) => l.msg === 'cannot feed the leader its proxies')).toEqual([])
  })
})
