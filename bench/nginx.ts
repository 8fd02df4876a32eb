// nginx as a reverse proxy (the C reference): one worker, keep-alive to the upstream, no access log.
// What it writes (pid, temp files) stays in its own directory under the harness's temporary directory,
// its error log goes to stderr (the harness's log file for it); it runs in the foreground (`daemon off`)
// so the harness owns, pins and stops it like the other proxies.
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
  const temp = (name: string) => join(dir, name)
  writeFileSync(
    conf,
    `# written by bench/nginx.ts for one benchmark round
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
