/**
 * A full disk (a small tmpfs as the state dir): writes get 503 storage_failed with Retry-After and
 * change nothing, reads and /healthz keep answering, nothing acknowledged is lost, and control writes
 * again by itself once space returns. A refused call keeps its 401 or 403 (never 503) and is audited once
 * space returns. Needs root to mount the tmpfs (CI runs as root); skipped otherwise.
 */
import { execFileSync } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { announced, type ControlProcess, FakeProxy, startControl, TOKENS } from '../helpers/control.ts'

function mountTmpfs(): string | null {
  const dir = mkdtempSync(join(tmpdir(), 'veer-full-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { stdio: 'ignore' })
    return dir
  } catch {
    rmSync(dir, { recursive: true, force: true })
    return null
  }
}

const probe = mountTmpfs()
if (probe !== null) execFileSync('umount', [probe])

let cleanup: (() => void)[] = []
afterEach(async () => {
  for (const f of cleanup.reverse()) f()
  cleanup = []
})

/** Write to `file` until the filesystem refuses: the disk is full. */
function fill(file: string): void {
  const fd = openSync(file, 'w')
  const chunk = Buffer.alloc(4096, 120)
  try {
    for (;;) writeSync(fd, chunk)
  } catch (err) {
    expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC')
  } finally {
    closeSync(fd)
  }
}

describe.skipIf(probe === null)('a full disk under control', () => {
  it('writes get 503 and change nothing, reads go on, and writes work again when space returns', async () => {
    const dir = mountTmpfs()!
    cleanup.push(() => execFileSync('umount', ['-l', dir]))
    let control: ControlProcess | null = await startControl({ stateDir: join(dir, 'state') })
    cleanup.push(() => void control?.stop('SIGKILL'))
    await new FakeProxy(control, 'edge-1', [announced('shop', 0)]).register()
    expect((await control.api('PUT', '/v1/routes/shop/weights', { body: { canary: 5 } })).status).toBe(200)
    const auditBefore = readFileSync(join(dir, 'state', 'audit.log'))

    fill(join(dir, 'filler'))
    const metrics = (await control.api('GET', '/metrics')).text
    expect(metrics).toMatch(/veer_control_state_free_bytes \d/)
    expect(metrics).toMatch(/veer_control_state_bytes [1-9]\d*/)
    for (let i = 0; i < 3; i++) {
      // A big reason, so the audit line cannot fit into what little space is left.
      const r = await control.api('PUT', '/v1/routes/shop/weights', {
        body: { canary: 50, reason: 'x'.repeat(8000) },
      })
      expect(r.status).toBe(503)
      expect(r.json.error).toBe('storage_failed')
      expect(r.headers.get('retry-after')).toBe('5')
    }
    const failed = (await control.api('GET', '/metrics')).text
    expect(failed).toContain('veer_control_storage_errors_total{code="ENOSPC"} 3')
    // Nothing of the refused writes is on disk or shown; reads and health answer.
    expect(readFileSync(join(dir, 'state', 'audit.log')).equals(auditBefore)).toBe(true)
    const route = await control.api('GET', '/v1/routes/shop')
    expect([route.status, route.json.weights.canary]).toEqual([200, 5])
    expect((await control.api('GET', '/healthz')).status).toBe(200)
    expect((await control.api('GET', '/v1/audit?limit=5')).status).toBe(200)

    rmSync(join(dir, 'filler'))
    const again = await control.api('PUT', '/v1/routes/shop/weights', { body: { canary: 7 } })
    expect(again.status).toBe(200)

    // What was acknowledged survives kill -9, and the two files agree.
    control.child.kill('SIGKILL')
    await control.exited
    control = await startControl({ stateDir: join(dir, 'state'), tokenFile: control.tokenFile })
    const after = await control.api('GET', '/v1/routes/shop')
    expect(after.json.weights.canary).toBe(7)
    const weights = (await control.api('GET', '/v1/audit?limit=100&action=set-weight')).json.entries
    expect(weights.map((e: { to: { canary: number } }) => e.to.canary)).toEqual([5, 7])
  })

  it('a refused call still gets its 401 or 403, and is audited once space returns', async () => {
    const dir = mountTmpfs()!
    cleanup.push(() => execFileSync('umount', ['-l', dir]))
    const control = await startControl({ stateDir: join(dir, 'state') })
    cleanup.push(() => void control.stop('SIGKILL'))
    await new FakeProxy(control, 'edge-1', [announced('shop', 0)]).register()
    const auditBefore = readFileSync(join(dir, 'state', 'audit.log'))

    fill(join(dir, 'filler'))
    // A long path, so the refusal's audit line (which holds it) cannot fit into what little space is left.
    const long = 'x'.repeat(8000)
    const unauthenticated = await control.api('GET', `/v1/routes/${long}`, { token: null })
    expect([unauthenticated.status, unauthenticated.json.error]).toEqual([401, 'unauthorized'])
    const forbidden = await control.api('PUT', `/v1/routes/${long}/weights`, {
      token: TOKENS.read,
      body: { canary: 50 },
    })
    expect([forbidden.status, forbidden.json.error]).toEqual([403, 'forbidden'])
    expect(readFileSync(join(dir, 'state', 'audit.log')).equals(auditBefore)).toBe(true)
    await control.waitForLog((l) => String(l.msg).startsWith('refused call not audited yet'))

    // Counted, and written when the interval ends (here: the stop) once there is space.
    rmSync(join(dir, 'filler'))
    expect(await control.stop('SIGTERM')).toBe(0)
    const denied = readFileSync(join(dir, 'state', 'audit.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
      .filter((e) => e.action === 'denied')
    expect(denied.map((e) => [e.who, e.to.slice(0, 14), e.count])).toEqual([
      ['unauthenticated', 'GET /v1/routes', 1],
      ['dashboard', 'PUT /v1/routes', 1],
    ])
  })
})
