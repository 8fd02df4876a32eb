import { suiteConfig } from '../helpers/suite-config.ts'

/** `npm run test:browser`: the status page in a real headless Chromium (Debian's `chromium`). */
export default suiteConfig('browser', 1)
