// Microbenchmarks of the proxy's pure hot functions: `npm run bench:micro`
// (vitest bench --run --config bench/micro/vitest.config.ts). Only bench/micro is included, and only as
// benchmarks, so `npm test` (the root config) never picks these files up.
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

export default defineConfig({
  root: fileURLToPath(new URL('../..', import.meta.url)),
  test: {
    include: [],
    passWithNoTests: true,
    benchmark: {
      include: ['bench/micro/**/*.bench.ts'],
    },
    pool: 'forks',
    experimental: {
      // Native import, as the proxy runs: Vite's module runner turns every imported binding into a
      // getter call (even pick.ts's call of stickyHash), which would be timed as part of each function.
      viteModuleRunner: false,
    },
  },
})
