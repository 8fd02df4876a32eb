// nginx for the benchmark, in two roles: as a reverse proxy (the C reference subject: one worker,
// keep-alive to the upstream, no access log) and as the upstream itself (fixed answers, as outside
// harnesses use, so the upstream's cost is small and steady beside a Node upstream's).
// What it writes (pid, temp files) stays in its own directory under the harness's temporary directory,
// its error log goes to stderr (the harness's log file for it); it runs in the foreground (`daemon off`)
// so the harness owns, pins and stops it like the other processes.
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export interface NginxFiles {
  /** the -p prefix directory */
  prefix: string
  conf: string
}

export function writeNginxConfig(dir: string, listenPort: number, upstreamPort: number): NginxFiles {
  mkdirSync(dir, { recursive: true })
  // Run as root, nginx's worker drops to `nobody`: it must be able to reach its temp directories.
  chmodSync(dir, 0o755)
  const conf = join(dir, 'nginx.conf')
  writeFileSync(
    conf,
    `${preamble(dir, 'one benchmark round')}
  upstream stable {
    server 127.0.0.1:${upstreamPort};
    keepalive 64;
    keepalive_requests 1000000;
  }

  server {
    listen 127.0.0.1:${listenPort} backlog=1024;
    location / {
      proxy_pass http://stable;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`,
  )
  return { prefix: dir, conf }
}

/** The top of both configurations: one worker, its files under `dir`, no access log. */
function preamble(dir: string, what: string): string {
  const temp = (name: string) => join(dir, name)
  return `# written by bench/nginx.ts for ${what}
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 8192;
pid ${join(dir, 'nginx.pid')};
error_log stderr warn;

events {
  worker_connections 4096;
}

http {
  access_log off;
  client_body_temp_path ${temp('client_body')};
  proxy_temp_path ${temp('proxy')};
  fastcgi_temp_path ${temp('fastcgi')};
  uwsgi_temp_path ${temp('uwsgi')};
  scgi_temp_path ${temp('scgi')};
  # Node's servers do not close a keep-alive connection after N requests; nginx's default is 1000.
  keepalive_requests 1000000;
`
}

export interface NginxUpstreamServer {
  port: number
  /** sent as `x-upstream` (the probes and the canary check read it) */
  name: string
  /** named in the ~100 B body, as bench/upstream.ts does: a shadow answers byte for byte as stable */
  bodyName: string
}

/**
 * nginx as the upstream: one server per port, answering what bench/upstream.ts answers — GET /16k a
 * 16 KiB file (sendfile), anything else a fixed 100 B body (`return 200`) — with `x-upstream: NAME`.
 */
export function writeNginxUpstreamConfig(dir: string, servers: readonly NginxUpstreamServer[]): NginxFiles {
  mkdirSync(dir, { recursive: true })
  chmodSync(dir, 0o755)
  const www = join(dir, 'www')
  mkdirSync(www, { recursive: true })
  chmodSync(www, 0o755)
  writeFileSync(join(www, '16k'), Buffer.alloc(16 * 1024, 'x'), { mode: 0o644 })
  const blocks = servers.map((s) => {
    const body = smallBody(s.bodyName)
    if (body.includes("'")) throw new Error(`nginx upstream ${s.name}: body name must not contain '`)
    return `
  server {
    listen 127.0.0.1:${s.port} backlog=1024;
    default_type application/octet-stream;
    add_header x-upstream ${s.name} always;
    location = /16k {
      root ${www};
    }
    location / {
      return 200 '${body}';
    }
  }`
  })
  const conf = join(dir, 'nginx.conf')
  writeFileSync(
    conf,
    `${preamble(dir, 'the benchmark upstream')}  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65s;
  etag off;
${blocks.join('\n')}
}
`,
  )
  return { prefix: dir, conf }
}

/** The ~100 B JSON body bench/upstream.ts answers, naming `bodyName`. */
export function smallBody(bodyName: string): string {
  return `${`{"upstream":${JSON.stringify(bodyName)},"ok":true,"pad":"`.padEnd(98, '.')}"}`
}
