/** `veer COMMAND …`: dispatch to the data plane or (later) the control process and its client. */
import { FlagError } from '../proxy/args.ts'
import { runProxy, UsageError } from '../proxy/main.ts'

const HELP = `Usage: veer COMMAND [flags]

Commands:
  proxy     the data plane: weighted, sticky and override routing between stable and canary
  control   the control process (API, rollouts, durable state)          [planned]
  status, set-weight, rollout, promote, abort, pause, resume
            operator client of the control API                          [planned]

Run veer COMMAND --help for the flags of a command.
`

const PLANNED = new Set(['control', 'status', 'set-weight', 'rollout', 'promote', 'abort', 'pause', 'resume'])

export async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv
  try {
    if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
      process.stdout.write(HELP)
      return
    }
    if (command === 'proxy') return await runProxy(rest)
    if (PLANNED.has(command))
      throw new UsageError(`${command}: not available in this build yet; only "veer proxy" is`)
    throw new UsageError(`unknown command ${JSON.stringify(command)}; see veer --help`)
  } catch (err) {
    if (err instanceof UsageError || err instanceof FlagError) {
      for (const line of err.message.split('\n')) process.stderr.write(`veer ${command}: ${line}\n`)
      process.exitCode = 2
      return
    }
    throw err
  }
}
