/** Writes config/veer.schema.json from schema.ts: `npm run schema`. A test keeps the file in step. */
import { writeFileSync } from 'node:fs'
import { configJsonSchema } from './json-schema.ts'

const out = new URL('./veer.schema.json', import.meta.url)
writeFileSync(out, `${JSON.stringify(configJsonSchema(), null, 2)}\n`)
console.log(`wrote ${out.pathname}`)
