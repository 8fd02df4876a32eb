/**
 * Start-up and per-connection memory of `veer proxy` against a bare node:http server (issue 18, README
 * "Memory"): `node bench/idle-memory.ts VEER_ROOT [CONNECTIONS]`, VEER_ROOT a compiled copy (bin/veer.js,
 * dist/; `npm run build`, or the soak's temp app). Each subject starts fresh with bin/veer.js's memory
 * defaults; 3 s after /readyz its idle RssAnon and heap used are read, then after 20 warm-up requests, then
 * with CONNECTIONS (default 1000) keep-alive connections open, one request answered on each.
 */
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { freePort, rssParts, startProcess, stopAll, waitReady } from './proc.ts'

const root = process.argv[2]
if (root === undefined) throw new Error('usage: node bench/idle-memory.ts VEER_ROOT [CONNECTIONS]')
const n = Number(process.argv[3] ?? 1000)
const baseline = new URL('./baselines/node-http.mjs', import.meta.url).pathname
const env = { ...process.env }
delete env.NODE_OPTIONS
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** `count` connections, 50 at a time, each once answered. */
async function open(port: number, count: number, into: Socket[]): Promise<void> {
  for (let i = 0; i < count; i += 50) {
    const batch = Array.from({ length: Math.min(50, count - i) }, () => {
      const s = connect(port, '127.0.0.1', () => s.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n'))
      into.push(s)
      return new Promise<void>((ok, fail) => s.once('data', () => ok()).once('error', fail))
    })
    await Promise.all(batch)
  }
}

async function heapUsed(admin: number | null): Promise<number> {
  if (admin === null) return Number.NaN
  const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text()
  return Number(/^nodejs_heap_size_used_bytes (\S+)/m.exec(text)?.[1]) / 2 ** 20
}

async function measure(name: string, pid: number, port: number, admin: number | null): Promise<void> {
  const sockets: Socket[] = []
  await pause(3000)
  const idle = [rssParts(pid).anon / 1024, await heapUsed(admin)]
  await open(port, 20, sockets)
  await pause(2000)
  const warm = [rssParts(pid).anon / 1024, await heapUsed(admin)]
  await open(port, n, sockets)
  await pause(3000)
  const held = [rssParts(pid).anon / 1024, await heapUsed(admin)]
  const per = (i: number) => (((held[i]! - warm[i]!) * 1024) / n).toFixed(1)
  const f = (x: number) => x.toFixed(1)
  process.stdout.write(
    `${name}: idle anon ${f(idle[0]!)} MiB heap used ${f(idle[1]!)} MiB; warm anon ${f(warm[0]!)} heap ${f(warm[1]!)}; ` +
      `${n} connections anon ${f(held[0]!)} (+${per(0)} KiB/conn) heap ${f(held[1]!)} (+${per(1)} KiB/conn)\n`,
  )
  for (const s of sockets) s.destroy()
}

try {
  const up = await freePort()
  const upstream = startProcess('upstream', process.execPath, [baseline, String(up)], {
    core: null,
    logPath: '/tmp/idle-memory-upstream.log',
  })
  await waitReady(upstream, up, 10_000)
  const port = await freePort()
  const bare = startProcess('node-http', process.execPath, [baseline, String(port)], {
    core: null,
    logPath: '/tmp/idle-memory-node-http.log',
    env: { ...env, MALLOC_ARENA_MAX: '1' },
  })
  await waitReady(bare, port, 10_000)
  await measure('node-http', bare.pid, port, null)
  const [listen, admin] = [await freePort(), await freePort()]
  const args = ['proxy', '--listen', `127.0.0.1:${listen}`, '--admin', `127.0.0.1:${admin}`]
  const veer = startProcess(
    'veer',
    process.execPath,
    [join(root, 'bin/veer.js'), ...args, '--stable', `http://127.0.0.1:${up}`],
    { core: null, logPath: '/tmp/idle-memory-veer.log', env, cwd: root },
  )
  await waitReady(veer, admin, 20_000, `http://127.0.0.1:${admin}/readyz`)
  await measure('veer', veer.pid, listen, admin)
} finally {
  await stopAll()
}
