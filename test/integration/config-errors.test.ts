/**
 * Bad flags and configs: `veer proxy` exits non-zero with one line per problem on stderr, naming the flag
 * or field and how to fix it, and starts nothing (its listen and admin ports stay free).
 */
import { writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { deadPort } from '../helpers/upstream.ts'
import { type RunResult, runVeer, writeConfig } from '../helpers/veer.ts'

const STABLE = 'http://127.0.0.1:3000'
let holders: Server[] = []

afterEach(async () => {
  await Promise.all(holders.map((s) => new Promise((r) => s.close(r))))
  holders = []
})

/** Resolves true when something accepts a TCP connection on the port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer()
    probe.once('error', () => resolve(true))
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(false)))
  })
}

async function hold(): Promise<number> {
  const server = createServer()
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  holders.push(server)
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  return address.port
}

/** Run `veer proxy ARGS` on two free ports; checks the ports stay free and nothing said it started. */
async function proxyFails(args: string[]): Promise<RunResult & { lines: string[] }> {
  const port = await deadPort()
  const adminPort = await deadPort()
  const withPorts = [...args]
  if (!args.includes('--listen')) withPorts.push('--listen', `127.0.0.1:${port}`)
  if (!args.includes('--admin')) withPorts.push('--admin', `127.0.0.1:${adminPort}`)
  const result = await runVeer(['proxy', ...withPorts])
  expect(result.code, `stderr: ${result.stderr}`).not.toBe(0)
  expect(result.stdout).not.toContain('veer proxy started')
  expect(await listening(port)).toBe(false)
  expect(await listening(adminPort)).toBe(false)
  const lines = result.stderr.split('\n').filter((l) => l !== '')
  for (const line of lines) expect(line).toMatch(/^veer proxy: /)
  return { ...result, lines }
}

/** Exactly one line that matches every pattern. */
async function oneLine(args: string[], ...patterns: RegExp[]): Promise<string> {
  const { lines } = await proxyFails(args)
  expect(lines, lines.join('\n')).toHaveLength(1)
  for (const p of patterns) expect(lines[0]).toMatch(p)
  return lines[0]!
}

const route = (extra: Record<string, unknown> = {}) => ({ name: 'api', stable: { url: STABLE }, ...extra })

describe('veer proxy flags', () => {
  it('--help exits 0 and lists every flag', async () => {
    const result = await runVeer(['proxy', '--help'])
    expect(result.code).toBe(0)
    expect(result.stderr).toBe('')
    for (const flag of [
      '--config',
      '--listen',
      '--admin',
      '--stable',
      '--canary',
      '--canary-weight',
      '--shadow',
      '--shadow-percent',
      '--sticky-header',
      '--allow-override',
      '--control',
    ]) {
      expect(result.stdout).toContain(flag)
    }
  })

  it('an unknown flag names it and points at --help', async () => {
    await oneLine(['--stable', STABLE, '--canary-wieght', '5'], /--canary-wieght/, /--help/)
  })

  it('--canary-weight 150 is out of range', async () => {
    await oneLine(
      ['--stable', STABLE, '--canary', STABLE, '--canary-weight', '150'],
      /--canary-weight/,
      /0 to 100/,
      /150/,
    )
  })

  it('--canary-weight abc is not a number', async () => {
    await oneLine(
      ['--stable', STABLE, '--canary', STABLE, '--canary-weight', 'abc'],
      /--canary-weight/,
      /whole number/,
      /"abc"/,
    )
  })

  it('--stable not-a-url asks for a URL', async () => {
    await oneLine(['--stable', 'not-a-url'], /--stable/, /URL such as http:\/\//, /not-a-url/)
  })

  it('a missing --stable says it is required', async () => {
    await oneLine(['--canary', STABLE], /--stable is required/, /--config/)
  })

  it('--canary-weight above 0 without --canary asks for --canary', async () => {
    await oneLine(['--stable', STABLE, '--canary-weight', '5'], /--canary-weight/, /add --canary URL/)
  })

  it('a traffic address in use: non-zero exit, one line naming --listen', async () => {
    const busy = await hold()
    await oneLine(
      ['--stable', STABLE, '--listen', `127.0.0.1:${busy}`],
      /--listen/,
      /EADDRINUSE/,
      /free address/,
    )
  })

  it('an admin address in use: one line naming --admin, and the traffic port is released', async () => {
    const busy = await hold()
    // proxyFails checks that the (free) traffic port it picked is not left bound.
    await oneLine(['--stable', STABLE, '--admin', `127.0.0.1:${busy}`], /--admin/, /EADDRINUSE/)
  })
})

describe('veer proxy --config', () => {
  it('a missing file names --config and the path', async () => {
    await oneLine(
      ['--config', '/nonexistent/veer.yaml'],
      /--config/,
      /\/nonexistent\/veer\.yaml/,
      /no such file/,
    )
  })

  it('a YAML syntax error names the file and the line', async () => {
    const file = writeConfig({})
    writeFileSync(file, `routes:\n  - name: api\n    stable: { url: ${STABLE}\n`)
    await oneLine(
      ['--config', file],
      new RegExp(file.replace(/[.]/g, '\\.')),
      /not valid YAML at line \d+, column \d+/,
    )
  })

  it('an unknown key in a route (a typo) names its path and the allowed keys', async () => {
    const file = writeConfig({ routes: [route({ canaryWieght: 5 })] })
    await oneLine(
      ['--config', file],
      /routes\[0\]\.canaryWieght is not a known setting/,
      /allowed here: .*canaryWeight/,
    )
  })

  it('a duration without its unit names the field and the fix, never taken as milliseconds', async () => {
    const file = writeConfig({ routes: [route({ timeouts: { headers: 30 } })] })
    await oneLine(
      ['--config', file],
      /routes\[0\]\.timeouts\.headers/,
      /has no unit; write "30s" \(or 30ms, 30m, 30h\)/,
    )
  })

  it('two routes with the same name', async () => {
    const file = writeConfig({ routes: [route(), route({ match: { pathPrefix: '/v2' } })] })
    await oneLine(['--config', file], /routes\[1\]\.name/, /repeats the name of routes\[0\]/, /own name/)
  })

  it('canaryWeight above 0 without a canary', async () => {
    const file = writeConfig({ routes: [route({ canaryWeight: 10 })] })
    await oneLine(
      ['--config', file],
      /routes\[0\]\.canaryWeight/,
      /no canary/,
      /add canary\.url or set canaryWeight to 0/,
    )
  })

  it('reports every problem of a config at once, one line each', async () => {
    const file = writeConfig({
      trustedHops: -1,
      routes: [
        route({ canaryWeight: 150, stabel: { url: STABLE } }),
        { name: 'web', stable: { url: 'ftp://example.com' } },
      ],
    })
    const { lines } = await proxyFails(['--config', file])
    const fields = lines.map((l) => l.replace(/^veer proxy: /, '').split(' ')[0])
    expect(fields.sort()).toEqual([
      'routes[0].canaryWeight',
      'routes[0].stabel',
      'routes[1].stable.url',
      'trustedHops',
    ])
  })
})
