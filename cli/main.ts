/**
 * `veer COMMAND …`: dispatch to the data plane, the control process, or the operator client. Each
 * command's modules are loaded only when it runs: the operator client starts without loading the
 * proxy's dependencies (OpenTelemetry, prom-client, undici pools).
 */
import cluster from 'node:cluster'
import { readFileSync } from 'node:fs'
import { CliError } from './client.ts'
import { didYouMean, FlagsError } from './flags.ts'
import { OPS_COMMANDS, type OpsCommand } from './ops-commands.ts'

/** Every command with its line of `veer --help`: the dispatcher's list, and `veer completion`'s. */
export const COMMANDS: readonly (readonly [name: string, about: string])[] = [
  ['proxy', 'the data plane: weighted, sticky and override routing between stable and canary'],
  ['control', 'the control process: HTTP API, staged rollouts, durable state and audit log'],
  ['status', 'routes, weights, rollout step and time left, proxies in sync'],
  ['history', "a route's audit entries: who changed what, when and why"],
  ['set-weight', "set a route's canary weight"],
  ['shadow', "set the percent of a route's requests mirrored to its shadow"],
  ['rollout', 'start a staged rollout from a plan file'],
  ['promote-shadow', "make a route's shadow its canary at 0% and start a rollout of it from a plan file"],
  ['promote', 'move a rollout to its next step (--full: to 100%)'],
  ['pause', 'hold a rollout at its step'],
  ['resume', 'continue a paused rollout'],
  ['abort', 'roll back: canary 0% at once'],
  ['check', 'validate a proxy config, control config or rollout plan file: every problem at once'],
  ['completion', 'print a shell completion script: veer completion bash|zsh|fish'],
  ['version', "print veer's version (also veer --version)"],
]

const HELP = `Usage: veer COMMAND [flags]

Commands:
${COMMANDS.map(([name, about]) => (name.length < 12 ? `  ${name.padEnd(12)}${about}` : `  ${name}\n  ${' '.repeat(12)}${about}`)).join('\n')}

Run veer COMMAND --help for the flags of a command. The operator commands exit 0 when done,
1 when the API refused, 2 on a usage error, 3 when control cannot be reached.
`

/** A usage error of any command: exit 2 with its lines. */
class UnknownCommand extends Error {}

/** package.json's version: next to cli/ in the sources, two levels up from dist/cli/ in the build. */
function version(): string {
  for (const path of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(path, import.meta.url), 'utf8')) as {
        name?: string
        version?: string
      }
      if (pkg.name === 'veer' && typeof pkg.version === 'string') return pkg.version
    } catch {}
  }
  throw new Error('package.json of veer not found next to its sources')
}

async function run(command: string, rest: string[]): Promise<void> {
  if (command === 'proxy') {
    const { runProxy } = await import('../proxy/main.ts')
    return runProxy(rest)
  }
  if (command === 'control') {
    const { runControl } = await import('../control/main.ts')
    return runControl(rest)
  }
  if (OPS_COMMANDS.has(command)) {
    const { runOps } = await import('./ops.ts')
    return runOps(command as OpsCommand, rest)
  }
  if (command === 'check') {
    const { runCheck } = await import('./check.ts')
    return runCheck(rest)
  }
  if (command === 'completion') {
    const { runCompletion } = await import('./completion.ts')
    return runCompletion(rest)
  }
  if (command === 'version') {
    process.stdout.write(`${version()}\n`)
    return
  }
  const names = COMMANDS.map(([name]) => name)
  throw new UnknownCommand(
    `unknown command ${JSON.stringify(command)}${didYouMean(command, names)}; see veer --help`,
  )
}

/** Whether `err` is one of the usage errors of the command that ran (their modules are loaded by now). */
async function isUsage(command: string, err: unknown): Promise<boolean> {
  if (err instanceof UnknownCommand || err instanceof FlagsError) return true
  if (command === 'proxy') {
    const [{ FlagError }, { UsageError }] = await Promise.all([
      import('../proxy/args.ts'),
      import('../proxy/main.ts'),
    ])
    return err instanceof FlagError || err instanceof UsageError
  }
  if (command === 'control') return err instanceof (await import('../control/args.ts')).ControlUsageError
  return false
}

export async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(HELP)
    return
  }
  if (command === '--version') {
    process.stdout.write(`${version()}\n`)
    return
  }
  // A client's reader that went away (`veer status --watch | head -1`) ends it quietly, as for other
  // Unix tools. The servers log through their own stream and are left alone.
  if (command !== 'proxy' && command !== 'control')
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err
      process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0)
    })
  try {
    await run(command, rest)
  } catch (err) {
    if (await isUsage(command, err)) {
      for (const line of (err as Error).message.split('\n'))
        process.stderr.write(`veer ${command}: ${line}\n`)
      process.exitCode = 2
      // A --workers worker's IPC channel would keep it alive: exit, so the primary sees why.
      if (cluster.isWorker) process.exit(2)
      return
    }
    if (err instanceof CliError) {
      process.stderr.write(`veer ${command}: ${err.message}\n`)
      process.exitCode = err.exitCode
      return
    }
    throw err
  }
}
