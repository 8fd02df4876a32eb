import { spawn } from 'node:child_process'
import { connect } from 'node:net'
import { describe, expect, it } from 'vitest'

const ROOT = new URL('../../', import.meta.url).pathname

/** True when nothing accepts connections on 127.0.0.1:port any more. */
const refused = (port: number) =>
  new Promise<boolean>((resolve) => {
    const sock = connect({ host: '127.0.0.1', port })
    sock.once('connect', () => {
      sock.destroy()
      resolve(false)
    })
    sock.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'))
  })

describe('npm run demo', () => {
  it('rolls back the buggy v2 by analysis with a summary, promotes the fixed v2 to 100%, hands off to v3 at 0%, and stops', async () => {
    const t0 = Date.now()
    // On ports the kernel picks (the demo's defaults are fixed, for humans), read back from its output.
    const child = spawn(process.execPath, [`${ROOT}scripts/demo.ts`, '--once', '--ephemeral-ports'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    const code = await new Promise((resolve) => child.on('exit', resolve))
    expect(err).toBe('')
    expect(code).toBe(0)
    expect(Date.now() - t0).toBeLessThan(60_000)

    const [act1, act2] = out.split(/^act 2: /m)
    expect(act2).toBeDefined()
    // Act 1: progress lines (not a TTY: one a second), then the rollback by analysis with its reason.
    expect(act1).toMatch(/\] step 1\/4 canary 5% pausing, [\d.]+ s left \| stable \d+ req [\d.]+% err p99 /)
    expect(act1).toMatch(/ROLLED BACK by analysis [\d.]+ s after the rollout started, at step \d\/4/)
    expect(act1).toMatch(/^ {2}reason: errors: canary [\d.]+% \(\d+\/\d+\) vs stable /m)
    const figure = (name: string) => Number(act1!.match(new RegExp(`^ +${name} +(\\d+)`, 'm'))?.[1])
    expect(act1).toMatch(/time to rollback +[\d.]+ s/)
    expect(figure('canary requests')).toBeGreaterThan(0)
    expect(figure('harmed')).toBeGreaterThanOrEqual(0)
    // The GETs among the failed canary requests were answered by stable.
    expect(figure('saved by fallback')).toBeGreaterThan(0)
    // Act 2: every step passed, v2 serves 100%.
    expect(act2).toMatch(/step 4\/4 canary 100% completed/)
    expect(act2).toMatch(/PROMOTED: v2 serves 100%; the rollout completed [\d.]+ s after it started/)
    expect(act2).toMatch(/analysis +pass: /)
    expect(act2).toMatch(/users saw +0 5xx from canary/)
    // Act 3: the config makes v2 the stable and names v3: a hand-off, and v3 starts at 0%, not at 100%.
    const act3 = out.split(/^act 3: /m)[1]
    expect(act3).toMatch(/HAND-OFF recorded by control \(audit release-change, from proxy \S+\)/)
    expect(act3).toMatch(/now +stable v2 100%, canary v3 0%, route version \d+/)
    expect(act3).toMatch(/v3 got +0 requests since it started; v2 served (\d+) of the \1 in the last 2 s/)
    const url = (pattern: string) => out.match(new RegExp(`${pattern} http://127\\.0\\.0\\.1:(\\d+)`))?.[1]
    const ports = [
      url('v1 \\(stable\\)'),
      url('v2 \\(canary\\)'),
      url('v3 \\(canary\\)'),
      url('veer proxy '),
      url('\\(admin'),
      url('following veer control on'),
    ].map(Number)
    expect(
      ports.every((p) => p > 0),
      out,
    ).toBe(true)
    expect(ports.filter((p) => [8080, 9901, 9900, 3001, 3002, 3003].includes(p))).toEqual([])
    expect(out).toContain(`curl -si http://127.0.0.1:${ports[3]}/hello`)
    // The status page's address on control, and the token to sign in with.
    expect(out).toMatch(
      new RegExp(
        `status page http://127\\.0\\.0\\.1:${ports[5]}/ui/  sign in with the operator token [0-9a-f]{48}\n`,
      ),
    )
    // Everything it started is gone.
    for (const port of ports) expect(await refused(port), `port ${port}`).toBe(true)
  }, 90_000)
})
