import { defineConfig } from 'vitest/config'

/**
 * `npm run test:etcd`: control on a real etcd cluster (Debian's `etcd-server`, 1 or 3 members on unix
 * sockets, test/helpers/etcd.ts) with real control processes.
 */
export default defineConfig({
  test: {
    include: ['test/etcd/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default', 'json'],
    outputFile: { json: '.vitest-etcd.json' },
    env: { VEER_SOURCE: 'ts' },
  },
})
