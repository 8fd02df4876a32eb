/** The README's config reference, rendered from schema.ts (so the two cannot drift; a test checks). */
import { configField } from './schema.ts'

type Json = Record<string, unknown>

function typeOf(node: Json): string {
  if (node.format === 'duration') return 'duration'
  if (Array.isArray(node.enum)) return (node.enum as string[]).join(' \\| ')
  if (node.type === 'integer' || node.type === 'number')
    return `${node.type} ${node.minimum}..${node.maximum}`
  if (node.type === 'array') return 'list'
  return String(node.type)
}

function rows(node: Json, path: string, out: string[]): void {
  const props = node.properties as Record<string, Json> | undefined
  const required = new Set((node.required as string[] | undefined) ?? [])
  for (const [key, child] of Object.entries(props ?? {})) {
    const p = path ? `${path}.${key}` : key
    if (child.type === 'array') {
      const dflt =
        required.has(key) || (child.minItems as number) > 0
          ? 'required'
          : `\`${JSON.stringify(child.default ?? [])}\``
      out.push(`| \`${p}\` | list | ${dflt} | ${child.description} |`)
      rows(child.items as Json, `${p}[]`, out)
      continue
    }
    if (child.type === 'object') {
      rows(child, p, out)
      continue
    }
    const dflt = required.has(key)
      ? 'required'
      : child.default === undefined
        ? '—'
        : `\`${JSON.stringify(child.default)}\``
    out.push(`| \`${p}\` | ${typeOf(child)} | ${dflt} | ${String(child.description).replace(/\|/g, '\\|')} |`)
  }
}

export function configTable(): string {
  const out = ['| key | type | default | meaning |', '|---|---|---|---|']
  rows(configField.json, '', out)
  return out.join('\n')
}

export const TABLE_START = '<!-- config-table:start (npm run schema) -->'
export const TABLE_END = '<!-- config-table:end -->'

/** README text with the table between the markers replaced by the current one. */
export function withConfigTable(readme: string): string {
  const a = readme.indexOf(TABLE_START)
  const b = readme.indexOf(TABLE_END)
  if (a === -1 || b === -1) throw new Error('README.md lacks the config-table markers')
  return `${readme.slice(0, a + TABLE_START.length)}\n${configTable()}\n${readme.slice(b)}`
}
