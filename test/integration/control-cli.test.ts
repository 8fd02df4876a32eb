/**
 * The operator CLI (`node bin/veer.js status | set-weight | rollout | promote | pause | resume | abort`)
 * against a real control process: output, --output json, one-line errors and exit codes
 * (0 done, 1 API refused, 2 usage, 3 control unreachable).
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  announced,
  type ControlProcess,
  FakeProxy,
  runCli,
  startControl,
  TOKENS,
  tempDir,
} from '../helpers/control.ts'
import { deadPort } from '../helpers/upstream.ts'

let control: ControlProcess
let env: Record<string, string>
const dir = tempDir()

beforeAll(async () => {
  control = await startControl()
  await new FakeProxy(control, 'edge-1', [announced('shop', 5), announced('api', 0)]).register()
  env = { VEER_TOKEN: TOKENS.operator }
})

afterAll(async () => {
  expect(await control?.stop()).toBe(0)
})

const veer = (args: string[], e = env) => runCli([...args, '--control', control.url], e)

describe('veer CLI against control', () => {
  it('status prints a table of routes, weights, step, time left and proxies in sync', async () => {
    const r = await veer(['status'])
    expect(r.code).toBe(0)
    const lines = r.stdout.trim().split('\n')
    expect(lines[0]).toMatch(
      /^ROUTE\s+STABLE\s+CANARY\s+ROLLOUT\s+STEP\s+TIME LEFT\s+ANALYSIS\s+HARMED\/SAVED\s+PROXIES IN SYNC\s+VERSION$/,
    )
    expect(lines[1]).toMatch(/^api\s+v1 100%\s+v2 0%\s+-\s+-\s+-\s+-\s+-\s+0\/1\s+1$/)
    expect(lines[2]).toMatch(/^shop\s+v1 95%\s+v2 5%\s+-\s+-\s+-\s+-\s+-\s+0\/1\s+1$/)
    // Under the table: each route's last change (here: adopted from the proxy that announced it).
    expect(lines[3]).toMatch(
      /^api: last: route-register by edge \(proxy edge-1\) at \S+Z: announced by proxy edge-1$/,
    )
    expect(lines[4]).toMatch(/^shop: last: route-register by edge \(proxy edge-1\) at \S+Z: /)
    expect(lines[5]).toBe('proxies: 1 known, 1 live')
  })

  it('set-weight, with --if-match, --reason and --output json', async () => {
    const r = await veer(['set-weight', 'shop', '20', '--reason', 'more canary'])
    expect([r.code, r.stderr]).toEqual([0, ''])
    expect(r.stdout).toBe('shop: canary 20% (stable 80%), version 2\n')
    const stale = await veer(['set-weight', 'shop', '30', '--if-match', '1'])
    expect(stale.code).toBe(1)
    expect(stale.stderr).toMatch(
      /^veer set-weight: route shop is at version 2, If-Match said "1"; .* \(version_mismatch\)\n$/,
    )
    const fresh = await veer(['set-weight', 'shop', '30', '--if-match', '2', '--output', 'json'])
    expect(fresh.code).toBe(0)
    expect(JSON.parse(fresh.stdout)).toMatchObject({
      name: 'shop',
      version: 3,
      weights: { stable: 70, canary: 30 },
    })
    const audit = (await control.api('GET', '/v1/audit?route=shop')).json.entries
    expect(audit.find((e: { why: string }) => e.why === 'more canary')).toMatchObject({
      who: 'alice',
      to: { canary: 20 },
    })
  })

  it('rollout --plan (YAML), promote, pause, resume, promote --full', async () => {
    const plan = join(dir, 'plan.yaml')
    writeFileSync(plan, 'steps:\n  - { weight: 10, pause: 1h }\n  - { weight: 50 }\n  - { weight: 100 }\n')
    const started = await veer(['rollout', 'api', '--plan', plan])
    expect(started.code).toBe(0)
    expect(started.stdout).toMatch(
      /^api: canary 10% \(stable 90%\), step 1\/3 (waiting-for-proxies, 1h after sync|pausing, 1h left|pausing, 59m59s left), version 2\n$/,
    )
    const status = await veer(['status', 'api'])
    expect(status.stdout.split('\n')[1]).toMatch(
      /^api\s+v1 90%\s+v2 10%\s+(waiting-for-proxies|pausing)\s+1\/3\s+(1h after sync|1h|59m59s)\s+(-|inconclusive)\s+0\/0\s+0\/1\s+2$/,
    )
    const paused = await veer(['pause', 'api', '--reason', 'look at graphs'])
    expect(paused.stdout).toMatch(/step 1\/3 paused/)
    const pausedAgain = await veer(['pause', 'api'])
    expect([pausedAgain.code, pausedAgain.stderr]).toEqual([
      1,
      'veer pause: route api: the rollout is already paused; resume it (already_paused)\n',
    ])
    expect((await veer(['resume', 'api'])).code).toBe(0)
    const promoted = await veer(['promote', 'api'])
    expect(promoted.stdout).toMatch(/^api: canary 50% \(stable 50%\), step 2\/3 /)
    const full = await veer(['promote', 'api', '--full', '--output', 'json'])
    expect(JSON.parse(full.stdout)).toMatchObject({
      weights: { canary: 100 },
      rollout: { phase: 'completed', state: 'completed' },
    })
    const json = JSON.parse((await veer(['status', '--output', 'json'])).stdout)
    expect(json.routes.map((x: { name: string }) => x.name)).toEqual(['api', 'shop'])
    expect(json.proxies[0].id).toBe('edge-1')
    // Promoted: status says who did it and what the operator does next (the hand-off in the config).
    const after = (await veer(['status', 'api'])).stdout.split('\n')
    expect(after[1]).toMatch(/^api\s+v1 0%\s+v2 100%\s+completed\s/)
    expect(after).toContainEqual(expect.stringMatching(/^api: last: rollout-promote by alice at \S+Z/))
    expect(after).toContainEqual(
      "api: next: v2 serves 100%: make v2 the stable in the proxies' config (with the next release as canary, or none); control records the hand-off and the new canary starts at its canaryWeight (0 when unset)",
    )
  })

  it('abort rolls back to canary 0 at once, and is safe to repeat', async () => {
    const plan = join(dir, 'plan.json')
    writeFileSync(plan, JSON.stringify({ steps: [{ weight: 40 }, { weight: 100 }] }))
    expect((await veer(['rollout', 'shop', '--plan', plan])).code).toBe(0)
    const r = await veer(['abort', 'shop', '--reason', 'errors'])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^shop: canary 0% \(stable 100%\), rollout aborted, version \d+\n$/)
    expect((await veer(['abort', 'shop'])).code).toBe(0)
    // Aborted by whom and why, and what next: the status the operator sees.
    const status = (await veer(['status', 'shop'])).stdout.split('\n')
    expect(status).toContainEqual(
      expect.stringMatching(/^shop: last: rollout-abort by alice at \S+Z: errors$/),
    )
    expect(status).toContainEqual(expect.stringMatching(/^shop: next: v2 was rolled back: /))
  })

  it("history: the route's audit as a table or JSON, filtered by action and time; the API pages", async () => {
    const all = (await control.api('GET', '/v1/audit?route=shop&limit=10000')).json
    expect(all.entries.length).toBeGreaterThanOrEqual(5)
    expect(all.next).toBeNull()
    // Page by page from the newest, two entries a page: every entry once, in order.
    const paged: { seq: number }[][] = []
    let before: string | null = null
    do {
      const page: { entries: { seq: number }[]; next: string | null } = (
        await control.api('GET', `/v1/audit?route=shop&limit=2${before === null ? '' : `&before=${before}`}`)
      ).json
      paged.unshift(page.entries)
      before = page.next
    } while (before !== null)
    expect(paged.flat()).toEqual(all.entries)

    const table = await veer(['history', 'shop'])
    expect([table.code, table.stderr]).toEqual([0, ''])
    const lines = table.stdout.trim().split('\n')
    expect(lines[0]).toMatch(/^TIME\s+WHO\s+ACTION\s+FROM → TO\s+WHY$/)
    expect(lines).toHaveLength(all.entries.length + 1)
    expect(lines).toContainEqual(
      expect.stringMatching(/^\S+Z\s+alice\s+set-weight\s+canary 5 → 20\s+more canary$/),
    )
    expect(lines).toContainEqual(expect.stringMatching(/\s+rollout-abort\s+canary 40 → 0.*\s+errors$/))

    const aborts = JSON.parse(
      (await veer(['history', 'shop', '--action', 'rollout-abort,abort', '--output', 'json'])).stdout,
    )
    expect(aborts.entries.length).toBeGreaterThan(0)
    expect(
      aborts.entries.every((e: { action: string }) => ['rollout-abort', 'abort'].includes(e.action)),
    ).toBe(true)
    const third = all.entries[2]!
    const since = JSON.parse(
      (await veer(['history', 'shop', '--since', third.time, '--output', 'json'])).stdout,
    )
    expect(since.entries[0].time >= third.time).toBe(true)
    expect(since.entries.at(-1)).toEqual(all.entries.at(-1))
    const until = JSON.parse(
      (await veer(['history', 'shop', '--until', third.time, '--output', 'json'])).stdout,
    )
    expect(until.entries.every((e: { time: string }) => e.time < third.time)).toBe(true)
    const newest = JSON.parse((await veer(['history', 'shop', '--limit', '2', '--output', 'json'])).stdout)
    expect(newest.entries).toEqual(all.entries.slice(-2))

    const bare = await veer(['history', 'shop', '--since', '30'])
    expect([bare.code, bare.stderr]).toEqual([
      2,
      expect.stringMatching(/^veer history: --since must be an RFC 3339 time/),
    ])
    for (const q of ['since=30', 'until=yesterday', 'action=Bad!', 'before=x']) {
      const r = await control.api('GET', `/v1/audit?route=shop&${q}`)
      expect([r.status, r.json.error]).toEqual([400, 'invalid_query'])
      expect(r.json.message).toMatch(new RegExp(`^\\?${q.split('=')[0]}=`))
    }
  })

  it('takes the token from --token-file (a bare token, or control’s own TOKEN ROLE NAME file)', async () => {
    const bare = join(dir, 'token')
    writeFileSync(bare, `${TOKENS.read}\n`)
    expect((await veer(['status', '--token-file', bare], {})).code).toBe(0)
    expect((await veer(['status', '--token-file', control.tokenFile], {})).code).toBe(0)
    // A read token may look but not change.
    const denied = await veer(['set-weight', 'shop', '5', '--token-file', bare], {})
    expect(denied.code).toBe(1)
    expect(denied.stderr).toMatch(
      /^veer set-weight: PUT \/v1\/routes\/shop\/weights needs the operator role; token dashboard has the read role \(forbidden\)\n$/,
    )
  })

  const REFUSED: [string[], RegExp][] = [
    [
      ['set-weight', 'nope', '5'],
      /^veer set-weight: no route named "nope"; known: api, shop \(unknown_route\)\n$/,
    ],
    [
      ['promote', 'shop'],
      /^veer promote: route shop: there is no rollout in progress \(the last one aborted\) \(no_rollout\)\n$/,
    ],
    [['status', '--token-file', '/dev/null'], /^veer status: --token-file \/dev\/null: holds no token\n$/],
  ]
  for (const [args, message] of REFUSED) {
    it(`veer ${args.join(' ')}: one line, exit ${message.source.includes('token-file') ? 2 : 1}`, async () => {
      const r = await veer(args)
      expect(r.code).toBe(message.source.includes('token-file') ? 2 : 1)
      expect(r.stderr).toMatch(message)
      expect(r.stdout).toBe('')
    })
  }

  const USAGE: [string[], Record<string, string> | null, RegExp][] = [
    [['set-weight', 'shop'], null, /^veer set-weight: usage: veer set-weight ROUTE N/],
    [
      ['set-weight', 'shop', '101'],
      null,
      /^veer set-weight: N must be a whole number from 0 to 100 \(got "101"\)/,
    ],
    [['set-weight', 'shop', 'ten'], null, /^veer set-weight: N must be a whole number/],
    [['rollout', 'shop'], null, /^veer rollout: --plan FILE is required/],
    [
      ['rollout', 'shop', '--plan', '/nonexistent.yaml'],
      null,
      /^veer rollout: --plan \/nonexistent\.yaml: cannot read it \(ENOENT\)/,
    ],
    [['pause', 'shop', '--full'], null, /^veer pause: --full is not a flag of veer pause/],
    [['status', '--bogus'], null, /^veer status: unknown flag --bogus; see veer status --help\n$/],
    [['status', '--output', 'xml'], null, /^veer status: --output must be table or json/],
    [['status'], {}, /^veer status: no token: pass --token-file FILE or set VEER_TOKEN/],
  ]
  for (const [args, e, message] of USAGE) {
    it(`veer ${args.join(' ')}: usage error, exit 2`, async () => {
      const r = await veer(args, e ?? env)
      expect(r.code).toBe(2)
      expect(r.stderr).toMatch(message)
      expect(r.stderr.trim().split('\n')).toHaveLength(1)
    })
  }

  it('a bad plan file is a usage error; a plan the API refuses is exit 1 naming the field', async () => {
    const broken = join(dir, 'broken.yaml')
    writeFileSync(broken, 'steps: [ { weight: 5 ')
    expect((await veer(['rollout', 'shop', '--plan', broken])).code).toBe(2)
    const empty = join(dir, 'empty.yaml')
    writeFileSync(empty, 'steps: []\n')
    const r = await veer(['rollout', 'shop', '--plan', empty])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^veer rollout: steps a plan needs at least one step, .* \(invalid_plan\)\n$/)
  })

  it('cannot reach control: exit 3 with one line', async () => {
    const r = await runCli(['status', '--control', `http://127.0.0.1:${await deadPort()}`], env)
    expect(r.code).toBe(3)
    expect(r.stderr).toMatch(
      /^veer status: cannot reach control at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\); is veer control running\? \(--control URL\)\n$/,
    )
  })

  it('--help of each command exits 0', async () => {
    for (const c of ['status', 'history', 'set-weight', 'rollout', 'promote', 'pause', 'resume', 'abort']) {
      const r = await runCli([c, '--help'])
      expect(r.code).toBe(0)
      expect(r.stdout).toMatch(new RegExp(`^Usage: veer ${c}`))
    }
  })
})
