/**
 * deploy/k8s: every overlay rendered with `kubectl kustomize` (Debian's kubernetes-client), every object
 * checked against the Kubernetes schemas (kubernetes-models; ServiceMonitor:
 * @kubernetes-models/prometheus-operator), what broke before asserted on the rendered YAML, and control
 * and each proxy run as their pods would (test/helpers/pod.ts): deploy/README.md's Secrets script, the
 * rendered args, env and volumes, the image as deploy/Dockerfile builds it, a read-only root. Needs root
 * for the namespaces and mounts (CI runs as root).
 */
import { execFileSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join, posix } from 'node:path'
import { checkServerIdentity } from 'node:tls'
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1'
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1'
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1'
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1'
import { ConfigMap, Secret, Service } from 'kubernetes-models/v1'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parse, parseAllDocuments } from 'yaml'
import { until } from '../helpers/control.ts'
import {
  type Image,
  inNet,
  inPod,
  type Obj,
  type Objects,
  type Pod,
  startPod,
  writeAs,
} from '../helpers/pod.ts'
import { type LoggedProcess, spawnLogged, started } from '../helpers/process.ts'

const ROOT = new URL('../../', import.meta.url).pathname
const K8S = join(ROOT, 'deploy/k8s')
const OVERLAYS = readdirSync(join(K8S, 'overlays')).sort()
const PROXY_OVERLAYS = ['gateway', 'sidecar']
/** Control as replicas on etcd, with the gateway following every replica. */
const REPLICATED = 'control-etcd'

/** The per-kind classes whose validate() checks an object against its schema. */
// biome-ignore lint/suspicious/noExplicitAny: each class takes its own kind's shape; a rendered object is checked by validate()
const MODELS: Record<string, new (o: any) => { validate(): void }> = {
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'apps/v1/StatefulSet': StatefulSet,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
}

const kubectl = existsSync('/usr/bin/kubectl') ? '/usr/bin/kubectl' : 'kubectl'

function render(overlay: string): Obj[] {
  let text: string
  try {
    text = execFileSync(kubectl, ['kustomize', join(K8S, 'overlays', overlay)], { encoding: 'utf8' })
  } catch (err) {
    throw new Error(
      `kubectl kustomize deploy/k8s/overlays/${overlay} failed (kubectl comes with Debian's kubernetes-client): ${(err as Error).message}`,
    )
  }
  return parseAllDocuments(text).map((d) => d.toJSON() as Obj)
}

const rendered = new Map(OVERLAYS.map((o) => [o, render(o)]))
const all = (kind: string) => [...rendered.values()].flat().filter((o) => o.kind === kind)
const one = (overlay: string, kind: string, name?: string) => {
  const found = rendered
    .get(overlay)!
    .filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name))
  expect(found, `${overlay}: one ${kind} ${name ?? ''}`).toHaveLength(1)
  return found[0]!
}

/** The value of `--flag V` or `--flag=V` in args; undefined without it. */
function flag(args: readonly string[], name: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === name) return args[i + 1]
    if (args[i]!.startsWith(`${name}=`)) return args[i]!.slice(name.length + 1)
  }
  return undefined
}

const workloads = () => [...all('Deployment'), ...all('StatefulSet')]
const isVeer = (c: Obj) => /\/veer:/.test(c.image)
const veerContainers = (w: Obj) => (w.spec.template.spec.containers as Obj[]).filter(isVeer)
const proxyWorkloads = () => workloads().filter((w) => veerContainers(w).some((c) => c.args?.[0] === 'proxy'))
const controlSet = (overlay = 'control') =>
  one(overlay, 'StatefulSet', overlay === 'control' ? undefined : 'veer-control')
const controlContainer = (overlay = 'control') =>
  veerContainers(controlSet(overlay)).find((c) => c.args[0] === 'control')!
/** The pod names a StatefulSet gives and the DNS names its (headless) Service gives them. */
const podNames = (sts: Obj) =>
  Array.from({ length: sts.spec.replicas }, (_, i) => `${sts.metadata.name}-${i}`)
const podHosts = (sts: Obj) => podNames(sts).map((n) => `${n}.${sts.spec.serviceName}`)

/** The mount a path lies under (the longest mountPath that contains it) and its volume. */
function mountOf(w: Obj, c: Obj, path: string): { mount: Obj; volume: Obj | null; claim: boolean } {
  const mounts = ((c.volumeMounts ?? []) as Obj[])
    .filter((m) => path === m.mountPath || path.startsWith(`${m.mountPath}/`))
    .sort((a, b) => b.mountPath.length - a.mountPath.length)
  expect(mounts, `${w.metadata.name}/${c.name}: ${path} is on a volume`).not.toHaveLength(0)
  const mount = mounts[0]!
  const volume = ((w.spec.template.spec.volumes ?? []) as Obj[]).find((v) => v.name === mount.name) ?? null
  const claim = ((w.spec.volumeClaimTemplates ?? []) as Obj[]).some((t) => t.metadata.name === mount.name)
  expect(volume !== null || claim, `${mount.name} is a volume of the pod`).toBe(true)
  return { mount, volume, claim }
}

const selects = (selector: Obj, labels: Obj) =>
  Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v) &&
  ((selector.matchExpressions ?? []) as Obj[]).every(
    (e) => e.operator === 'In' && e.values.includes(labels[e.key]),
  )

/** The port number a probe's or Service's `port` names on a container. */
function portNumber(c: Obj, port: string | number): number {
  if (typeof port === 'number') return port
  const p = ((c.ports ?? []) as Obj[]).find((x) => x.name === port)
  expect(p, `${c.name} has a port named ${port}`).toBeDefined()
  return p!.containerPort
}

// --- deploy/README.md's Secrets script, run with kubectl create --dry-run=client ------------------

const secretsDir = mkdtempSync(join(tmpdir(), 'veer-k8s-secrets-'))
/** The objects the README's script creates, by `Kind/name`, values as bytes. */
const made = new Map<string, { kind: 'ConfigMap' | 'Secret'; data: Record<string, Buffer>; object: Obj }>()

function secretsScript(): string {
  const readme = readFileSync(join(ROOT, 'deploy/README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('### Secrets'))
  const block = /```sh\n([\s\S]*?)```/.exec(section)
  expect(block, 'deploy/README.md "### Secrets" has a sh block').not.toBeNull()
  return block![1]!
}

function runSecretsScript(): void {
  const shim = `kubectl() { command ${kubectl} "$@" --dry-run=client -o yaml >> objects.yaml; echo --- >> objects.yaml; }`
  execFileSync('bash', ['-c', `set -euo pipefail\n${shim}\n${secretsScript()}`], {
    cwd: secretsDir,
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  for (const doc of parseAllDocuments(readFileSync(join(secretsDir, 'objects.yaml'), 'utf8'))) {
    const o = doc.toJSON() as Obj | null
    if (o === null) continue
    const data: Record<string, Buffer> = {}
    for (const [k, v] of Object.entries((o.data ?? {}) as Record<string, string>))
      data[k] = o.kind === 'Secret' ? Buffer.from(v, 'base64') : Buffer.from(v)
    made.set(`${o.kind}/${o.metadata.name}`, { kind: o.kind, data, object: o })
  }
}

/** The bytes of the file a container sees at `path`, from the README's objects or the render. */
function fileAt(overlay: string, w: Obj, c: Obj, path: string): Buffer {
  const { mount, volume } = mountOf(w, c, path)
  const source = volume?.secret ?? volume?.configMap
  expect(source, `${path} comes from a Secret or ConfigMap`).toBeDefined()
  const kind = volume!.secret ? 'Secret' : 'ConfigMap'
  const name = volume!.secret?.secretName ?? volume!.configMap.name
  const rel = posix.relative(mount.mountPath, path)
  const key = source.items ? (source.items as Obj[]).find((i) => i.path === rel)?.key : rel
  expect(key, `${name} projects ${rel}`).toBeDefined()
  const fromReadme = made.get(`${kind}/${name}`)
  if (fromReadme) return fromReadme.data[key]!
  const cm = rendered.get(overlay)!.find((o) => o.kind === kind && o.metadata.name === name)
  expect(cm, `${kind} ${name} is created by deploy/README.md's script or by the overlay`).toBeDefined()
  return Buffer.from(cm!.data[key])
}

beforeAll(runSecretsScript)
afterAll(() => rmSync(secretsDir, { recursive: true, force: true }))

describe('rendered manifests', () => {
  it('every overlay renders and every object, and what the Secrets script creates, fits its schema', () => {
    expect(OVERLAYS).toEqual(['control', 'control-etcd', 'gateway', 'monitoring', 'sidecar'])
    const objects = [...[...rendered.values()].flat(), ...[...made.values()].map((m) => m.object)]
    for (const o of objects) {
      const model = MODELS[`${o.apiVersion}/${o.kind}`]
      expect(model, `a schema for ${o.apiVersion} ${o.kind}`).toBeDefined()
      expect(() => new model!(o).validate(), `${o.kind} ${o.metadata?.name}`).not.toThrow()
    }
    expect(all('ServiceMonitor').map((o) => o.metadata.name)).toEqual(['veer', 'veer-control'])
    // The CRD's kind only in the monitoring overlay, so the others apply on a cluster without it.
    for (const [overlay, objs] of rendered)
      if (overlay !== 'monitoring')
        expect(objs.every((o) => !o.apiVersion.startsWith('monitoring.coreos.com'))).toBe(true)
    expect([...made.keys()].sort()).toEqual([
      'ConfigMap/veer-control-ca',
      'Secret/veer-control-tls',
      'Secret/veer-control-tokens',
      'Secret/veer-metrics-token',
      'Secret/veer-proxy-token',
    ])
  })

  it('every proxy follows control over HTTPS with a proxy token from a Secret, and trusts its certificate', () => {
    const service = one('control', 'Service', 'veer-control')
    expect(selects({ matchLabels: service.spec.selector }, controlSet().spec.template.metadata.labels)).toBe(
      true,
    )
    const cc = controlContainer()
    const tokens = fileAt('control', controlSet(), cc, flag(cc.args, '--token-file')!).toString()
    const cert = fileAt('control', controlSet(), cc, flag(cc.args, '--tls-cert')!)
    const proxyTokens = tokens
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter((f) => f[1] === 'proxy')
      .map((f) => f[0])
    // control-etcd runs the gateway too (following every replica).
    expect(
      proxyWorkloads()
        .map((w) => w.metadata.name)
        .sort(),
    ).toEqual(['gateway-veer', 'gateway-veer', 'shop-veer'])
    const replicated = controlSet(REPLICATED)
    const rc = controlContainer(REPLICATED)
    for (const overlay of [...PROXY_OVERLAYS, REPLICATED]) {
      const w = one(overlay, 'Deployment')
      // The proxy overlays dial the one control's Service; control-etcd's gateway each replica's name.
      const [sts, c0, hosts] =
        overlay === REPLICATED
          ? [replicated, rc, podHosts(replicated)]
          : [controlSet(), cc, [service.metadata.name]]
      const svc = overlay === REPLICATED ? one(REPLICATED, 'Service', 'veer-control') : service
      for (const c of veerContainers(w)) {
        const urls = flag(c.args, '--control')!
          .split(',')
          .map((u) => new URL(u))
        expect(urls.map((u) => u.hostname)).toEqual(hosts)
        for (const url of urls) {
          expect(url.protocol).toBe('https:')
          const port = (svc.spec.ports as Obj[]).find((p) => p.port === Number(url.port))
          expect(port, `Service veer-control has port ${url.port}`).toBeDefined()
          expect(portNumber(c0, port!.targetPort)).toBe(Number(flag(c0.args, '--listen')!.split(':')[1]))
          // The name a proxy dials is one control's certificate holds, as Node's TLS client checks it.
          expect(
            checkServerIdentity(url.hostname, new X509Certificate(cert).toLegacyObject()),
          ).toBeUndefined()
        }
        expect(selects({ matchLabels: svc.spec.selector }, sts.spec.template.metadata.labels)).toBe(true)
        const tokenFile = flag(c.args, '--token-file')!
        expect(
          mountOf(w, c, tokenFile).volume?.secret,
          `${overlay}: the token file is a Secret's`,
        ).toBeDefined()
        expect(proxyTokens).toContain(fileAt(overlay, w, c, tokenFile).toString().trim())
        const ca = (c.env as Obj[]).find((e) => e.name === 'NODE_EXTRA_CA_CERTS')
        expect(
          fileAt(overlay, w, c, ca!.value).equals(cert),
          `${overlay}: trusts control's certificate`,
        ).toBe(true)
      }
    }
  })

  it('control serves TLS from a Secret and keeps its state on a PersistentVolumeClaim', () => {
    const c = controlContainer()
    const sts = controlSet()
    expect(sts.spec.replicas).toBe(1)
    for (const f of ['--tls-cert', '--tls-key', '--token-file'])
      expect(mountOf(sts, c, flag(c.args, f)!).volume?.secret, `${f} is a Secret's file`).toBeDefined()
    const state = mountOf(sts, c, flag(c.args, '--state-dir')!)
    expect([state.claim, state.mount.readOnly]).toEqual([true, undefined])
    expect(flag(c.args, '--listen')).toMatch(/^0\.0\.0\.0:\d+$/)
  })

  it('control-etcd: three replicas on the etcd members, each advertising its own name, no volume, a budget', () => {
    const sts = controlSet(REPLICATED)
    const c = controlContainer(REPLICATED)
    const spec = sts.spec.template.spec
    expect(sts.spec.replicas).toBe(3)
    expect(sts.spec.volumeClaimTemplates).toBeUndefined()
    expect(flag(c.args, '--state-dir')).toBeUndefined()
    expect(((c.volumeMounts ?? []) as Obj[]).every((m) => m.readOnly === true)).toBe(true)
    expect(flag(c.args, '--listen')).toMatch(/^0\.0\.0\.0:\d+$/)
    for (const f of ['--tls-cert', '--tls-key', '--token-file'])
      expect(mountOf(sts, c, flag(c.args, f)!).volume?.secret, `${f} is a Secret's file`).toBeDefined()
    // The headless Service the replicas' names come from.
    const service = one(REPLICATED, 'Service', sts.spec.serviceName)
    expect(service.spec.clusterIP).toBe('None')
    // --advertise: this pod's own name under that Service, on the port it listens on, over its TLS.
    const env = (name: string) => ((c.env ?? []) as Obj[]).find((e) => e.name === name)
    expect(env('POD_NAME')?.valueFrom).toEqual({ fieldRef: { fieldPath: 'metadata.name' } })
    const port = flag(c.args, '--listen')!.split(':')[1]
    expect(flag(c.args, '--advertise')).toBe(`https://$(POD_NAME).${sts.spec.serviceName}:${port}`)
    // The replicas call each other over HTTPS: they trust control's certificate, which names each one.
    const cert = fileAt(REPLICATED, sts, c, flag(c.args, '--tls-cert')!)
    expect(fileAt(REPLICATED, sts, c, env('NODE_EXTRA_CA_CERTS')!.value).equals(cert)).toBe(true)
    for (const host of podHosts(sts))
      expect(checkServerIdentity(host, new X509Certificate(cert).toLegacyObject()), host).toBeUndefined()
    // --etcd: every member of the etcd StatefulSet, by its name under its Service, on its client port.
    const etcd = one(REPLICATED, 'StatefulSet', 'veer-etcd')
    const member = (etcd.spec.template.spec.containers as Obj[])[0]!
    expect(member.image).toMatch(/^quay\.io\/coreos\/etcd:v3\.5\.\d+$/)
    const etcdArg = (name: string) =>
      (member.args as string[]).find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1)
    const client = portNumber(member, 'client')
    expect(flag(c.args, '--etcd')!.split(',')).toEqual(podHosts(etcd).map((h) => `http://${h}:${client}`))
    expect(one(REPLICATED, 'Service', etcd.spec.serviceName).spec.clusterIP).toBe('None')
    // The members' peer flags agree with each other and with the pods the StatefulSet makes.
    const peer = portNumber(member, 'peer')
    expect(etcdArg('--initial-cluster')).toBe(
      podNames(etcd)
        .map((n, i) => `${n}=http://${podHosts(etcd)[i]}:${peer}`)
        .join(','),
    )
    expect(etcdArg('--name')).toBe('$(POD_NAME)')
    expect(etcdArg('--initial-advertise-peer-urls')).toBe(
      `http://$(POD_NAME).${etcd.spec.serviceName}:${peer}`,
    )
    expect(etcdArg('--advertise-client-urls')).toBe(`http://$(POD_NAME).${etcd.spec.serviceName}:${client}`)
    expect(etcdArg('--initial-cluster-state')).toBe('new')
    const data = etcdArg('--data-dir')!
    expect(mountOf(etcd, member, data).claim).toBe(true)
    for (const w of [sts, etcd]) {
      const labels = w.spec.template.metadata.labels
      // Both start their pods at once: an etcd member waits for the others to have a quorum.
      expect(w.spec.podManagementPolicy).toBe('Parallel')
      const away =
        w.spec.template.spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution
      expect(away.map((t: Obj) => [t.topologyKey, selects(t.labelSelector, labels)])).toEqual([
        ['kubernetes.io/hostname', true],
      ])
      const pdb = rendered
        .get(REPLICATED)!
        .filter((o) => o.kind === 'PodDisruptionBudget' && selects(o.spec.selector, labels))
      expect(pdb.map((p) => p.spec.minAvailable)).toEqual([2])
    }
    expect(spec.automountServiceAccountToken).toBe(false)
  })

  it('veer containers run non-root without capabilities under a read-only root; only volumes are writable', () => {
    const dockerfile = readFileSync(join(ROOT, 'deploy/Dockerfile'), 'utf8')
    expect(dockerfile).toMatch(/^USER node$/m) // uid 1000 in the node images
    for (const w of workloads()) {
      const pod = w.spec.template.spec
      expect(pod.securityContext?.seccompProfile?.type, w.metadata.name).toBe('RuntimeDefault')
      expect(pod.automountServiceAccountToken).toBe(false)
      for (const c of pod.containers as Obj[]) {
        const sc = c.securityContext ?? {}
        expect([sc.runAsNonRoot, sc.allowPrivilegeEscalation, sc.capabilities?.drop], c.name).toEqual([
          true,
          false,
          ['ALL'],
        ])
        if (!isVeer(c)) continue
        expect([sc.readOnlyRootFilesystem, sc.runAsUser], c.name).toEqual([true, 1000])
        // Control on etcd writes no file: no state dir, nothing writable.
        if (c.args[0] === 'control' && flag(c.args, '--etcd') !== undefined) {
          expect(flag(c.args, '--state-dir')).toBeUndefined()
          for (const m of c.volumeMounts as Obj[]) expect(m.readOnly, m.mountPath).toBe(true)
          continue
        }
        const stateDir = flag(c.args, '--state-dir')
        expect(
          stateDir,
          `${w.metadata.name}: --state-dir (the default is inside the read-only /app)`,
        ).toBeDefined()
        const state = mountOf(w, c, stateDir!)
        expect(state.claim || state.volume?.emptyDir !== undefined).toBe(true)
        for (const m of c.volumeMounts as Obj[])
          expect(
            m.readOnly === true || m === state.mount,
            `${m.mountPath} is read-only or the state dir`,
          ).toBe(true)
        for (const [k, v] of Object.entries(c.resources ?? {}))
          expect(Object.keys(v as Obj).sort(), `${c.name} ${k}`).toEqual(['cpu', 'memory'])
        expect(Object.keys(c.resources).sort()).toEqual(['limits', 'requests'])
      }
    }
  })

  it('probes are HTTP GETs of /readyz and /healthz on the port veer listens on for them', () => {
    for (const w of workloads()) {
      const overlay = [...rendered].find(([, objs]) => objs.includes(w))![0]
      for (const c of veerContainers(w)) {
        let port: number
        let scheme = 'HTTP'
        if (c.args[0] === 'proxy') {
          const config = parse(fileAt(overlay, w, c, flag(c.args, '--config')!).toString())
          // The kubelet probes the pod's IP, so admin must listen beyond loopback.
          expect(config.admin).toMatch(/^0\.0\.0\.0:\d+$/)
          port = Number(config.admin.split(':')[1])
          expect(portNumber(c, 'http')).toBe(Number(config.listen.split(':')[1]))
        } else {
          port = Number(flag(c.args, '--listen')!.split(':')[1])
          if (flag(c.args, '--tls-cert') !== undefined) scheme = 'HTTPS'
        }
        for (const [probe, path] of [
          ['readinessProbe', '/readyz'],
          ['livenessProbe', '/healthz'],
        ] as const) {
          const get = c[probe]?.httpGet
          expect(get, `${w.metadata.name} ${probe} is httpGet`).toBeDefined()
          expect([get.path, portNumber(c, get.port), get.scheme ?? 'HTTP']).toEqual([path, port, scheme])
        }
      }
    }
  })

  it('admin and control API take connections only from their namespace (and monitoring, in its overlay)', () => {
    for (const w of workloads()) {
      const overlay = [...rendered].find(([, objs]) => objs.includes(w))![0]
      const labels = w.spec.template.metadata.labels
      const policies = rendered
        .get(overlay)!
        .filter((o) => o.kind === 'NetworkPolicy' && selects(o.spec.podSelector, labels))
      expect(policies, `${w.metadata.name} has a NetworkPolicy`).toHaveLength(1)
      for (const c of veerContainers(w)) {
        const internal = c.args[0] === 'proxy' ? portNumber(c, 'admin') : portNumber(c, 'control')
        const rules = (policies[0]!.spec.ingress as Obj[]).filter((r) =>
          (r.ports ?? []).some((p: Obj) => p.port === internal),
        )
        expect(rules).not.toHaveLength(0)
        for (const r of rules) expect(r.from, `port ${internal}: peers`).toEqual([{ podSelector: {} }])
        // No rule without ports, which would open every port.
        for (const r of policies[0]!.spec.ingress as Obj[]) expect(r.ports?.length).toBeGreaterThan(0)
      }
    }
    // etcd's ports only from control and the members.
    const etcdLabels = one(REPLICATED, 'StatefulSet', 'veer-etcd').spec.template.metadata.labels
    const etcdPolicy = rendered
      .get(REPLICATED)!
      .find((o) => o.kind === 'NetworkPolicy' && selects(o.spec.podSelector, etcdLabels))!
    const from = (port: number) =>
      (etcdPolicy.spec.ingress as Obj[])
        .filter((r) => r.ports.some((p: Obj) => p.port === port))
        .flatMap((r) => r.from.map((peer: Obj) => peer.podSelector.matchLabels['app.kubernetes.io/name']))
        .sort()
    expect([from(2379), from(2380)]).toEqual([['veer-control', 'veer-etcd'], ['veer-etcd']])
    const monitoring = one('monitoring', 'NetworkPolicy')
    for (const r of monitoring.spec.ingress as Obj[])
      for (const peer of r.from) expect(Object.keys(peer)).toEqual(['namespaceSelector'])
  })

  it('Services, PodDisruptionBudgets and ServiceMonitors select what exists, on ports that exist', () => {
    const pods = workloads().map((w) => ({
      labels: w.spec.template.metadata.labels,
      containers: w.spec.template.spec.containers as Obj[],
    }))
    for (const s of all('Service')) {
      const pod = pods.find((p) => selects({ matchLabels: s.spec.selector }, p.labels))
      expect(pod, `Service ${s.metadata.name} selects a pod`).toBeDefined()
      for (const port of s.spec.ports as Obj[])
        expect(
          pod!.containers.some((c) => (c.ports ?? []).some((p: Obj) => p.name === port.targetPort)),
        ).toBe(true)
      if (s.spec.type === 'LoadBalancer')
        expect((s.spec.ports as Obj[]).map((p) => p.targetPort)).toEqual(['http'])
    }
    // Every Deployment, and every StatefulSet of more than one replica (one cannot be kept available).
    for (const d of [...all('Deployment'), ...all('StatefulSet').filter((s) => s.spec.replicas > 1)]) {
      const overlay = [...rendered].find(([, objs]) => objs.includes(d))![0]
      const pdb = rendered
        .get(overlay)!
        .filter(
          (p) =>
            p.kind === 'PodDisruptionBudget' && selects(p.spec.selector, d.spec.template.metadata.labels),
        )
      expect(pdb, `${d.metadata.name} has a PodDisruptionBudget`).toHaveLength(1)
      // A budget that allows no eviction blocks node drains.
      expect(
        pdb[0]!.spec.maxUnavailable ?? d.spec.replicas - pdb[0]!.spec.minAvailable,
      ).toBeGreaterThanOrEqual(1)
    }
    const services = all('Service')
    for (const sm of all('ServiceMonitor')) {
      const targets = services.filter((s) => selects(sm.spec.selector, s.metadata.labels ?? {}))
      expect(targets.length, `ServiceMonitor ${sm.metadata.name} selects a Service`).toBeGreaterThan(0)
      for (const s of targets)
        for (const e of sm.spec.endpoints as Obj[])
          expect((s.spec.ports as Obj[]).map((p) => p.name)).toContain(e.port)
      for (const e of sm.spec.endpoints as Obj[]) {
        if (e.authorization) expect(made.has(`Secret/${e.authorization.credentials.name}`)).toBe(true)
        if (e.tlsConfig) {
          expect(made.has(`ConfigMap/${e.tlsConfig.ca.configMap.name}`)).toBe(true)
          expect(e.tlsConfig.serverName).toBe('veer-control')
        }
      }
    }
    expect(
      services
        .filter((s) => selects(all('ServiceMonitor')[0]!.spec.selector, s.metadata.labels ?? {}))
        .map((s) => s.metadata.name)
        .sort(),
    ).toEqual(['gateway-veer-admin', 'gateway-veer-admin', 'shop-veer-admin']) // control-etcd's gateway too
  })

  it('the READMEs name the overlays that exist and no file that does not', () => {
    const deployReadme = readFileSync(join(ROOT, 'deploy/README.md'), 'utf8')
    for (const o of OVERLAYS) expect(deployReadme).toContain(`kubectl apply -k deploy/k8s/overlays/${o}`)
    const text = `${deployReadme}\n${readFileSync(join(ROOT, 'README.md'), 'utf8')}`
    for (const [, path] of text.matchAll(/(?:deploy\/)?(k8s\/[a-z0-9./-]*[a-z0-9/])(?![A-Z])/g))
      expect(existsSync(join(ROOT, 'deploy', path!)), `deploy/${path} exists`).toBe(true)
  })
})

// --- the pods, run as the kubelet would ------------------------------------------------------------

/** deploy/Dockerfile's last stage: entrypoint, WORKDIR, ENV, and /app as its COPY lines assemble it. */
function image(dist: string): Image {
  const text = readFileSync(join(ROOT, 'deploy/Dockerfile'), 'utf8')
  const last = text.slice(text.lastIndexOf('\nFROM '))
  const workdir = /^WORKDIR (\S+)$/m.exec(last)![1]!
  const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(last)![1]!) as string[]
  const env: Record<string, string> = {}
  for (const [, k, v] of last.matchAll(/^ENV (\w+)=(\S+)$/gm)) env[k!] = v!
  const files = new Map<string, string>()
  for (const [, from, rest] of last.matchAll(/^COPY (?:--from=(\w+) )?(.+)$/gm)) {
    const words = rest!.split(' ')
    const dest = posix.resolve(workdir, words.pop()!)
    for (const src of words) {
      const target = dest.endsWith('/') || words.length > 1 ? posix.join(dest, basename(src)) : dest
      // The deps stage's node_modules: the project's (it has the devDependencies too); the build
      // stage's dist/: compiled here with the build stage's command.
      const host =
        from === 'deps' && src === '/app/node_modules'
          ? realpathSync(join(ROOT, 'node_modules'))
          : from === 'build' && src === '/app/dist'
            ? dist
            : from === undefined
              ? join(ROOT, src)
              : null
      if (host === null) throw new Error(`deploy/Dockerfile: COPY --from=${from} ${src} is not emulated`)
      files.set(target, host)
    }
  }
  return { entrypoint, workdir, env, files }
}

/** The probe's answer, as the kubelet gets it (HTTPS without verifying the certificate). */
async function probe(pod: Pod, c: Obj, which: 'readinessProbe' | 'livenessProbe'): Promise<string> {
  const get = c[which].httpGet
  const url = `${(get.scheme ?? 'HTTP').toLowerCase()}://127.0.0.1:${portNumber(c, get.port)}${get.path}`
  return inNet(pod.net, 'curl', ['-sk', '-o', '/dev/null', '-w', '%{http_code}', url])
}

/** What the cluster holds for the pods' volumes: the README's Secrets and ConfigMap, the overlays' ConfigMaps. */
function cluster(): Objects {
  const objects = new Map([...made].map(([k, v]) => [k, { kind: v.kind, data: v.data }]))
  for (const o of all('ConfigMap')) {
    const data = Object.fromEntries(
      Object.entries(o.data as Record<string, string>).map(([k, v]) => [k, Buffer.from(v)]),
    )
    objects.set(`ConfigMap/${o.metadata.name}`, { kind: 'ConfigMap', data })
  }
  return objects
}

describe.skipIf(process.getuid?.() !== 0)('control and the proxies, run as their pods', () => {
  const running: LoggedProcess[] = []
  const dirs: string[] = []
  let dist = ''
  beforeAll(() => {
    dist = mkdtempSync(join(tmpdir(), 'veer-k8s-dist-'))
    chmodSync(dist, 0o755) // the image's files are readable by its user
    // The Dockerfile's build stage (here into a temp dir): the compiled code and the status page's files.
    expect(readFileSync(join(ROOT, 'deploy/Dockerfile'), 'utf8')).toContain(
      'RUN npx tsc -p tsconfig.build.json && cp -r control/ui dist/control/ui',
    )
    execFileSync(join(ROOT, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.build.json', '--outDir', dist], {
      cwd: ROOT,
    })
    cpSync(join(ROOT, 'control/ui'), join(dist, 'control/ui'), { recursive: true })
  }, 60_000)
  afterAll(async () => {
    await Promise.all(running.map((p) => p.stop('SIGKILL')))
    for (const dir of [dist, ...dirs]) rmSync(dir, { recursive: true, force: true })
  })

  it('control starts on HTTPS, answers its probes, and each proxy connects to it with the Secret token', async () => {
    const objects = cluster()
    const img = image(dist)
    const sts = controlSet()
    const cc = controlContainer()
    const routes = PROXY_OVERLAYS.flatMap(
      (o) => parse(String(one(o, 'ConfigMap').data['veer.yaml'])).routes as Obj[],
    )
    const upstreams = routes.flatMap((r) => [new URL(r.stable.url), new URL(r.canary.url)])
    // Every Service a pod dials resolves to the one network namespace's loopback.
    const hosts = [...new Set(['veer-control', ...upstreams.map((u) => u.hostname)])].filter(
      (h) => h !== '127.0.0.1',
    )
    const stablePorts = [...new Set(routes.map((r) => new URL(r.stable.url).port))]
    expect(stablePorts).toHaveLength(1)
    const control = startPod({ workload: sts, container: 'control', image: img, objects, hosts, net: null })
    running.push(control.proc)
    dirs.push(control.dir)
    const up = await started(control.proc, 'veer control started')
    expect([up.listen, String(up.url).startsWith('https://')]).toEqual(['0.0.0.0:9900', true])
    expect(await probe(control, cc, 'readinessProbe')).toBe('200')
    expect(await probe(control, cc, 'livenessProbe')).toBe('200')
    // The root is read-only; the state dir (the PVC) is control's.
    expect(await writeAs(control.proc, 1000, '/app/x')).toMatch(/Read-only file system/)
    expect(await writeAs(control.proc, 1000, '/etc/x')).toMatch(/Read-only file system/)
    expect(await writeAs(control.proc, 1000, '/var/lib/veer/.write-check')).toBeNull()
    const stateDir = control.claims.get('state')!
    expect(statSync(join(stateDir, 'control.lock')).uid).toBe(1000)

    // The routes' stable upstream (the sidecar's app container, the gateway's shop-stable Service).
    const upstream = spawnLogged(
      'nsenter',
      [
        `--net=${control.net}`,
        '--',
        process.execPath,
        '-e',
        `require('node:http').createServer((q, s) => s.end('from stable')).listen(${stablePorts[0]}, '127.0.0.1', () => console.log(JSON.stringify({ msg: 'listening' })))`,
      ],
      {},
    )
    running.push(upstream)
    await started(upstream, 'listening')

    const operator = readFileSync(join(secretsDir, 'operator-token'), 'utf8').trim()
    const ca = join(secretsDir, 'tls.crt')
    // As deploy/README.md tells an operator to call control: the certificate names veer-control.
    const api = async (path: string, ...curl: string[]) =>
      JSON.parse(
        await inNet(control.net, 'curl', [
          '-sf',
          '--cacert',
          ca,
          '--resolve',
          'veer-control:9900:127.0.0.1',
          '-H',
          `authorization: Bearer ${operator}`,
          ...curl,
          `https://veer-control:9900${path}`,
        ]),
      )
    for (const overlay of PROXY_OVERLAYS) {
      const w = one(overlay, 'Deployment')
      const c = veerContainers(w)[0]!
      const proxy = startPod({ workload: w, container: 'veer', image: img, objects, hosts, net: control.net })
      running.push(proxy.proc)
      dirs.push(proxy.dir)
      await started(proxy.proc, 'veer proxy started')
      const { id } = await proxy.proc.waitForLog((l) => l.msg === 'control connected')
      expect(await probe(proxy, c, 'readinessProbe')).toBe('200')
      expect(await probe(proxy, c, 'livenessProbe')).toBe('200')
      const { proxies } = await api('/v1/proxies')
      const mine = (proxies as Obj[]).filter((p) => p.id === id)
      expect(mine.map((p) => [p.who, p.routes, p.live])).toEqual([['proxies', ['shop'], true]])
      // An operator's weight reaches the proxy, which keeps it in its state dir (the emptyDir).
      if (overlay === PROXY_OVERLAYS[0])
        await api(
          '/v1/routes/shop/weights',
          '-X',
          'PUT',
          '-H',
          'content-type: application/json',
          '--data',
          '{"canary": 10}',
        )
      await until(
        async () =>
          (await inPod(proxy.proc, 1000, ['/usr/bin/test', '-s', '/var/lib/veer-proxy/control-cache.json']))
            .ok,
      )
      const traffic = `http://127.0.0.1:${portNumber(c, 'http')}/`
      expect(await inNet(control.net, 'curl', ['-s', traffic])).toBe('from stable')
      expect(await writeAs(proxy.proc, 1000, '/app/.veer-proxy')).toMatch(/Read-only file system/)
      expect(await writeAs(proxy.proc, 1000, '/tmp/x')).toMatch(/Read-only file system/)
      expect(await writeAs(proxy.proc, 1000, '/var/lib/veer-proxy/x')).toBeNull()
      expect(await proxy.proc.stop()).toBe(0)
      running.splice(running.indexOf(proxy.proc), 1)
    }
    for (const file of ['audit.log', 'state.json']) expect(statSync(join(stateDir, file)).uid).toBe(1000)
    expect(await control.proc.stop()).toBe(0)
  }, 60_000)
})
