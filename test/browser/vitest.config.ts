import { defineConfig } from 'vitest/config'

/** `npm run test:browser`: the status page in a real headless Chromium (Debian's `chromium`). */
export default defineConfig({
  test: {
    include: ['test/browser/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 1,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default', 'json'],
    outputFile: { json: '.vitest-browser.json' },
    env: { VEER_SOURCE: 'ts' },
  },
})
