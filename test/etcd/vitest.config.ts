import { suiteConfig } from '../helpers/suite-config.ts'

/**
 * `npm run test:etcd`: control on a real etcd cluster (Debian's `etcd-server`, 1 or 3 members on unix
 * sockets, test/helpers/etcd.ts) with real control processes.
 */
export default suiteConfig('etcd', 2)
