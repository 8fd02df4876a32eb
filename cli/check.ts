/**
 * `veer check FILE`: validate a proxy config, a control config or a rollout plan without starting
 * anything, through the very loaders and checks `veer proxy`, `veer control` and the rollout API use,
 * and print every problem at once. Exit 0 valid, 1 problems, 2 usage (bad flag, unreadable file, a file
 * whose kind cannot be told).
 */
import { readFileSync } from 'node:fs'
import { controlConfigField, loadControlConfig } from '../config/control-config.ts'
import { formatDuration } from '../config/duration.ts'
import { loadConfigFile, parseYaml } from '../config/load.ts'
import { configField } from '../config/schema.ts'
import type { Issue } from '../config/schema-kit.ts'
import type { ProxyConfig } from '../config/types.ts'
import { readControlFiles } from '../control/args.ts'
import { BodyError, parsePlan, planBody } from '../control/schemas.ts'
import { readStartFiles } from '../proxy/main.ts'
import { CliError, usage } from './client.ts'
import { parseFlags } from './flags.ts'

export const KINDS = ['proxy', 'control', 'plan'] as const
type Kind = (typeof KINDS)[number]
export const CHECK_OUTPUTS = ['text', 'json'] as const

const NAMES: Record<Kind, string> = { proxy: 'proxy config', control: 'control config', plan: 'rollout plan' }

/** Each kind's top-level keys, from its schema: what tells the kinds apart. */
const KEYS: Record<Kind, readonly string[]> = {
  proxy: Object.keys(configField.json.properties as object),
  control: Object.keys(controlConfigField.json.properties as object),
  plan: Object.keys(planBody.json.properties as object),
}

export const CHECK_OPTIONS = {
  kind: { type: 'string' },
  output: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const

export const CHECK_HELP = `Usage: veer check FILE [--kind proxy|control|plan] [--output text|json]

Validate a veer proxy config, a veer control config or a rollout plan (YAML or JSON) as veer proxy,
veer control and veer rollout would, and print every problem, one a line, with its field path.
Without --kind the kind is told by the file's top-level keys: a key only one kind has (routes: proxy;
stateDir, tokenFile, webhooks: control; steps, mode, preview, smoke, analysis, reason: plan) decides.
The files a config names (TLS certificates and keys, upstream CA files, control's token file) are
read too, relative to the current directory as at start.

  --kind KIND            proxy, control or plan: skip the guess
  --output text|json     one line per problem (default), or one JSON document
  -h, --help             this help
Exit codes: 0 valid, 1 problems (listed), 2 usage (bad flag, unreadable file, kind not told).
`

interface Report {
  readonly kind: Kind
  readonly problems: readonly Issue[]
  /** What was checked, for a valid file. */
  readonly summary: string
}

/** The kind `doc` is by its top-level keys: a key that only one kind has decides. */
function guessKind(file: string, doc: unknown): Kind {
  const hint = `pass --kind ${KINDS.join('|')}`
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc))
    throw usage(`${file}: cannot tell which kind of file it is (it is not a mapping of settings); ${hint}`)
  const keys = Object.keys(doc)
  const own = (kind: Kind, key: string) =>
    KEYS[kind].includes(key) && KINDS.every((k) => k === kind || !KEYS[k].includes(key))
  const found = KINDS.filter((kind) => keys.some((key) => own(kind, key)))
  if (found.length === 1) return found[0]!
  const list = keys.length === 0 ? 'it has no keys' : `its top-level keys: ${keys.join(', ')}`
  const why =
    found.length > 1
      ? `it has keys of a ${found.map((k) => NAMES[k]).join(' and a ')}`
      : `no key only one kind has (${list})`
  throw usage(
    `${file}: cannot tell whether it is a proxy config, a control config or a plan: ${why}; ${hint}`,
  )
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`

async function checkProxy(file: string): Promise<Report> {
  const loaded = await loadConfigFile(file)
  if (!loaded.ok) return { kind: 'proxy', problems: loaded.issues, summary: '' }
  const config: ProxyConfig = loaded.config
  const files = await readStartFiles(config)
  if (Array.isArray(files)) return { kind: 'proxy', problems: files, summary: '' }
  const names = config.routes.map((r) => r.name).join(', ')
  const read = files.tls === null && files.trust.size === 0 ? '' : '; its TLS and CA files read'
  return {
    kind: 'proxy',
    problems: [],
    summary: `${plural(config.routes.length, 'route')} (${names}), listen ${config.listen.host}:${config.listen.port}, admin ${config.admin.host}:${config.admin.port}${files.tls === null ? '' : ', TLS'}${read}`,
  }
}

async function checkControl(file: string): Promise<Report> {
  const loaded = await loadControlConfig(file, {})
  if (!loaded.ok) return { kind: 'control', problems: loaded.issues, summary: '' }
  const config = loaded.config
  // The file's own token file only: VEER_TOKEN is the environment's, not the file's.
  const files = await readControlFiles(config, { ...process.env, VEER_TOKEN: undefined }, false)
  if ('problems' in files)
    return { kind: 'control', problems: files.problems.map((p) => p.issue), summary: '' }
  const tokens =
    config.tokenFile === null
      ? 'no token file (give --token-file or VEER_TOKEN at start)'
      : `token file ${config.tokenFile} (${plural(files.tokens.size, 'token')})`
  return {
    kind: 'control',
    problems: [],
    summary: `listen ${config.listen.host}:${config.listen.port}${files.tls === null ? '' : ' with TLS'}, state dir ${config.stateDir}, ${tokens}${config.webhooks.length === 0 ? '' : `, ${plural(config.webhooks.length, 'webhook')}`}`,
  }
}

function checkPlan(value: unknown): Report {
  let plan: ReturnType<typeof parsePlan>['plan']
  try {
    ;({ plan } = parsePlan(value))
  } catch (err) {
    if (err instanceof BodyError) return { kind: 'plan', problems: err.issues, summary: '' }
    throw err
  }
  const steps = plan.steps
    .map((s) => `${s.weight}% ${s.pause === null ? 'until promote' : formatDuration(s.pause)}`)
    .join(', ')
  const analysis = plan.analysis.enabled ? 'analysis on' : 'analysis off'
  return {
    kind: 'plan',
    problems: [],
    summary: `${plan.mode}, ${plural(plan.steps.length, 'step')} (${steps}), ${analysis}${plan.smoke ? ', smoke check' : ''}`,
  }
}

export async function runCheck(argv: string[]): Promise<void> {
  const json = argv.some((a, i) => a === '--output=json' || (a === '--output' && argv[i + 1] === 'json'))
  try {
    await check(argv, json)
  } catch (err) {
    if (!(err instanceof CliError) || !json) throw err
    process.stdout.write(`${err.json()}\n`)
    process.exitCode = err.exitCode
  }
}

async function check(argv: string[], json: boolean): Promise<void> {
  let parsed: ReturnType<typeof parseFlags<typeof CHECK_OPTIONS>>
  try {
    parsed = parseFlags('check', argv, CHECK_OPTIONS, { positionals: true })
  } catch (err) {
    throw usage((err as Error).message)
  }
  const { values, positionals } = parsed
  if (values.help === true) {
    process.stdout.write(CHECK_HELP)
    return
  }
  if (positionals.length !== 1)
    throw usage(`usage: veer check FILE [--kind ${KINDS.join('|')}] [--output ${CHECK_OUTPUTS.join('|')}]`)
  const output = values.output ?? 'text'
  if (!(CHECK_OUTPUTS as readonly string[]).includes(output))
    throw usage(`--output must be ${CHECK_OUTPUTS.join(' or ')} (got ${JSON.stringify(output)})`)
  const given = values.kind
  if (given !== undefined && !(KINDS as readonly string[]).includes(given))
    throw usage(`--kind must be one of ${KINDS.join(', ')} (got ${JSON.stringify(given)})`)
  const file = positionals[0]!
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw usage(`${file}: cannot read it (${(err as NodeJS.ErrnoException).code})`)
  }
  const doc = parseYaml(text, '')
  let report: Report
  if (!doc.ok) report = { kind: (given as Kind | undefined) ?? 'proxy', problems: doc.issues, summary: '' }
  else {
    const kind = (given as Kind | undefined) ?? guessKind(file, doc.value)
    report =
      kind === 'proxy'
        ? await checkProxy(file)
        : kind === 'control'
          ? await checkControl(file)
          : checkPlan(doc.value)
  }
  const valid = report.problems.length === 0
  const kindName = doc.ok ? NAMES[report.kind] : 'YAML or JSON file'
  if (json) {
    const out = {
      file,
      kind: doc.ok ? report.kind : null,
      valid,
      problems: report.problems.map((p) => ({ path: p.path, message: p.message })),
      ...(valid ? { summary: report.summary } : {}),
    }
    process.stdout.write(`${JSON.stringify(out)}\n`)
  } else if (valid) process.stdout.write(`${file}: valid ${kindName}: ${report.summary}\n`)
  else {
    const lines = report.problems.map((p) => `${file}: ${p.path === '' ? '' : `${p.path}: `}${p.message}`)
    lines.push(`${file}: ${plural(report.problems.length, 'problem')} in this ${kindName}`)
    process.stdout.write(`${lines.join('\n')}\n`)
  }
  if (!valid) process.exitCode = 1
}
