import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Suites that need Debian's chromium, prometheus or etcd run by their own scripts (test:browser, test:prometheus, test:etcd).
    exclude: ['test/browser/**', 'test/prometheus/**', 'test/etcd/**', '**/node_modules/**'],
    // Integration tests start real processes and sockets; two cores run two files at a time.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 30_000,
    // The JSON report is what .ci/run counts for its closing "tests: N passed, N failed" line.
    reporters: ['default', 'json'],
    outputFile: { json: '.vitest-results.json' },
    hookTimeout: 30_000,
    // Tests run the sources, never a dist/ build that may be older than them (bin/veer.js prefers dist/).
    env: { VEER_SOURCE: 'ts' },
  },
})
