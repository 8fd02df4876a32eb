/**
 * `npm run schema`: writes config/veer.schema.json and README's config table from schema.ts.
 * A unit test fails when either is out of step.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { withConfigTable } from './docs.ts'
import { configJsonSchema } from './json-schema.ts'

const schemaFile = new URL('./veer.schema.json', import.meta.url)
writeFileSync(schemaFile, `${JSON.stringify(configJsonSchema(), null, 2)}\n`)
const readmeFile = new URL('../README.md', import.meta.url)
writeFileSync(readmeFile, withConfigTable(readFileSync(readmeFile, 'utf8')))
console.log(`wrote ${schemaFile.pathname} and the config table in ${readmeFile.pathname}`)
