/**
 * The state dir is checked whole at start: a state.json or an audit record of the wrong shape (a weight
 * as a string or out of range, an unknown field, a `__proto__` route, a plan the API would refuse)
 * refuses the start with exit 2, one line per problem naming the file and the field path, and the ways
 * out; nothing in the dir changes. A state a real control wrote starts as it was.
 */
import { cpSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import {
  announced,
  type CliResult,
  FakeProxy,
  runCli,
  startControl,
  tempDir,
  writeTokenFile,
} from '../helpers/control.ts'

// biome-ignore lint/suspicious/noExplicitAny: a corruption edits the parsed file field by field
type Parsed = Record<string, any>

const tokens = writeTokenFile()
/** A state dir a real control left: route shop mid-rollout, route cart with shadow settings. */
let source: string
/** Its state.json as it was after the rollout started, before one more change (for the interrupted case). */
let beforeLast: string

beforeAll(async () => {
  source = tempDir()
  const control = await startControl({ stateDir: source, tokenFile: tokens })
  try {
    const cart = { ...announced('cart', 5), shadow: { url: 'http://127.0.0.1:3003', release: 'v3' } }
    await new FakeProxy(control, 'edge-1', [announced('shop', 0), cart]).register()
    expect((await control.api('PUT', '/v1/routes/cart/shadow', { body: { percent: 12.5 } })).status).toBe(200)
    const plan = {
      steps: [{ weight: 10, pause: '1h' }, { weight: 50 }],
      analysis: { inconclusive: { action: 'extend', extend: '2m' } },
    }
    expect((await control.api('POST', '/v1/routes/shop/rollout', { body: plan })).status).toBe(200)
    beforeLast = readFileSync(join(source, 'state.json'), 'utf8')
    expect((await control.api('PUT', '/v1/routes/cart/weights', { body: { canary: 7 } })).status).toBe(200)
  } finally {
    await control.stop('SIGTERM')
  }
})

/** Every file in `dir`, by name, with its bytes. */
function snapshot(dir: string): Record<string, Buffer> {
  const out: Record<string, Buffer> = {}
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isFile()) out[name] = readFileSync(p)
  }
  return out
}

/** A copy of the source dir with `edit` applied to its state.json (parsed) or, given text, to its text. */
function corrupted(edit: (s: Parsed) => void): string {
  const dir = tempDir()
  cpSync(source, dir, { recursive: true })
  const state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8'))
  edit(state)
  writeFileSync(join(dir, 'state.json'), JSON.stringify(state))
  return dir
}

/** `veer control` (or with `--recover`) on `dir`: must be refused with exit 2, leaving every file as it was. */
async function refused(dir: string, extra: string[] = []): Promise<string[]> {
  const before = snapshot(dir)
  const r: CliResult = await runCli([
    'control',
    '--listen',
    '127.0.0.1:0',
    '--state-dir',
    dir,
    '--token-file',
    tokens,
    ...extra,
  ])
  expect(r.code, r.stderr).toBe(2)
  expect(r.stdout).not.toContain('veer control started')
  expect(snapshot(dir)).toEqual(before)
  return r.stderr.trim().split('\n')
}

describe('a state.json of the wrong shape', () => {
  const CASES: [string, (s: Parsed) => void, string][] = [
    [
      'a weight as a string',
      (s) => (s.routes.cart.canary = '50'),
      'routes.cart.canary: must be a whole number from 0 to 100 (got "50")',
    ],
    [
      'a weight out of range',
      (s) => (s.routes.cart.canary = 150),
      'routes.cart.canary: must be a whole number from 0 to 100 (got 150)',
    ],
    [
      'a negative revision',
      (s) => (s.revision = -3),
      'revision: must be a whole number from 0 to 9007199254740991 (got -3)',
    ],
    [
      'an unknown field',
      (s) => (s.routes.cart.weights = { canary: 5 }),
      'routes.cart.weights: is not a known setting; allowed here: name, version, revision, canary, shadow, stable, canaryUpstream, shadowUpstream, canaryFromShadow, superseded, rollout, createdAt, updatedAt',
    ],
    [
      'a plan without steps',
      (s) => (s.routes.shop.rollout.plan.steps = []),
      'routes.shop.rollout.plan.steps: a plan needs at least one step, e.g. [{"weight": 10, "pause": "5m"}, {"weight": 50, "pause": "10m"}, {"weight": 100}]',
    ],
    [
      'a step missing its weight',
      (s) => delete s.routes.shop.rollout.plan.steps[1].weight,
      'routes.shop.rollout.plan.steps[1].weight: is required: Canary weight of the step, 0..100',
    ],
    [
      'a rollout beyond its last step',
      (s) => (s.routes.shop.rollout.step = 2),
      "routes.shop.rollout.step: is beyond the plan's 2 step(s) (got 2)",
    ],
    [
      'a plan whose weights go down',
      (s) => (s.routes.shop.rollout.plan.steps[1].weight = 5),
      'routes.shop.rollout.plan.steps[1].weight: is below the step before (5 < 10); weights must not go down (abort rolls back)',
    ],
    [
      'a smoke check that is no URL',
      (s) =>
        (s.routes.shop.rollout.plan.smoke = {
          url: 'nope',
          requests: 5,
          expectStatus: [200],
          timeoutMs: 2000,
        }),
      'routes.shop.rollout.plan.smoke.url: is not a URL (got "nope")',
    ],
  ]
  it.each(CASES)(
    '%s: exit 2 naming the file and the field path, files unchanged',
    async (_, edit, problem) => {
      const dir = corrupted(edit)
      const lines = await refused(dir)
      expect(lines).toEqual([
        `veer control: ${join(dir, 'state.json')}: ${problem}`,
        `veer control: fix those fields in ${join(dir, 'state.json')}, run veer control --recover --state-dir ${dir} to rebuild it from audit.log, or move ${dir} away to start empty; nothing was changed`,
      ])
    },
  )

  it('a route named __proto__ (an own key once parsed) is refused naming it', async () => {
    const dir = tempDir()
    cpSync(source, dir, { recursive: true })
    const text = readFileSync(join(dir, 'state.json'), 'utf8')
    writeFileSync(join(dir, 'state.json'), text.replace('"cart":{', '"__proto__":{'))
    const lines = await refused(dir)
    expect(lines[0]).toBe(
      `veer control: ${join(dir, 'state.json')}: routes.__proto__: is the prototype key, never a route name; remove it`,
    )
  })

  it('every problem gets its line', async () => {
    const dir = corrupted((s) => {
      s.routes.cart.canary = 150
      s.routes.shop.shadow = 'half'
    })
    const lines = await refused(dir)
    expect(lines.slice(0, 2)).toEqual([
      `veer control: ${join(dir, 'state.json')}: routes.shop.shadow: must be a number from 0 to 100 (got "half")`,
      `veer control: ${join(dir, 'state.json')}: routes.cart.canary: must be a whole number from 0 to 100 (got 150)`,
    ])
    expect(lines).toHaveLength(3)
  })

  it('--recover rebuilds it from the audit, and control then starts', async () => {
    const dir = corrupted((s) => (s.routes.cart.canary = 150))
    const r = await runCli(['control', '--recover', '--state-dir', dir, '--token-file', tokens])
    expect(r.code, r.stderr).toBe(0)
    const control = await startControl({ stateDir: dir, tokenFile: tokens })
    try {
      const cart = await control.api('GET', '/v1/routes/cart')
      expect([cart.status, cart.json.weights.canary]).toEqual([200, 7])
    } finally {
      await control.stop('SIGKILL')
    }
  })
})

describe('audit records of the wrong shape', () => {
  /** A copy of the source dir whose last audit line has `edit` applied to its record; returns it with the line's number. */
  function badRecord(edit: (r: Parsed) => void): { dir: string; line: number } {
    const dir = tempDir()
    cpSync(source, dir, { recursive: true })
    const lines = readFileSync(join(dir, 'audit.log'), 'utf8').trim().split('\n')
    const last = JSON.parse(lines.at(-1)!)
    edit(last.record)
    lines[lines.length - 1] = JSON.stringify(last)
    writeFileSync(join(dir, 'audit.log'), `${lines.join('\n')}\n`)
    return { dir, line: lines.length }
  }

  it('--recover refuses with exit 2 naming the audit line and the field path', async () => {
    const { dir, line } = badRecord((r) => (r.canary = '7'))
    const lines = await refused(dir, ['--recover'])
    expect(lines[0]).toBe(
      `veer control: ${join(dir, 'audit.log')}: line ${line}: record.canary: must be a whole number from 0 to 100 (got "7")`,
    )
    expect(lines.at(-1)).toContain('repair those lines, or restore state.json from a backup')
  })

  it('an interrupted last change is not completed from a bad record: exit 2, files unchanged', async () => {
    const { dir, line } = badRecord((r) => (r.superseded = 'none'))
    writeFileSync(join(dir, 'state.json'), beforeLast)
    const lines = await refused(dir)
    expect(lines[0]).toBe(
      `veer control: ${join(dir, 'audit.log')}: line ${line}: record.superseded: must be a list (got "none")`,
    )
  })

  it('an interrupted last change whose completion cannot be saved is refused with one clear line', async () => {
    const dir = tempDir()
    cpSync(source, dir, { recursive: true })
    writeFileSync(join(dir, 'state.json'), beforeLast)
    // A directory where the temp file goes: the save fails (as root, permissions would not).
    mkdirSync(join(dir, 'state.json.tmp'))
    const lines = await refused(dir)
    expect(lines).toEqual([
      `veer control: ${join(dir, 'state.json')}: cannot save the change completed from audit.log (EISDIR); state.json is as it was; free space or fix ${dir} (permissions, disk) and start again, which completes it then`,
    ])
  })
})

describe('a state a real control wrote', () => {
  it('starts as it was, its interrupted last change completed', async () => {
    const dir = tempDir()
    cpSync(source, dir, { recursive: true })
    writeFileSync(join(dir, 'state.json'), beforeLast)
    const control = await startControl({ stateDir: dir, tokenFile: tokens })
    try {
      const [shop, cart] = await Promise.all([
        control.api('GET', '/v1/routes/shop'),
        control.api('GET', '/v1/routes/cart'),
      ])
      expect([shop.status, shop.json.rollout.step, cart.json.weights.canary]).toEqual([200, 1, 7])
    } finally {
      await control.stop('SIGKILL')
    }
  })
})
