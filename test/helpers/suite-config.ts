import { defineConfig } from 'vitest/config'

/**
 * The vitest config of a suite outside `npm test` (`npm run test:NAME`, for the suites that need a
 * Debian server): its files under test/NAME/, its own JSON report `.vitest-NAME.json`, which .ci/run
 * counts, and a minute per test and hook for the servers they start.
 */
export function suiteConfig(name: string, maxWorkers: number) {
  return defineConfig({
    test: {
      include: [`test/${name}/**/*.test.ts`],
      pool: 'forks',
      maxWorkers,
      testTimeout: 60_000,
      hookTimeout: 60_000,
      reporters: ['default', 'json'],
      outputFile: { json: `.vitest-${name}.json` },
      env: { VEER_SOURCE: 'ts' },
    },
  })
}
