#!/usr/bin/env node
// veer's command line. It runs the compiled build in dist/ (`npm run build`; packed packages ship it) when that
// exists, else the TypeScript sources through Node's built-in type stripping (Node >= 22.18), so an older Node
// gets one clear line instead of a syntax error. The build idles ~27 MiB smaller than type stripping.
// VEER_SOURCE=ts forces the TypeScript sources (tests, or editing with a stale dist/ around).
import { existsSync } from 'node:fs'

const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 19)) {
  process.stderr.write(
    `veer: needs Node.js >= 22.19 (this is ${process.versions.node}); run it through npm (npm run, npx) so the project's Node 24 is used\n`,
  )
  process.exit(2)
}
const built = new URL('../dist/cli/main.js', import.meta.url)
const useBuild = process.env.VEER_SOURCE !== 'ts' && existsSync(built)
const { main } = await import(useBuild ? built.href : '../cli/main.ts')
await main(process.argv.slice(2))
