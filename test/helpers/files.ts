import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** Write text to veer.yaml in a fresh temp dir; returns the path. */
export function writeConfigText(text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'veer-unit-')), 'veer.yaml')
  writeFileSync(file, text)
  return file
}
