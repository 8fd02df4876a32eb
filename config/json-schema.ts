import { configField } from './schema.ts'

export function configJsonSchema(): Record<string, unknown> {
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: 'https://github.com/veer-proxy/veer/config/veer.schema.json',
    title: 'veer proxy configuration',
    ...configField.json,
  }
}
