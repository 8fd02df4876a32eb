// The memory defaults `veer proxy` runs node with (README "Memory"), as bin/veer.js applies them and
// bench/soak.ts gives a bare node:http server to compare with. See bin/veer.js for why each is there.

/**
 * What is missing from `given` (NODE_OPTIONS and node's own command line, as one string) and `env`:
 * the V8 flags to add to node's command line, and whether MALLOC_ARENA_MAX=1 goes into the environment.
 */
export function missingMemoryDefaults(given, env, platform) {
  const flags = []
  if (!/--(max|min)-semi-space-size|--semi-space-growth-factor/.test(given))
    flags.push('--max-semi-space-size=4')
  // Not V8's --heap-growing-percent=30 (a default from 2026-12-07 to 12-08): it kept the soak's anonymous
  // memory at ~61 MiB instead of ~85, but it cost 20–40% more CPU per call under HTTP/2 and gRPC load (a
  // full GC every ~8 MiB promoted: README "Memory").
  const arena = platform === 'linux' && env.MALLOC_ARENA_MAX === undefined
  return { flags, arena }
}
