/** The state dir (control/store.ts): commit and reopen, torn and interrupted audit lines, disagreeing files and --recover, format, lock. */
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { describe, expect, it } from 'vitest'
import { type ControlState, emptyState, Store, StoreError } from '../../control/store.ts'

function logger() {
  const lines: Record<string, unknown>[] = []
  const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s)) })
  return { log, lines }
}

const dir = () => mkdtempSync(join(tmpdir(), 'veer-store-'))

function stateAt(revision: number, canary: number): ControlState {
  return {
    ...emptyState(),
    revision,
    routes: {
      shop: {
        name: 'shop',
        version: revision,
        revision,
        canary,
        shadow: null,
        stable: null,
        canaryUpstream: null,
        shadowUpstream: null,
        superseded: [],
        canaryFromShadow: false,
        rollout: null,
        createdAt: 1,
        updatedAt: 2,
      },
    },
  }
}

const draft = (revision: number, to: number) => ({
  who: 'alice',
  role: 'operator',
  action: 'set-weight',
  route: 'shop',
  from: null,
  to: { canary: to },
  why: null,
  revision,
})

describe('store', () => {
  it('a committed change is there after reopening: state and audit, in order', async () => {
    const d = dir()
    const s = await Store.open(d, logger().log)
    expect(s.state).toEqual(emptyState())
    await s.commit(stateAt(1, 10), [draft(1, 10)])
    await s.commit(stateAt(2, 20), [draft(2, 20)])
    await s.append([
      { who: 'eve', role: 'read', action: 'denied', route: null, from: null, to: 'PUT /x', why: 'no' },
    ])
    await s.close()
    const again = await Store.open(d, logger().log)
    expect(again.state).toEqual(stateAt(2, 20))
    const audit = again.audit({ limit: 100, route: null })
    expect(audit.total).toBe(3)
    expect(audit.entries.map((e) => [e.seq, e.action])).toEqual([
      [1, 'set-weight'],
      [2, 'set-weight'],
      [3, 'denied'],
    ])
    expect(again.audit({ limit: 1, route: 'shop' }).entries.map((e) => e.seq)).toEqual([2])
    expect(existsSync(join(d, 'state.json.tmp'))).toBe(false)
    await again.close()
  })

  it('tolerates a torn last audit line with a warning and cuts it off', async () => {
    const d = dir()
    const s = await Store.open(d, logger().log)
    await s.commit(stateAt(1, 10), [draft(1, 10)])
    await s.close()
    appendFileSync(join(d, 'audit.log'), '{"seq":2,"time":"2025-01-01T00:00:00.000Z","who":"al')
    const { log, lines } = logger()
    const again = await Store.open(d, log)
    expect(again.audit({ limit: 10, route: null }).total).toBe(1)
    expect(lines.some((l) => l.level === 40 && String(l.msg).includes('torn last line'))).toBe(true)
    // Appends after the cut start on a clean line.
    await again.commit(stateAt(2, 30), [draft(2, 30)])
    await again.close()
    const text = readFileSync(join(d, 'audit.log'), 'utf8')
    expect(
      text
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).seq),
    ).toEqual([1, 2])
  })

  it('completes a change whose audit lines landed but whose state did not (crash between the two writes)', async () => {
    const d = dir()
    const s = await Store.open(d, logger().log)
    await s.commit(stateAt(1, 10), [draft(1, 10)])
    await s.close()
    const line = { seq: 2, time: 't', ...draft(2, 99), record: stateAt(2, 99).routes.shop }
    appendFileSync(join(d, 'audit.log'), `${JSON.stringify(line)}\n`)
    const before = readFileSync(join(d, 'audit.log'))
    const { log, lines } = logger()
    const again = await Store.open(d, log)
    expect(again.state).toEqual(stateAt(2, 99))
    expect(JSON.parse(readFileSync(join(d, 'state.json'), 'utf8'))).toEqual(stateAt(2, 99))
    expect(again.audit({ limit: 10, route: null }).total).toBe(2)
    expect(readFileSync(join(d, 'audit.log')).equals(before)).toBe(true)
    expect(lines.some((l) => String(l.msg).includes('completed a change'))).toBe(true)
    await again.close()
  })

  it('the audit holds each route as its change left it, and the API entries do not', async () => {
    const d = dir()
    const s = await Store.open(d, logger().log)
    const [entry] = await s.commit(stateAt(1, 10), [draft(1, 10)])
    expect(entry).not.toHaveProperty('record')
    expect(s.audit({ limit: 1, route: null }).entries[0]).not.toHaveProperty('record')
    await s.close()
    const line = JSON.parse(readFileSync(join(d, 'audit.log'), 'utf8').trim())
    expect(line.record).toEqual(stateAt(1, 10).routes.shop)
  })

  describe('state.json and audit.log that disagree', () => {
    /** Three committed changes; returns the dir and state.json as it was after the first. */
    async function threeChanges(): Promise<{ d: string; first: string }> {
      const d = dir()
      const s = await Store.open(d, logger().log)
      await s.commit(stateAt(1, 10), [draft(1, 10)])
      const first = readFileSync(join(d, 'state.json'), 'utf8')
      await s.commit(stateAt(2, 20), [draft(2, 20)])
      await s.append([
        { who: 'eve', role: 'read', action: 'denied', route: null, from: null, to: 'x', why: 'no' },
      ])
      await s.commit(stateAt(3, 30), [draft(3, 30)])
      await s.close()
      return { d, first }
    }

    it('an older state.json (a restored backup) refuses the start and leaves the audit byte for byte', async () => {
      const { d, first } = await threeChanges()
      writeFileSync(join(d, 'state.json'), first)
      const audit = readFileSync(join(d, 'audit.log'))
      await expect(Store.open(d, logger().log)).rejects.toThrow(
        /state\.json is at revision 1 but .*audit\.log goes on to revision 3: .*veer control --recover/,
      )
      expect(readFileSync(join(d, 'audit.log')).equals(audit)).toBe(true)
      expect(readFileSync(join(d, 'state.json'), 'utf8')).toBe(first)
    })

    it('a torn last line is not cut when the start is refused for something else', async () => {
      const { d, first } = await threeChanges()
      writeFileSync(join(d, 'state.json'), first)
      appendFileSync(join(d, 'audit.log'), '{"seq":5,"time":"2026-')
      const audit = readFileSync(join(d, 'audit.log'))
      await expect(Store.open(d, logger().log)).rejects.toThrow(/state\.json is at revision 1/)
      expect(readFileSync(join(d, 'audit.log')).equals(audit)).toBe(true)
    })

    it('a missing state.json refuses the start when the audit holds changes', async () => {
      const { d } = await threeChanges()
      rmSync(join(d, 'state.json'))
      await expect(Store.open(d, logger().log)).rejects.toThrow(
        /state\.json is missing but .*audit\.log holds changes up to revision 3/,
      )
    })

    it('an audit behind state.json refuses the start', async () => {
      const { d } = await threeChanges()
      const lines = readFileSync(join(d, 'audit.log'), 'utf8').split('\n')
      writeFileSync(join(d, 'audit.log'), `${lines.slice(0, 2).join('\n')}\n`)
      await expect(Store.open(d, logger().log)).rejects.toThrow(
        /state\.json is at revision 3 but .*audit\.log ends at revision 2: the audit lacks changes/,
      )
    })

    it('routes written as a list refuse the start', async () => {
      const d = dir()
      writeFileSync(join(d, 'state.json'), JSON.stringify({ formatVersion: 1, revision: 0, routes: [] }))
      await expect(Store.open(d, logger().log)).rejects.toThrow(
        /state\.json: routes: must be an object \(got a list\)\n/,
      )
    })

    it('an audit line of the wrong shape refuses the start naming its number and field, the dir unchanged', async () => {
      const { d } = await threeChanges()
      const lines = readFileSync(join(d, 'audit.log'), 'utf8').split('\n')
      lines[1] = lines[1]!.replace('"revision":2', '"revision":"2"')
      writeFileSync(join(d, 'audit.log'), lines.join('\n'))
      const audit = readFileSync(join(d, 'audit.log'))
      const state = readFileSync(join(d, 'state.json'))
      await expect(Store.open(d, logger().log)).rejects.toThrow(
        /audit\.log: line 2: revision: must be a whole number from 0 to \d+ \(got "2"\)\nrepair that line, or move .* away to start empty; nothing was changed$/,
      )
      expect(readFileSync(join(d, 'audit.log')).equals(audit)).toBe(true)
      expect(readFileSync(join(d, 'state.json')).equals(state)).toBe(true)
      expect(existsSync(join(d, 'control.lock'))).toBe(false)
    })

    it('--recover rebuilds state.json from the audit, audits it, and the dir then opens', async () => {
      const { d, first } = await threeChanges()
      writeFileSync(join(d, 'state.json'), first)
      const before = readFileSync(join(d, 'audit.log'))
      const { store, recovery } = await Store.recover(d, logger().log)
      expect(recovery).toEqual({ from: 1, revision: 3, routes: 1 })
      await store.close()
      const after = readFileSync(join(d, 'audit.log'))
      // Appended to, never rewritten.
      expect(after.subarray(0, before.length).equals(before)).toBe(true)
      const again = await Store.open(d, logger().log)
      expect(again.state).toEqual({ ...stateAt(3, 30), revision: 4 })
      const last = again.audit({ limit: 1, route: null }).entries[0]!
      expect(last).toMatchObject({ action: 'recovered', revision: 4, from: { stateRevision: 1 } })
      await again.close()
    })

    it('--recover takes a route an older veer audited without its record from state.json', async () => {
      const d = dir()
      writeFileSync(join(d, 'state.json'), JSON.stringify(stateAt(2, 20)))
      writeFileSync(join(d, 'audit.log'), `${JSON.stringify({ seq: 1, time: 't', ...draft(2, 20) })}\n`)
      const { store } = await Store.recover(d, logger().log)
      expect(store.state.routes.shop).toEqual(stateAt(2, 20).routes.shop)
      await store.close()
      rmSync(join(d, 'state.json'))
      await expect(Store.recover(d, logger().log)).rejects.toThrow(/written by an older veer/)
    })
  })

  it('reads a format 1 state written before the shadow fields: no shadow, canary not from it, nothing else changed', async () => {
    const d = dir()
    const { shadow: _, shadowUpstream: __, canaryFromShadow: ___, ...old } = stateAt(3, 30).routes.shop!
    writeFileSync(
      join(d, 'state.json'),
      JSON.stringify({ formatVersion: 1, revision: 3, routes: { shop: old } }),
    )
    // An audit an older veer wrote: its lines hold no route records.
    writeFileSync(join(d, 'audit.log'), `${JSON.stringify({ seq: 1, time: 't', ...draft(3, 30) })}\n`)
    const s = await Store.open(d, logger().log)
    expect(s.state).toEqual(stateAt(3, 30))
    await s.close()
  })

  it('refuses a state dir of another format, and a corrupt state.json, with one line', async () => {
    const d = dir()
    writeFileSync(join(d, 'state.json'), JSON.stringify({ formatVersion: 7, revision: 1, routes: {} }))
    await expect(Store.open(d, logger().log)).rejects.toThrow(
      /state format 7 is not one this veer reads \(format 1\)/,
    )
    writeFileSync(join(d, 'state.json'), JSON.stringify({ revision: 1, routes: {} }))
    await expect(Store.open(d, logger().log)).rejects.toThrow(/state format null/)
    writeFileSync(join(d, 'state.json'), '{"formatVersion": 1, ')
    await expect(Store.open(d, logger().log)).rejects.toThrow(StoreError)
  })

  it('refuses a state dir another live control holds, and takes over a dead one’s lock', async () => {
    const d = dir()
    writeFileSync(join(d, 'control.lock'), `${process.ppid}\n`)
    await expect(Store.open(d, logger().log)).rejects.toThrow(/another veer control \(pid \d+\) is using it/)
    writeFileSync(join(d, 'control.lock'), '999999999\n')
    const s = await Store.open(d, logger().log)
    expect(readFileSync(join(d, 'control.lock'), 'utf8').trim()).toBe(String(process.pid))
    await s.close()
  })
})
