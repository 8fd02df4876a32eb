// haproxy as an HTTP/2 reverse proxy (the C reference of bench/h2.ts): one thread, h2c with prior knowledge
// on both sides (`proto h2`), connections to the upstream reused, no logs. It runs in the foreground
// (`-db`), so the harness owns, pins and stops it like the other proxies.
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** Write the config for one round; returns its path. */
export function writeHaproxyConfig(dir: string, listenPort: number, upstreamPort: number): string {
  mkdirSync(dir, { recursive: true })
  const conf = join(dir, 'haproxy.cfg')
  writeFileSync(
    conf,
    `# written by bench/haproxy.ts for one benchmark round
global
  nbthread 1
  maxconn 4000

defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  http-reuse always

frontend traffic
  bind 127.0.0.1:${listenPort} proto h2
  default_backend stable

backend stable
  server s 127.0.0.1:${upstreamPort} proto h2
`,
  )
  return conf
}
