import { spawn } from 'node:child_process'
import { describe, expect, it } from 'vitest'

const ROOT = new URL('../../', import.meta.url).pathname

describe('npm run demo', () => {
  it('runs the sample versions behind veer at 20% canary, reports the split and per-version figures, and stops', async () => {
    const child = spawn(process.execPath, [`${ROOT}scripts/demo.ts`, '--once'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    const code = await new Promise((resolve) => child.on('exit', resolve))
    expect(err).toBe('')
    expect(code).toBe(0)
    const [, stable, canary] = out.match(/requests: stable (\d+), canary (\d+)/) ?? []
    expect(Number(stable) + Number(canary)).toBe(2000)
    // Sticky users: 200 users at 20% is not exactly 400 requests, but no user ever changes version.
    expect(out).toMatch(/on canary; 0 version changes for the same user/)
    expect(out).toMatch(/stable\s+v1\s+\d+\s+0\s/)
    expect(out).toMatch(/canary\s+v2\s+\d+\s+0\s/)
    expect(out).toContain(`200: ${stable}`)
    expect(out).toContain('curl -si http://127.0.0.1:8080/hello')
  }, 60_000)
})
