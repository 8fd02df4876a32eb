/** Refusals aggregated for the audit (control/denials.ts): a write that fails loses no refusal. */
import { describe, expect, it } from 'vitest'
import { Denials } from '../../control/denials.ts'
import type { AuditDraft } from '../../control/store.ts'

const draft = (who: string): AuditDraft => ({
  who,
  role: 'read',
  action: 'denied',
  route: null,
  from: '127.0.0.1',
  to: 'PUT /v1/routes/shop/weights',
  why: 'role read needs the operator role',
})

/** A Denials whose writes fail while `full` says so; `written` gets what landed. */
function bed() {
  const written: AuditDraft[] = []
  const disk = { full: false }
  const denials = new Denials(async (d) => {
    if (disk.full) throw new Error('ENOSPC')
    written.push(d)
  }, 3_600_000)
  return { written, disk, denials }
}

describe('denials while the audit cannot be written', () => {
  it('a first refusal that fails is counted, kept through a failed flush, and written by the next', async () => {
    const { written, disk, denials } = bed()
    disk.full = true
    await expect(denials.note('403 eve', draft('eve'))).rejects.toThrow('ENOSPC')
    await denials.note('403 eve', draft('eve'))
    await expect(denials.flush()).rejects.toThrow('ENOSPC')
    await denials.note('403 eve', draft('eve'))
    disk.full = false
    await denials.close()
    expect(written.map((d) => [d.who, d.count])).toEqual([['eve', 3]])
    expect(written[0]!.why).toMatch(/^role read needs the operator role \(3 more since \d{4}-/)
  })

  it('with space, the first is written at once and the rest counted, as before', async () => {
    const { written, denials } = bed()
    await denials.note('403 eve', draft('eve'))
    await denials.note('403 eve', draft('eve'))
    await denials.close()
    expect(written.map((d) => [d.who, d.count])).toEqual([
      ['eve', undefined],
      ['eve', 1],
    ])
  })

  it('a first write still waiting when the interval ends, then failing, is counted in the next', async () => {
    const written: AuditDraft[] = []
    let fail: ((err: Error) => void) | null = null
    const denials = new Denials(async (d) => {
      if (written.length === 0 && fail === null) return new Promise<void>((_, reject) => (fail = reject))
      written.push(d)
    }, 3_600_000)
    const first = denials.note('403 eve', draft('eve'))
    await denials.flush()
    fail!(new Error('ENOSPC'))
    await expect(first).rejects.toThrow('ENOSPC')
    await denials.close()
    expect(written.map((d) => [d.who, d.count])).toEqual([['eve', 1]])
  })
})
