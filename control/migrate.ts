/**
 * From a state dir to etcd: `veer control --state-dir DIR --export FILE` writes the state and the whole
 * audit (each line as audit.log holds it) as one JSON document; `veer control --etcd URL --import FILE`
 * checks it with the state dir's schemas and writes it under an empty prefix, audit seqs kept.
 */
import { readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { IRequestOp } from 'etcd3'
import type { Logger } from 'pino'
import { connect, type EtcdSettings, keysOf, type Meta, putAll, rangeEnd } from './etcd-store.ts'
import { checkAuditLine, checkState } from './state-schema.ts'
import { type ControlState, FORMAT_VERSION, Store, StoreError } from './store.ts'

export const EXPORT_KIND = 'veer-control-export'

export interface ExportDoc {
  readonly kind: typeof EXPORT_KIND
  readonly formatVersion: typeof FORMAT_VERSION
  readonly state: ControlState
  /** Every audit line, oldest first, with the route record a committed change left. */
  readonly audit: readonly unknown[]
}

/** Open the state dir as control does (its checks and lock), write FILE whole (temp file, rename). */
export async function exportStateDir(
  dir: string,
  file: string,
  log: Logger,
): Promise<{ routes: number; entries: number }> {
  const store = await Store.open(dir, log)
  try {
    const text = await readFile(join(dir, 'audit.log'), 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return ''
      throw err
    })
    // Store.open checked every line and cut a torn last one.
    const audit = text
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as unknown)
    const doc: ExportDoc = { kind: EXPORT_KIND, formatVersion: FORMAT_VERSION, state: store.state, audit }
    try {
      await writeFile(`${file}.tmp`, `${JSON.stringify(doc)}\n`, { mode: 0o600 })
      await rename(`${file}.tmp`, file)
    } catch (err) {
      throw new StoreError(`--export ${file}: cannot write it (${(err as NodeJS.ErrnoException).code})`)
    }
    return { routes: Object.keys(store.state.routes).length, entries: audit.length }
  } finally {
    await store.close()
  }
}

/** Check FILE whole, refuse a non-empty prefix, then write the audit, the routes and last `meta`. */
export async function importIntoEtcd(
  settings: EtcdSettings,
  file: string,
): Promise<{ routes: number; entries: number }> {
  let raw: unknown
  try {
    raw = JSON.parse(await readFile(file, 'utf8'))
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new StoreError(`--import ${file}: ${code ? `cannot read it (${code})` : 'is not valid JSON'}`)
  }
  const doc = raw as Partial<ExportDoc> | null
  if (doc?.kind !== EXPORT_KIND || doc.formatVersion !== FORMAT_VERSION || !Array.isArray(doc.audit))
    throw new StoreError(
      `--import ${file}: is not a veer control export of format ${FORMAT_VERSION}; make it with veer control --state-dir DIR --export FILE`,
    )
  const problems: string[] = []
  const state = checkState(doc.state)
  if ('problems' in state) problems.push(...state.problems.map((p) => `state.${p}`))
  let revision = 0
  doc.audit.forEach((line, i) => {
    const checked = checkAuditLine(line)
    if ('problems' in checked) problems.push(...checked.problems.map((p) => `audit[${i}]: ${p}`))
    else if (checked.value.seq !== i + 1)
      problems.push(`audit[${i}]: seq must be ${i + 1} (got ${checked.value.seq})`)
    else revision = Math.max(revision, checked.value.revision ?? 0)
  })
  if (!('problems' in state) && revision !== state.value.revision)
    problems.push(
      `state.revision: ${state.value.revision} but the audit's last change is revision ${revision}`,
    )
  if (problems.length > 0 || 'problems' in state)
    throw new StoreError(
      [...problems.slice(0, 20).map((p) => `--import ${file}: ${p}`), 'nothing was written'].join('\n'),
    )
  const keys = keysOf(settings.prefix)
  const client = connect(settings)
  try {
    let count: number
    try {
      const res = await client.kv.range(
        {
          key: Buffer.from(settings.prefix),
          range_end: rangeEnd(settings.prefix),
          count_only: true,
        },
        { deadline: Date.now() + 3000 },
      )
      count = Number(res.count)
    } catch (err) {
      throw new StoreError(
        `--etcd ${settings.endpoints.join(',')}: cannot reach etcd (${String((err as Error).message).split('. ')[0]}); check the endpoints and that etcd is running`,
      )
    }
    if (count > 0)
      throw new StoreError(
        `--import: ${settings.prefix} in etcd is not empty (${count} keys); import only into an empty prefix (etcdctl del --prefix ${settings.prefix} drops it); nothing was written`,
      )
    const put = (key: Buffer, value: unknown): IRequestOp => ({
      request_put: { key, value: Buffer.from(JSON.stringify(value)) },
    })
    const meta: Meta = { formatVersion: FORMAT_VERSION, revision, seq: doc.audit.length }
    await putAll(client, settings, [
      ...doc.audit.map((line, i) => put(keys.audit(i + 1), line)),
      ...Object.values(state.value.routes).map((r) => put(keys.route(r.name), r)),
      put(keys.meta, meta),
    ])
    return { routes: Object.keys(state.value.routes).length, entries: doc.audit.length }
  } finally {
    client.close()
  }
}
