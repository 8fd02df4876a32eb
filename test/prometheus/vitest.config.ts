import { defineConfig } from 'vitest/config'

/**
 * `npm run test:prometheus`: tests against a real Prometheus and its `promtool` (Debian's
 * `prometheus`): analysis checks by PromQL, the alert rules and the dashboard's queries.
 */
export default defineConfig({
  test: {
    include: ['test/prometheus/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default', 'json'],
    outputFile: { json: '.vitest-prometheus.json' },
    env: { VEER_SOURCE: 'ts' },
  },
})
