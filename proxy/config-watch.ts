/**
 * Watch a config file for changes. The directory is watched, not the file: editors replace files and a
 * Kubernetes ConfigMap swaps a `..data` link, both of which a watch on the file itself would miss.
 * Events are debounced (150 ms) and only a change of the file's text counts.
 */
import { type FSWatcher, watch } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { basename, dirname, resolve } from 'node:path'

export async function watchConfigFile(path: string, onChange: () => void): Promise<FSWatcher> {
  const file = resolve(path)
  let lastText = await readFile(file, 'utf8').catch(() => '')
  let timer: NodeJS.Timeout | null = null
  const watcher = watch(dirname(file), (_event, name) => {
    if (name !== null && name !== basename(file) && !name.startsWith('..')) return
    if (timer) clearTimeout(timer)
    timer = setTimeout(async () => {
      const text = await readFile(file, 'utf8').catch(() => null)
      if (text === null || text === lastText) return
      lastText = text
      onChange()
    }, 150)
  })
  watcher.unref()
  return watcher
}
