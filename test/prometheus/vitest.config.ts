import { suiteConfig } from '../helpers/suite-config.ts'

/**
 * `npm run test:prometheus`: tests against a real Prometheus and its `promtool` (Debian's
 * `prometheus`): analysis checks by PromQL, the alert rules and the dashboard's queries.
 */
export default suiteConfig('prometheus', 2)
