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
  // NODE_OPTIONS cannot carry this one: only node's command line can.
  if (!/--heap-growing-percent/.test(given)) flags.push('--heap-growing-percent=30')
  const arena = platform === 'linux' && env.MALLOC_ARENA_MAX === undefined
  return { flags, arena }
}
