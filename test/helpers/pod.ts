/**
 * Run one container of a rendered Kubernetes pod spec as the kubelet would, without a container
 * runtime (needs root): its volumes laid out on the host (Secret and ConfigMap files in the kubelet's
 * `..data` layout, owned root:fsGroup with the volume's mode; an emptyDir as a tmpfs; a
 * PersistentVolumeClaim as a setgid fsGroup dir), a root filesystem of its own in a private mount
 * namespace (the host's /usr, the project's Node 24 as /usr/local/bin/node, the image's /app as the
 * Dockerfile's last stage assembles it), remounted read-only when readOnlyRootFilesystem says so; then
 * chroot, the pod's uid/gid/fsGroup, no capabilities, no_new_privs, and the image's entrypoint with the
 * manifest's args and env, in the image's WORKDIR. Not emulated: the image's own /usr, seccomp, cgroup
 * limits. Pods share one network namespace (the first creates it), where /etc/hosts maps Service names
 * to 127.0.0.1.
 */
import { execFile } from 'node:child_process'
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  realpathSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import { type LoggedProcess, spawnLogged } from './process.ts'

const run = promisify(execFile)

// biome-ignore lint/suspicious/noExplicitAny: rendered manifests are read field by field; the schema check types them
export type Obj = Record<string, any>

/** What the image gives a container: from deploy/Dockerfile's last stage. */
export interface Image {
  readonly entrypoint: readonly string[]
  readonly workdir: string
  readonly env: Readonly<Record<string, string>>
  /** Path inside the image → host file or directory. */
  readonly files: ReadonlyMap<string, string>
}

/** The base image's PATH (node:24-slim), where its `node` is /usr/local/bin/node. */
const IMAGE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

/** The cluster objects a pod's volumes may name: ConfigMaps and Secrets by name, values as bytes. */
export type Objects = ReadonlyMap<string, { kind: 'ConfigMap' | 'Secret'; data: Record<string, Buffer> }>

export interface Pod {
  readonly proc: LoggedProcess
  /** The network namespace the pod runs in, for `inPod` and further pods. */
  readonly net: string
  /** Host dirs standing for each PersistentVolumeClaim, by claim template name. */
  readonly claims: ReadonlyMap<string, string>
  /** The host dir holding the pod's root, volumes and claims: remove it once the pod has exited. */
  readonly dir: string
}

const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`

/**
 * A volume's files as the kubelet's atomic writer leaves them: `..<stamp>/<path>`, `..data` linking to
 * it, and `<path>` linking through `..data`, owned root:fsGroup with `mode`.
 */
function projected(dir: string, files: Record<string, Buffer>, mode: number, gid: number): void {
  const stamp = '..2026_12_07_00_00_00.000000001'
  mkdirSync(join(dir, stamp))
  for (const [path, bytes] of Object.entries(files)) {
    const file = join(dir, stamp, path)
    mkdirSync(dirname(file), { recursive: true })
    writeFileSync(file, bytes)
    chownSync(file, 0, gid)
    chmodSync(file, mode)
  }
  symlinkSync(stamp, join(dir, '..data'))
  for (const path of Object.keys(files)) symlinkSync(join('..data', path), join(dir, path))
}

export function startPod(opts: {
  workload: Obj
  container: string
  image: Image
  objects: Objects
  /** Names resolved to 127.0.0.1 in the pod's /etc/hosts (the Services it dials). */
  hosts: readonly string[]
  /** A pod's network namespace to join; null: a new one. */
  net: string | null
}): Pod {
  const { workload, image, objects } = opts
  const spec = workload.spec.template.spec as Obj
  const c = (spec.containers as Obj[]).find((x) => x.name === opts.container)
  if (c === undefined) throw new Error(`no container ${opts.container} in ${workload.metadata.name}`)
  if (c.command !== undefined)
    throw new Error('the container overrides the entrypoint; startPod runs the image one')
  const uid = c.securityContext?.runAsUser ?? spec.securityContext?.runAsUser
  const gid = c.securityContext?.runAsGroup ?? spec.securityContext?.runAsGroup ?? uid
  const fsGroup = spec.securityContext?.fsGroup ?? gid
  if (typeof uid !== 'number') throw new Error(`${opts.container}: no runAsUser`)
  const base = mkdtempSync(join(tmpdir(), `veer-pod-${workload.metadata.name}-`))
  const root = join(base, 'root')
  mkdirSync(root)
  const etc = join(base, 'etc')
  mkdirSync(etc)
  writeFileSync(join(etc, 'hosts'), `127.0.0.1 localhost ${opts.hosts.join(' ')}\n::1 localhost\n`)
  writeFileSync(join(etc, 'passwd'), `root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n`)
  writeFileSync(join(etc, 'group'), 'root:x:0:\nnode:x:1000:\n')
  writeFileSync(join(etc, 'nsswitch.conf'), 'passwd: files\ngroup: files\nhosts: files dns\n')
  const sh: string[] = ['set -eu', `R=${q(root)}`, 'mount -t tmpfs -o mode=0755 tmpfs "$R"']
  const bindRo = (src: string, dst: string, file = false) => {
    sh.push(file ? `mkdir -p "$(dirname "$R"${q(dst)})"; touch "$R"${q(dst)}` : `mkdir -p "$R"${q(dst)}`)
    sh.push(`mount --bind ${q(src)} "$R"${q(dst)}`, `mount -o remount,bind,ro "$R"${q(dst)}`)
  }
  sh.push('mkdir -p "$R/usr" "$R/dev" "$R/proc" "$R/etc" "$R/tmp"')
  for (const l of ['bin', 'lib', 'lib64', 'sbin']) sh.push(`ln -s usr/${l} "$R/${l}"`)
  bindRo('/usr', '/usr')
  // The image's Node: /usr/local/bin/node (the host's /usr/local is hidden, as the image has its own).
  sh.push('mount -t tmpfs -o mode=0755 tmpfs "$R/usr/local"', 'mkdir -p "$R/usr/local/bin"')
  bindRo(realpathSync(process.execPath), '/usr/local/bin/node', true)
  sh.push('mount -o remount,ro "$R/usr/local"')
  sh.push('mount --rbind /dev "$R/dev"', 'mount --rbind /proc "$R/proc"', `cp -a ${q(etc)}/. "$R/etc/"`)
  for (const [path, src] of image.files) bindRo(src, path, !statSync(src).isDirectory())
  const volumes = new Map<string, Obj>((spec.volumes ?? []).map((v: Obj) => [v.name, v]))
  const templates = new Set<string>(
    (workload.spec.volumeClaimTemplates ?? []).map((t: Obj) => t.metadata.name as string),
  )
  const claims = new Map<string, string>()
  for (const m of (c.volumeMounts ?? []) as Obj[]) {
    if (m.subPath !== undefined) throw new Error(`${m.name}: subPath is not emulated`)
    const v = volumes.get(m.name)
    const dir = join(base, `vol-${m.name}`)
    if (v?.emptyDir !== undefined) {
      const size =
        v.emptyDir.sizeLimit === undefined ? '' : `,size=${String(v.emptyDir.sizeLimit).replace(/i$/, '')}`
      sh.push(
        `mkdir -p "$R"${q(m.mountPath)}`,
        `mount -t tmpfs -o mode=0777${size} tmpfs "$R"${q(m.mountPath)}`,
      )
      continue
    }
    if (v === undefined && templates.has(m.name)) {
      mkdirSync(dir)
      chownSync(dir, 0, fsGroup)
      chmodSync(dir, 0o2775)
      claims.set(m.name, dir)
    } else if (v?.secret !== undefined || v?.configMap !== undefined) {
      const kind = v.secret !== undefined ? 'Secret' : 'ConfigMap'
      const source = v.secret ?? v.configMap
      const name = v.secret?.secretName ?? v.configMap.name
      const obj = objects.get(`${kind}/${name}`)
      if (obj === undefined) throw new Error(`volume ${m.name}: no ${kind} ${name} in the cluster`)
      const items: Obj[] = source.items ?? Object.keys(obj.data).map((key) => ({ key, path: key }))
      const files: Record<string, Buffer> = {}
      for (const item of items) {
        const bytes = obj.data[item.key]
        if (bytes === undefined) throw new Error(`volume ${m.name}: ${kind} ${name} has no key ${item.key}`)
        files[item.path] = bytes
      }
      mkdirSync(dir)
      projected(dir, files, source.defaultMode ?? 0o644, fsGroup)
    } else throw new Error(`volume ${m.name}: this kind of volume is not emulated`)
    sh.push(`mkdir -p "$R"${q(m.mountPath)}`, `mount --bind ${q(dir)} "$R"${q(m.mountPath)}`)
    if (m.readOnly === true) sh.push(`mount -o remount,bind,ro "$R"${q(m.mountPath)}`)
  }
  if (c.securityContext?.readOnlyRootFilesystem === true) sh.push('mount -o remount,ro "$R"')
  if (opts.net === null) sh.push('ip link set lo up')
  const env: string[] = [`PATH=${IMAGE_PATH}`]
  for (const [k, v] of Object.entries(image.env)) env.push(`${k}=${v}`)
  for (const e of (c.env ?? []) as Obj[]) {
    if (typeof e.value !== 'string') throw new Error(`env ${e.name}: only plain values are emulated`)
    env.push(`${e.name}=${e.value}`)
  }
  const dropAll = (c.securityContext?.capabilities?.drop ?? []).includes('ALL')
  const argv = [
    'chroot',
    '"$R"',
    '/usr/bin/setpriv',
    `--reuid=${uid}`,
    `--regid=${gid}`,
    `--groups=${fsGroup}`,
    ...(dropAll ? ['--inh-caps=-all', '--bounding-set=-all'] : []),
    ...(c.securityContext?.allowPrivilegeEscalation === false ? ['--no-new-privs'] : []),
    '--',
    '/usr/bin/env',
    '-i',
    '-C',
    q(image.workdir),
    ...env.map(q),
    ...image.entrypoint.map(q),
    ...((c.args ?? []) as string[]).map(q),
  ]
  sh.push(`exec ${argv.join(' ')}`)
  const unshare = ['unshare', '--mount', '--propagation', 'private', ...(opts.net === null ? ['--net'] : [])]
  const command = opts.net === null ? unshare : ['nsenter', `--net=${opts.net}`, '--', ...unshare]
  const proc = spawnLogged(command[0]!, [...command.slice(1), 'bash', '-c', sh.join('\n')], {})
  // Every step execs the next, so the pid is the container's process (and its namespaces').
  return { proc, net: opts.net ?? `/proc/${proc.child.pid}/ns/net`, claims, dir: base }
}

/** Run a command in a pod's network namespace (as the kubelet's probes reach the pod). */
export async function inNet(net: string, command: string, args: string[]): Promise<string> {
  const { stdout } = await run('nsenter', [`--net=${net}`, '--', command, ...args])
  return stdout
}

/** Run a command as `uid` inside the pod's filesystem (its mount namespace and root): its exit and stderr. */
export async function inPod(
  proc: LoggedProcess,
  uid: number,
  argv: readonly string[],
): Promise<{ ok: boolean; stderr: string }> {
  try {
    await run('nsenter', [
      `--target=${proc.child.pid}`,
      '--mount',
      '--root',
      '--',
      '/usr/bin/setpriv',
      `--reuid=${uid}`,
      `--regid=${uid}`,
      '--clear-groups',
      ...argv,
    ])
    return { ok: true, stderr: '' }
  } catch (err) {
    return { ok: false, stderr: String((err as { stderr?: string }).stderr ?? err).trim() }
  }
}

/** Try to create `file` as `uid` inside the pod's filesystem: null when it could, else the error. */
export async function writeAs(proc: LoggedProcess, uid: number, file: string): Promise<string | null> {
  const r = await inPod(proc, uid, ['/usr/bin/touch', file])
  return r.ok ? null : r.stderr
}
