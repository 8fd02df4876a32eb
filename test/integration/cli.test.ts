/**
 * The `veer` command line beyond the operator calls, run as the real bin: `veer check` against the
 * loaders and the rollout API of a real control, `--dry-run` of proxy and control (nothing bound or
 * written), `--version`, shell completion sourced in bash, and `veer status --watch` into a pipe.
 */
import { spawn, spawnSync } from 'node:child_process'
import { appendFileSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CONTROL_OPTIONS } from '../../control/args.ts'
import { PROXY_OPTIONS } from '../../proxy/args.ts'
import { makeCa } from '../helpers/certs.ts'
import {
  announced,
  type ControlProcess,
  FakeProxy,
  runCli,
  startControl,
  TOKENS,
  tempDir,
  writeTokenFile,
} from '../helpers/control.ts'
import { VEER_BIN } from '../helpers/process.ts'
import { runVeer, writeConfig } from '../helpers/veer.ts'

const dir = tempDir('veer-cli-')
function file(name: string, text: string): string {
  const path = join(dir, name)
  writeFileSync(path, text)
  return path
}

const PKG = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'))

describe('veer check', () => {
  it('lists every problem of a plan with its field path, then exits 1', async () => {
    const plan = file(
      'plan.yaml',
      'steps:\n  - weight: 5\n    pause: 30\n  - weight: 150\n  - {weight: 2, paus: 1m}\nanalysis: {alpha: 2}\n',
    )
    const r = await runVeer(['check', plan])
    expect([r.code, r.stderr]).toEqual([1, ''])
    expect(r.stdout.trim().split('\n')).toEqual([
      `${plan}: steps[0].pause: has no unit; write "30s" (or 30ms, 30m, 30h) (got 30)`,
      `${plan}: steps[1].weight: must be a whole number from 0 to 100 (got 150)`,
      `${plan}: steps[2].paus: is not a known setting; allowed here: weight, pause`,
      `${plan}: analysis.alpha: must be a number from 0.000001 to 0.5 (got 2)`,
      `${plan}: 4 problems in this rollout plan`,
    ])
  })

  it('a valid file: exit 0 and one line saying what was checked (YAML or JSON)', async () => {
    const yaml = file('ok.yaml', 'steps: [{weight: 5, pause: 30s}, {weight: 100}]\n')
    const r = await runVeer(['check', yaml])
    expect([r.code, r.stdout, r.stderr]).toEqual([
      0,
      `${yaml}: valid rollout plan: canary, 2 steps (5% 30s, 100% until promote), analysis on\n`,
      '',
    ])
    const json = file('ok.json', JSON.stringify({ mode: 'blue-green', analysis: { enabled: false } }))
    const j = await runVeer(['check', json])
    expect([j.code, j.stdout]).toEqual([
      0,
      `${json}: valid rollout plan: blue-green, 2 steps (0% until promote, 100% until promote), analysis off\n`,
    ])
  })

  it('a proxy config: schema problems, then the files a start reads', async () => {
    const bad = writeConfig({
      routes: [{ name: 'shop', stable: { url: 'ftp://x' }, wieght: 3 }, { name: 'api' }],
    })
    const r = await runVeer(['check', bad])
    expect(r.code).toBe(1)
    expect(r.stdout.trim().split('\n')).toEqual([
      expect.stringMatching(/: routes\[0\]\.wieght: is not a known setting; allowed here: name, match, /),
      `${bad}: routes[0].stable.url: must start with http://, https:// or h2c:// (got "ftp://x")`,
      `${bad}: routes[1].stable: is required: An upstream version of the service`,
      `${bad}: 3 problems in this proxy config`,
    ])
    const ca = makeCa()
    const leaf = ca.leaf('shop', ['127.0.0.1'])
    const files = writeConfig({
      tls: { cert: leaf.cert, key: join(ca.dir, 'missing.key') },
      routes: [{ name: 'shop', stable: { url: 'https://127.0.0.1:1', ca: join(ca.dir, 'none.pem') } }],
    })
    const f = await runVeer(['check', files, '--output', 'json'])
    expect(f.code).toBe(1)
    expect(JSON.parse(f.stdout)).toEqual({
      file: files,
      kind: 'proxy',
      valid: false,
      problems: [
        { path: 'tls.key', message: `cannot read ${join(ca.dir, 'missing.key')} (no such file)` },
        { path: 'routes[0].stable.ca', message: expect.stringContaining('none.pem') },
      ],
    })
    const good = writeConfig({
      tls: { cert: leaf.cert, key: leaf.key },
      routes: [{ name: 'shop', stable: { url: 'https://127.0.0.1:1', ca: ca.cert } }],
    })
    const g = await runVeer(['check', good])
    expect([g.code, g.stdout]).toEqual([
      0,
      `${good}: valid proxy config: 1 route (shop), listen 127.0.0.1:8080, admin 127.0.0.1:9901, TLS; its TLS and CA files read\n`,
    ])
  })

  it('a control config, with its token file read as control reads it', async () => {
    const bad = file('control.yaml', 'stateDir: /tmp/x\nlog: {level: loud}\nwebhooks: [ftp://x]\n')
    const r = await runVeer(['check', bad])
    expect(r.code).toBe(1)
    expect(r.stdout.trim().split('\n')).toEqual([
      `${bad}: webhooks[0]: must be an http:// or https:// URL (got "ftp://x")`,
      `${bad}: log.level: must be one of fatal, error, warn, info, debug, trace, silent (got "loud")`,
      `${bad}: 2 problems in this control config`,
    ])
    const tokens = file('tokens', `${TOKENS.operator} admin eve\n`)
    const t = await runVeer(['check', file('control2.yaml', `tokenFile: ${tokens}\n`)])
    expect(t.code).toBe(1)
    expect(t.stdout).toContain(
      `: tokenFile: ${tokens} line 1: the role (second field) must be one of read, operator, proxy\n`,
    )
    const ok = file('control3.yaml', `tokenFile: ${writeTokenFile()}\nstateDir: /var/lib/veer\n`)
    const o = await runVeer(['check', ok])
    expect([o.code, o.stdout]).toEqual([
      0,
      expect.stringMatching(
        /: valid control config: listen 127\.0\.0\.1:9900, state dir \/var\/lib\/veer, token file \S+ \(4 tokens\)\n$/,
      ),
    ])
  })

  it('tells the kind by the keys only one kind has; an ambiguous file asks for --kind', async () => {
    const both = file('both.yaml', 'listen: 127.0.0.1:9000\n')
    const r = await runVeer(['check', both])
    expect([r.code, r.stdout]).toEqual([2, ''])
    expect(r.stderr).toBe(
      `veer check: ${both}: cannot tell whether it is a proxy config, a control config or a plan: no key only one kind has (its top-level keys: listen); pass --kind proxy|control|plan\n`,
    )
    const c = await runVeer(['check', both, '--kind', 'control'])
    expect([c.code, c.stdout]).toEqual([
      0,
      expect.stringMatching(/: valid control config: listen 127\.0\.0\.1:9000/),
    ])
    const p = await runVeer(['check', both, '--kind', 'proxy'])
    expect([p.code, p.stdout]).toEqual([
      1,
      `${both}: routes: is required: a list of at least 1 item(s)\n${both}: 1 problem in this proxy config\n`,
    ])
    const mixed = file('mixed.yaml', 'routes: []\nsteps: []\n')
    const m = await runVeer(['check', mixed])
    expect([m.code, m.stderr]).toEqual([
      2,
      expect.stringContaining('it has keys of a proxy config and a rollout plan; pass --kind'),
    ])
  })

  it('YAML syntax errors are problems (1); an unreadable file or a bad flag is usage (2)', async () => {
    const broken = file('broken.yaml', 'steps: [\n')
    const r = await runVeer(['check', broken])
    expect(r.code).toBe(1)
    expect(r.stdout).toMatch(/^\S+broken\.yaml: is not valid YAML at line 2, column 1: /)
    const missing = join(dir, 'missing.yaml')
    expect(await runVeer(['check', missing])).toEqual({
      code: 2,
      stdout: '',
      stderr: `veer check: ${missing}: cannot read it (ENOENT)\n`,
    })
    expect(await runVeer(['check', missing, '--output', 'json'])).toEqual({
      code: 2,
      stdout: `${JSON.stringify({ error: 'usage', message: `${missing}: cannot read it (ENOENT)` })}\n`,
      stderr: '',
    })
    const flag = await runVeer(['check', broken, '--kidn', 'plan'])
    expect([flag.code, flag.stderr]).toEqual([
      2,
      'veer check: unknown flag --kidn (did you mean --kind?); see veer check --help\n',
    ])
  })

  describe('against the rollout API', () => {
    let control: ControlProcess
    beforeAll(async () => {
      control = await startControl()
      await new FakeProxy(control, 'edge-1', [announced('shop', 0)]).register()
    })
    afterAll(async () => {
      expect(await control?.stop()).toBe(0)
    })

    it('refuses a plan with the very problems control refuses it with, and passes one control takes', async () => {
      const plan = file(
        'api-bad.yaml',
        'steps: [{weight: 50}, {weight: 10}]\nanalysis: {inconclusive: {action: extend}}\n',
      )
      const checked = JSON.parse((await runVeer(['check', plan, '--output', 'json'])).stdout)
      const refused = await runCli(['rollout', 'shop', '--plan', plan, '--control', control.url], {
        VEER_TOKEN: TOKENS.operator,
      })
      expect(refused.code).toBe(1)
      const text = checked.problems.map((p: { path: string; message: string }) => `${p.path} ${p.message}`)
      expect(text).toHaveLength(2)
      expect(refused.stderr).toBe(`veer rollout: ${text.join('; ')} (invalid_plan)\n`)
      const good = file('api-good.yaml', 'steps: [{weight: 10, pause: 1h}, {weight: 100}]\n')
      expect((await runVeer(['check', good])).code).toBe(0)
      const started = await runCli(['rollout', 'shop', '--plan', good, '--control', control.url], {
        VEER_TOKEN: TOKENS.operator,
      })
      expect([started.code, started.stderr]).toEqual([0, ''])
    })
  })
})

/** Every file under `root` with its bytes and modification time: a dry run must leave all of it. */
function snapshot(root: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const name of readdirSync(root, { recursive: true }) as string[]) {
    const path = join(root, name)
    const s = statSync(path)
    out[name] = s.isDirectory() ? `dir ${s.mtimeMs}` : `${s.mtimeMs} ${readFileSync(path, 'base64')}`
  }
  return out
}

function holdPort(): Promise<{ server: Server; port: number }> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () =>
      resolve({ server, port: (server.address() as { port: number }).port }),
    )
  })
}

describe('--dry-run', () => {
  it('proxy: checks config and files, binds nothing (a held port is fine), one line, exit 0', async () => {
    const held = await holdPort()
    try {
      const r = await runVeer([
        'proxy',
        '--dry-run',
        '--stable',
        'http://127.0.0.1:3000',
        '--listen',
        `127.0.0.1:${held.port}`,
      ])
      expect([r.code, r.stderr]).toEqual([0, ''])
      expect(r.stdout).toBe(
        `veer proxy: dry run: config valid, 1 route (default), listen 127.0.0.1:${held.port}, admin 127.0.0.1:9901; nothing started\n`,
      )
    } finally {
      held.server.close()
    }
  })

  it('proxy: a problem is the one-line error and exit 2 a start gives', async () => {
    const ca = makeCa()
    const leaf = ca.leaf('shop', ['127.0.0.1'])
    const args = [
      '--stable',
      'http://127.0.0.1:3000',
      '--tls-cert',
      leaf.cert,
      '--tls-key',
      join(ca.dir, 'gone.key'),
    ]
    const start = await runVeer(['proxy', ...args, '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0'])
    const dry = await runVeer(['proxy', ...args, '--dry-run'])
    expect(start.code).toBe(2)
    expect([dry.code, dry.stdout, dry.stderr]).toEqual([2, '', start.stderr])
    expect(dry.stderr).toMatch(/^veer proxy: tls\.key cannot read \S+gone\.key \(no such file\)\n$/)
  })

  it('proxy with --control: the token file is read, the state dir is not created', async () => {
    const state = join(tempDir(), 'not-yet')
    const token = file('proxy-token', `${TOKENS.proxy}\n`)
    const args = [
      'proxy',
      '--dry-run',
      '--stable',
      'http://127.0.0.1:3000',
      '--control',
      'http://127.0.0.1:9900',
    ]
    const r = await runVeer([...args, '--token-file', token, '--state-dir', state])
    expect([r.code, r.stderr]).toEqual([0, ''])
    expect(r.stdout).toMatch(/, following http:\/\/127\.0\.0\.1:9900; nothing started\n$/)
    expect(existsSync(state)).toBe(false)
    const bad = await runVeer([...args, '--token-file', join(dir, 'no-token'), '--state-dir', state])
    expect([bad.code, bad.stderr]).toEqual([
      2,
      expect.stringMatching(/^veer proxy: --token-file: cannot read \S+ \(no such file\)\n$/),
    ])
  })

  it('control: reads the state dir as a start does, without its lock, leaving it byte for byte', async () => {
    const control = await startControl()
    await new FakeProxy(control, 'edge-1', [announced('shop', 0)]).register()
    expect((await control.api('PUT', '/v1/routes/shop/weights', { body: { canary: 20 } })).status).toBe(200)
    // A live control holds the dir: the dry run says so, as a second start would, and leaves its lock.
    const base = ['control', '--dry-run', '--state-dir', control.stateDir, '--token-file', control.tokenFile]
    const lock = readFileSync(join(control.stateDir, 'control.lock'), 'utf8')
    const busy = await runVeer(base)
    expect([busy.code, busy.stderr]).toEqual([
      2,
      `veer control: --state-dir: another veer control (pid ${control.child.pid}) is using it; stop it first\n`,
    ])
    expect(readFileSync(join(control.stateDir, 'control.lock'), 'utf8')).toBe(lock)
    expect(await control.stop()).toBe(0)

    const before = snapshot(control.stateDir)
    const r = await runVeer(base)
    expect([r.code, r.stderr]).toEqual([0, ''])
    expect(r.stdout).toBe(
      `veer control: dry run: config valid, listen 127.0.0.1:9900, state dir ${control.stateDir} at revision 2 (1 route), 4 tokens; nothing started\n`,
    )
    expect(snapshot(control.stateDir)).toEqual(before)

    // A torn last audit line a start would cut: said, and left in place.
    appendFileSync(join(control.stateDir, 'audit.log'), '{"torn":')
    const tornBefore = snapshot(control.stateDir)
    const torn = await runVeer(base)
    expect([torn.code, torn.stdout]).toEqual([
      0,
      expect.stringContaining(
        '; at start a torn last line of audit.log (8 bytes) would be cut; nothing started\n',
      ),
    ])
    expect(snapshot(control.stateDir)).toEqual(tornBefore)

    // A state dir a start refuses: the same lines, exit 2.
    writeFileSync(join(control.stateDir, 'state.json'), '{')
    const startArgs = [
      'control',
      '--listen',
      '127.0.0.1:0',
      '--state-dir',
      control.stateDir,
      '--token-file',
      control.tokenFile,
    ]
    const refused = await runVeer(startArgs)
    const dry = await runVeer(base)
    expect(refused.code).toBe(2)
    expect([dry.code, dry.stderr]).toEqual([2, refused.stderr])
    expect(dry.stderr).toContain('state.json: is not valid JSON')
  })

  it('control: a missing state dir is not created; a held --listen port is not bound', async () => {
    const held = await holdPort()
    const state = join(tempDir(), 'fresh')
    try {
      const r = await runVeer([
        'control',
        '--dry-run',
        '--listen',
        `127.0.0.1:${held.port}`,
        '--state-dir',
        state,
        '--token-file',
        writeTokenFile(),
      ])
      expect([r.code, r.stderr]).toEqual([0, ''])
      expect(r.stdout).toBe(
        `veer control: dry run: config valid, listen 127.0.0.1:${held.port}, state dir ${state} (missing: a start creates it), 4 tokens; nothing started\n`,
      )
      expect(existsSync(state)).toBe(false)
    } finally {
      held.server.close()
    }
    const bad = await runVeer(['control', '--dry-run', '--token-file', join(dir, 'nope')])
    expect([bad.code, bad.stderr]).toEqual([
      2,
      `veer control: --token-file ${join(dir, 'nope')}: cannot read it (ENOENT)\n`,
    ])
  })
})

describe('version and completion', () => {
  it("veer --version and veer version print package.json's version", async () => {
    for (const args of [['--version'], ['version']])
      expect(await runVeer(args)).toEqual({ code: 0, stdout: `${PKG.version}\n`, stderr: '' })
  })

  const script = spawnSync(process.execPath, [VEER_BIN, 'completion', 'bash'], { encoding: 'utf8' }).stdout
  /** What bash's completion function offers for `words`, the last one being completed. */
  function complete(...words: string[]): string[] {
    const path = file('veer.bash', script)
    const quoted = words.map((w) => `'${w}'`).join(' ')
    const r = spawnSync(
      'bash',
      [
        '-c',
        `source ${path}; COMP_WORDS=(veer ${quoted}); COMP_CWORD=${words.length}; _veer; printf '%s\\n' "\${COMPREPLY[@]}"`,
      ],
      { encoding: 'utf8', cwd: dir },
    )
    expect(r.stderr).toBe('')
    return r.stdout.split('\n').filter((l) => l !== '')
  }

  it("bash: commands, each command's own flags from its parser table, and flag values", () => {
    expect(complete('st')).toEqual(['status'])
    expect(complete('ch')).toEqual(['check'])
    expect(complete('--v')).toEqual(['--version'])
    expect(complete('proxy', '--').sort()).toEqual(
      Object.keys(PROXY_OPTIONS)
        .map((f) => `--${f}`)
        .sort(),
    )
    expect(complete('control', '--').sort()).toEqual(
      Object.keys(CONTROL_OPTIONS)
        .map((f) => `--${f}`)
        .sort(),
    )
    expect(complete('status', '--w')).toEqual(['--watch'])
    // --watch is status's alone; --plan is rollout's.
    expect(complete('set-weight', '--w')).toEqual([])
    expect(complete('rollout', '--p')).toEqual(['--plan'])
    expect(complete('check', '--kind', '')).toEqual(['proxy', 'control', 'plan'])
    expect(complete('status', '--output', '')).toEqual(['table', 'json'])
    expect(complete('check', '--output', 'j')).toEqual(['json'])
    expect(complete('completion', '')).toEqual(['bash', 'zsh', 'fish'])
    // Files for --config and check's FILE (cwd is the test's dir), nothing for a free value.
    expect(complete('proxy', '--config', 'control')).toEqual([
      'control.yaml',
      'control2.yaml',
      'control3.yaml',
    ])
    expect(complete('check', 'ok.j')).toEqual(['ok.json'])
    expect(complete('proxy', '--listen', '')).toEqual([])
  })

  it('zsh runs the bash function; fish lists every command', async () => {
    const zsh = await runVeer(['completion', 'zsh'])
    expect(zsh.stdout).toMatch(/^#compdef veer\n/)
    expect(zsh.stdout).toContain('complete -F _veer veer')
    const fish = await runVeer(['completion', 'fish'])
    for (const c of ['proxy', 'control', 'status', 'check', 'completion'])
      expect(fish.stdout).toContain(` -a ${c} -d `)
    expect(fish.stdout).toContain(
      '-n "__fish_seen_subcommand_from check" -l kind -x -a \'proxy control plan\'',
    )
    expect((await runVeer(['completion', 'tcsh'])).code).toBe(2)
  })
})

describe('veer status --watch', () => {
  let control: ControlProcess
  const env = { ...process.env, VEER_TOKEN: TOKENS.operator }
  beforeAll(async () => {
    control = await startControl()
    await new FakeProxy(control, 'edge-1', [announced('shop', 0)]).register()
  })
  afterAll(async () => {
    expect(await control?.stop()).toBe(0)
  })

  /** `veer ARGS` with its stdout read line by line: `line(n)` waits for the n-th (from 0). */
  function watch(command: string, args: string[]) {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    const waiting: { n: number; resolve: (l: string) => void }[] = []
    const lines = () => out.split('\n').slice(0, -1)
    child.stdout.on('data', (d) => {
      out += d
      for (const w of [...waiting]) if (lines().length > w.n) w.resolve(lines()[w.n]!)
    })
    child.stderr.on('data', (d) => (err += d))
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)))
    return {
      child,
      out: () => out,
      err: () => err,
      exited,
      line: (n: number) =>
        lines().length > n
          ? Promise.resolve(lines()[n]!)
          : new Promise<string>((resolve) => waiting.push({ n, resolve })),
    }
  }

  it('--output json: one JSON document a line, a new one per change, no screen codes', async () => {
    const w = watch(process.execPath, [
      VEER_BIN,
      'status',
      '--watch',
      '--output',
      'json',
      '--control',
      control.url,
    ])
    try {
      const first = JSON.parse(await w.line(0))
      expect(first.routes.map((r: { name: string }) => r.name)).toEqual(['shop'])
      expect((await control.api('PUT', '/v1/routes/shop/weights', { body: { canary: 30 } })).status).toBe(200)
      const second = JSON.parse(await w.line(1))
      expect(second.routes[0].weights.canary).toBe(30)
      expect(w.out()).not.toContain('\x1b')
    } finally {
      w.child.kill()
    }
  })

  it('into a pipe: the table with no screen codes', async () => {
    const w = watch(process.execPath, [VEER_BIN, 'status', '--watch', '--control', control.url])
    try {
      expect(await w.line(0)).toMatch(/^\d{4}-\d\d-\d\dT\S+Z$/)
      expect(await w.line(1)).toMatch(/^ROUTE\s+STABLE/)
      expect(w.out()).not.toContain('\x1b')
    } finally {
      w.child.kill()
    }
  })

  it('| head -1: exits 0 once the reader is gone, without a stack trace', async () => {
    const cmd = `set -o pipefail; '${process.execPath}' '${VEER_BIN}' status --watch --output json --control ${control.url} | head -1`
    const w = watch('bash', ['-c', cmd])
    JSON.parse(await w.line(0))
    // The next document (after this change) meets the closed pipe.
    expect((await control.api('PUT', '/v1/routes/shop/weights', { body: { canary: 40 } })).status).toBe(200)
    expect(await w.exited).toBe(0)
    expect(w.err()).toBe('')
  })

  it('--output json: an error is JSON on stdout with the same exit code', async () => {
    const r = await runCli(['status', 'nosuch', '--output', 'json', '--control', control.url], {
      VEER_TOKEN: TOKENS.operator,
    })
    expect([r.code, r.stderr]).toEqual([1, ''])
    expect(JSON.parse(r.stdout)).toEqual({ error: 'unknown_route', message: expect.any(String) })
    const u = await runCli(['status', '--wach', '--output', 'json'])
    expect([u.code, u.stdout]).toEqual([
      2,
      `${JSON.stringify({ error: 'usage', message: 'unknown flag --wach (did you mean --watch?); see veer status --help' })}\n`,
    ])
  })

  it('argument errors in plain words, with a did-you-mean when close', async () => {
    const close = await runCli(['status', '--wach'])
    expect([close.code, close.stderr]).toEqual([
      2,
      'veer status: unknown flag --wach (did you mean --watch?); see veer status --help\n',
    ])
    const far = await runCli(['status', '--xyzzy'])
    expect(far.stderr).toBe('veer status: unknown flag --xyzzy; see veer status --help\n')
    const value = await runCli(['status', '--output'])
    expect(value.stderr).toBe('veer status: --output needs a value; see veer status --help\n')
    const command = await runCli(['stauts'])
    expect([command.code, command.stderr]).toEqual([
      2,
      'veer stauts: unknown command "stauts" (did you mean status?); see veer --help\n',
    ])
  })
})
