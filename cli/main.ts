/**
 * `veer COMMAND …`: dispatch to the data plane, the control process, or the operator client. Each
 * command's modules are loaded only when it runs: the operator client starts without loading the
 * proxy's dependencies (OpenTelemetry, prom-client, undici pools).
 */
import cluster from 'node:cluster'
import { CliError } from './client.ts'
import { OPS_COMMANDS, type OpsCommand } from './ops-commands.ts'

const HELP = `Usage: veer COMMAND [flags]

Commands:
  proxy       the data plane: weighted, sticky and override routing between stable and canary
  control     the control process: HTTP API, staged rollouts, durable state and audit log
  status      routes, weights, rollout step and time left, proxies in sync
  history     a route's audit entries: who changed what, when and why
  set-weight  set a route's canary weight
  shadow      set the percent of a route's requests mirrored to its shadow
  rollout     start a staged rollout from a plan file
  promote-shadow
              make a route's shadow its canary at 0% and start a rollout of it from a plan file
  promote     move a rollout to its next step (--full: to 100%)
  pause, resume
              hold a rollout at its step / continue it
  abort       roll back: canary 0% at once

Run veer COMMAND --help for the flags of a command. The operator commands exit 0 when done,
1 when the API refused, 2 on a usage error, 3 when control cannot be reached.
`

/** A usage error of any command: exit 2 with its lines. */
class UnknownCommand extends Error {}

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
  throw new UnknownCommand(`unknown command ${JSON.stringify(command)}; see veer --help`)
}

/** Whether `err` is one of the usage errors of the command that ran (their modules are loaded by now). */
async function isUsage(command: string, err: unknown): Promise<boolean> {
  if (err instanceof UnknownCommand) return true
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
