#!/usr/bin/env node
// veer's command line. It runs the compiled build in dist/ (`npm run build`; packed packages ship it) when that
// exists, else the TypeScript sources through Node's built-in type stripping (Node >= 22.18), so an older Node
// gets one clear line instead of a syntax error. The build idles ~27 MiB smaller than type stripping.
// VEER_SOURCE=ts forces the TypeScript sources (tests, or editing with a stale dist/ around).
import { existsSync } from 'node:fs'
import { missingMemoryDefaults } from './memory-defaults.js'

const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 19)) {
  process.stderr.write(
    `veer: needs Node.js >= 22.19 (this is ${process.versions.node}); run it through npm (npm run, npx) so the project's Node 24 is used\n`,
  )
  process.exit(2)
}
// Memory defaults for `veer proxy` (README "Memory", bin/memory-defaults.js): V8's young generation capped
// at 4 MiB per semi-space (left alone, V8 grows it to 64 MiB per semi-space under load: ~100 MiB more RSS)
// and, on Linux, glibc's malloc on one arena (its per-thread arenas keep ~10 MiB more at 1,000
// connections). They only take effect when the process starts, so veer re-executes itself once
// (process.execve: same pid, same stdio) with what is missing: no semi-space flag in NODE_OPTIONS or on
// node's command line, no MALLOC_ARENA_MAX. Setting either yourself keeps yours; VEER_MEMORY_DEFAULTS=0
// runs node exactly as started.
function memoryDefaults() {
  if (process.argv[2] !== 'proxy' || process.env.VEER_MEMORY_DEFAULTS === '0') return
  // No execve (Windows), or a child with an IPC channel (a cluster worker inherits the primary's settings).
  if (typeof process.execve !== 'function' || process.send !== undefined) return
  const given = `${process.env.NODE_OPTIONS ?? ''} ${process.execArgv.join(' ')}`
  const { flags, arena } = missingMemoryDefaults(given, process.env, process.platform)
  if (flags.length === 0 && !arena) return
  const argv = [process.execPath, ...flags, ...process.execArgv, ...process.argv.slice(1)]
  process.execve(process.execPath, argv, arena ? { ...process.env, MALLOC_ARENA_MAX: '1' } : process.env)
}
memoryDefaults()

const built = new URL('../dist/cli/main.js', import.meta.url)
const useBuild = process.env.VEER_SOURCE !== 'ts' && existsSync(built)
const { main } = await import(useBuild ? built.href : '../cli/main.ts')
await main(process.argv.slice(2))
