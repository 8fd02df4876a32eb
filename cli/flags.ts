/**
 * Every `veer` command's flags go through `parseFlags`: node:util's parseArgs, with its errors put in
 * plain words (`unknown flag --wach (did you mean --watch?); see veer status --help`). The option
 * tables the commands pass here are also what `veer completion` completes.
 */
import { parseArgs } from 'node:util'

export type Options = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>

export class FlagsError extends Error {}

/** Edit distance (insert, delete, replace, swap of neighbours): what a typo of a flag is away from it. */
export function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)])
  for (let j = 1; j <= b.length; j++) d[0]![j] = j
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1)
    }
  return d[a.length]![b.length]!
}

/** The closest of `names` to `word`, when it is close enough to be a typo of it (a third of its length). */
export function closest(word: string, names: Iterable<string>): string | null {
  let best: string | null = null
  let bestD = Infinity
  for (const name of names) {
    const d = distance(word, name)
    if (d < bestD) [best, bestD] = [name, d]
  }
  return best !== null && bestD <= Math.max(1, Math.floor(best.length / 3)) ? best : null
}

/** ` (did you mean X?)` when `word` is a typo of one of `names`, else nothing. */
export function didYouMean(word: string, names: Iterable<string>): string {
  const near = closest(word, names)
  return near === null ? '' : ` (did you mean ${near}?)`
}

/**
 * `argv` parsed by `options` for `veer COMMAND`; a FlagsError in plain words otherwise. `flags`: the
 * flags this command takes, for the did-you-mean (default: every option).
 */
export function parseFlags<O extends Options>(
  command: string,
  argv: string[],
  options: O,
  opts: { positionals?: boolean; flags?: readonly string[] } = {},
) {
  const see = `see veer ${command} --help`
  try {
    return parseArgs({ args: argv, strict: true, allowPositionals: opts.positionals ?? false, options })
  } catch (err) {
    const e = err as Error & { code?: string }
    const quoted = /'([^']*)'/.exec(e.message)?.[1] ?? ''
    const flag = quoted.split(/[ =]/)[0]!
    if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      const names = (opts.flags ?? Object.keys(options)).map((f) => `--${f}`)
      throw new FlagsError(`unknown flag ${flag}${didYouMean(flag, names)}; ${see}`)
    }
    if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      const long = /--([\w-]+)/.exec(quoted)?.[1] ?? flag
      throw new FlagsError(
        options[long]?.type === 'boolean'
          ? `--${long} takes no value; ${see}`
          : `--${long} needs a value; ${see}`,
      )
    }
    if (e.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL')
      throw new FlagsError(
        `unexpected argument ${JSON.stringify(quoted)}: veer ${command} takes flags only; ${see}`,
      )
    throw new FlagsError(`${e.message.split('\n')[0]}; ${see}`)
  }
}
