/**
 * The last-known-good file, `--state-dir`/control-cache.json: control's revision and weights as this
 * proxy last applied them, so a proxy restarted while control is away comes up on them rather than on
 * its file's. Written whole to a temp file, fsynced and renamed over the old one: a crash at any moment
 * leaves the old file or the new one, never a torn one.
 */
import { constants } from 'node:fs'
import { access, mkdir, open, readFile, rename, stat } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import type { Logger } from 'pino'
import { formatIssue } from '../../config/load.ts'
import type { ProxyConfig } from '../../config/types.ts'
import { parseRevision, type Revision, withWeights } from './weights.ts'

export const CACHE_FILE = 'control-cache.json'

export class KnownGoodFile {
  readonly path: string
  readonly #temp: string
  #writing: Promise<void> = Promise.resolve()

  private constructor(dir: string) {
    this.path = join(dir, CACHE_FILE)
    this.#temp = `${this.path}.${process.pid}.tmp`
  }

  /** Creates the directory; the reason when it cannot be. */
  static async open(dir: string): Promise<KnownGoodFile | string> {
    const full = resolve(dir)
    try {
      await mkdir(full, { recursive: true })
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      return `cannot create ${full} (${e.code ?? e.message}); point --state-dir at a writable directory`
    }
    return new KnownGoodFile(full)
  }

  /**
   * What `open` would say of `dir`, without creating or writing anything (`--dry-run`): null when it
   * is, or can be made, a writable directory.
   */
  static async check(dir: string): Promise<string | null> {
    const full = resolve(dir)
    let at = full
    // The nearest existing directory on the way: `dir` itself, or the parent `mkdir -p` would start from.
    for (;;) {
      const s = await stat(at).catch((err: NodeJS.ErrnoException) => err)
      if (!(s instanceof Error)) {
        if (!s.isDirectory())
          return `cannot create ${full} (${at} is not a directory); point --state-dir at a writable directory`
        break
      }
      if (s.code !== 'ENOENT' || dirname(at) === at)
        return `cannot create ${full} (${s.code ?? s.message}); point --state-dir at a writable directory`
      at = dirname(at)
    }
    try {
      await access(at, constants.W_OK | constants.X_OK)
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      return `cannot ${at === full ? 'write in' : 'create'} ${full} (${e.code ?? e.message}); point --state-dir at a writable directory`
    }
    return null
  }

  /** The saved revision; null when there is none; the reason when the file cannot be used. */
  async read(): Promise<Revision | null | string> {
    let text: string
    try {
      text = await readFile(this.path, 'utf8')
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      return e.code === 'ENOENT' ? null : `cannot read ${this.path} (${e.code ?? e.message})`
    }
    let raw: unknown
    try {
      raw = JSON.parse(text)
    } catch {
      return `${this.path} is not valid JSON`
    }
    const parsed = parseRevision(raw)
    return typeof parsed === 'string' ? `${this.path}: ${parsed}` : parsed
  }

  /** Saves are queued, so the last one asked for is the one on disk. */
  save(value: Revision): Promise<void> {
    const text = `${JSON.stringify({ revision: value.revision, routes: value.routes, savedAt: new Date().toISOString() }, null, 2)}\n`
    const write = async () => {
      const file = await open(this.#temp, 'w', 0o600)
      try {
        await file.writeFile(text)
        await file.sync()
      } finally {
        await file.close()
      }
      await rename(this.#temp, this.path)
    }
    const done = this.#writing.then(write)
    this.#writing = done.catch(() => {})
    return done
  }
}

export interface LastKnown {
  readonly cache: KnownGoodFile
  /** The saved revision when it fits the config; null when there is none or it does not. */
  readonly known: Revision | null
  /** The config to serve from the start: the file's with the saved weights on top. */
  readonly config: ProxyConfig
}

/**
 * Opens the state dir and reads the saved weights. A file that cannot be read, or whose weights do not
 * fit this config (a route lost its canary), is logged and ignored: control sends the weights again.
 * The reason when the directory cannot be created.
 */
export async function openKnownGood(
  dir: string,
  config: ProxyConfig,
  log: Logger,
): Promise<LastKnown | string> {
  const cache = await KnownGoodFile.open(dir)
  if (typeof cache === 'string') return cache
  const read = await cache.read()
  if (read === null) return { cache, known: null, config }
  let reason = read
  if (typeof read !== 'string') {
    const fits = withWeights(config, read.routes)
    if (fits.ok) return { cache, known: read, config: fits.config }
    reason = fits.issues.map(formatIssue).join('; ')
  }
  log.warn({ file: cache.path, reason }, 'last-known-good weights ignored')
  return { cache, known: null, config }
}
