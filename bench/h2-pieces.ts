// What the HTTP/2 benches (h2.ts, h2-profile.ts, alloc.ts) share: the node:http2 h2c upstream process and
// the gRPC unary request they all send.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { freePort, LOAD_CORE, type Managed, startProcess, waitReady } from './proc.ts'

export const GRPC_PATH = '/bench.Echo/Unary'
/** h2load's `-H` fields of the gRPC request. */
export const GRPC_HEADERS: readonly string[] = ['content-type: application/grpc', 'te: trailers']
const message = Buffer.from('bench request 16')
/** Its body: one message frame (flag 0, 4-byte big-endian length, 16 opaque bytes). */
export const GRPC_BODY: Buffer = Buffer.concat([Buffer.from([0, 0, 0, 0, message.length]), message])

/** GRPC_BODY as the file h2load's `-d` sends; returns its path. */
export function writeGrpcBody(dir: string): string {
  const file = join(dir, 'grpc-request.bin')
  writeFileSync(file, GRPC_BODY)
  return file
}

/** bench/h2-upstream.ts on the load core (answers name `name`). */
export async function startH2Upstream(
  root: string,
  tmpDir: string,
  name = 'stable',
): Promise<{ port: number; proc: Managed }> {
  const port = await freePort()
  const proc = startProcess(
    `h2-upstream-${name}`,
    process.execPath,
    [join(root, 'bench/h2-upstream.ts'), String(port), name],
    { core: LOAD_CORE, logPath: join(tmpDir, `h2-upstream-${name}.log`) },
  )
  await waitReady(proc, port, 10_000)
  return { port, proc }
}
