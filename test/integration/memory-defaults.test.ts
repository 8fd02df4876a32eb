/**
 * bin/veer.js's memory defaults for `veer proxy` (README "Memory"): it re-executes itself once, same pid,
 * with V8's young generation capped (--max-semi-space-size=4) and glibc's malloc on one arena
 * (MALLOC_ARENA_MAX=1), unless the user set them; VEER_MEMORY_DEFAULTS=0 leaves node as started. V8's
 * old-generation growth is left to V8 (no --heap-growing-percent: README "Memory" says why).
 * Read from /proc, so Linux only.
 */
import { readFileSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { startVeer, type VeerProcess } from '../helpers/veer.ts'

const running: VeerProcess[] = []
afterEach(async () => {
  await Promise.all(running.splice(0).map((p) => p.stop()))
})

/** The process's command line and environment as the kernel has them now (after any execve). */
function seen(p: VeerProcess): { argv: string[]; env: Map<string, string> } {
  const pid = p.child.pid!
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean)
  const env = new Map<string, string>()
  for (const kv of readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
    const eq = kv.indexOf('=')
    if (eq > 0) env.set(kv.slice(0, eq), kv.slice(eq + 1))
  }
  return { argv, env }
}

async function start(env: NodeJS.ProcessEnv): Promise<VeerProcess> {
  const { NODE_OPTIONS: _n, MALLOC_ARENA_MAX: _m, VEER_MEMORY_DEFAULTS: _v, ...rest } = process.env
  const p = await startVeer(['--stable', 'http://127.0.0.1:9'], { ...rest, ...env })
  running.push(p)
  return p
}

describe.runIf(process.platform === 'linux')('veer proxy memory defaults', () => {
  it('adds --max-semi-space-size=4 and MALLOC_ARENA_MAX=1 in the same process when neither is set', async () => {
    const p = await start({})
    const { argv, env } = seen(p)
    expect(argv.slice(1, 2)).toEqual(['--max-semi-space-size=4'])
    expect(argv.some((a) => a.includes('heap-growing'))).toBe(false)
    expect(argv).toContain('proxy')
    expect(env.get('MALLOC_ARENA_MAX')).toBe('1')
    // the start line comes from the process the test spawned: execve kept its pid
    expect(p.logs.find((l) => l.msg === 'veer proxy started')?.pid).toBe(p.child.pid)
    expect(p.stderr()).toBe('')
  })

  it("keeps the user's own semi-space flag and arena count (and then does not re-execute)", async () => {
    const p = await start({ NODE_OPTIONS: '--max-semi-space-size=8', MALLOC_ARENA_MAX: '2' })
    const { argv, env } = seen(p)
    expect(argv.some((a) => a.includes('semi-space') || a.includes('heap-growing'))).toBe(false)
    expect(argv[1]).toMatch(/bin\/veer\.js$/)
    expect(env.get('MALLOC_ARENA_MAX')).toBe('2')
    expect(env.get('NODE_OPTIONS')).toBe('--max-semi-space-size=8')
  })

  it('runs node exactly as started with VEER_MEMORY_DEFAULTS=0', async () => {
    const p = await start({ VEER_MEMORY_DEFAULTS: '0' })
    const { argv, env } = seen(p)
    expect(argv.some((a) => a.includes('semi-space') || a.includes('heap-growing'))).toBe(false)
    expect(env.has('MALLOC_ARENA_MAX')).toBe(false)
  })
})
