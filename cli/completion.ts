/**
 * `veer completion bash|zsh|fish`: a completion script of the commands and each command's flags, made
 * from the tables the parsers themselves use (COMMANDS, each command's options), so it cannot drift
 * from what veer takes.
 */
import { CONTROL_OPTIONS } from '../control/args.ts'
import { PROXY_OPTIONS } from '../proxy/args.ts'
import { CHECK_OPTIONS, CHECK_OUTPUTS, KINDS } from './check.ts'
import { usage } from './client.ts'
import type { Options } from './flags.ts'
import { COMMANDS } from './main.ts'
import { OPS_OPTIONS, OUTPUTS, opsFlags } from './ops.ts'
import { OPS_COMMANDS, type OpsCommand } from './ops-commands.ts'

export const SHELLS = ['bash', 'zsh', 'fish'] as const

/** Flags whose value is a file or a directory (the parsers see only strings). */
const FILES = new Set(['config', 'plan', 'token-file', 'tls-cert', 'tls-key'])
const DIRS = new Set(['state-dir'])

interface Flag {
  readonly name: string
  /** Takes a value (a string option). */
  readonly value: boolean
  readonly choices: readonly string[] | null
}

interface Command {
  readonly name: string
  readonly about: string
  readonly flags: readonly Flag[]
  /** What a word that is not a flag is: a file (check), a shell (completion), or nothing offered. */
  readonly words: 'files' | readonly string[] | null
}

function flagsOf(options: Options, names: readonly string[], choices: Record<string, readonly string[]>) {
  return names.map((name) => ({
    name,
    value: options[name]!.type === 'string',
    choices: choices[name] ?? null,
  }))
}

function commands(): Command[] {
  return COMMANDS.map(([name, about]): Command => {
    if (name === 'proxy')
      return { name, about, flags: flagsOf(PROXY_OPTIONS, Object.keys(PROXY_OPTIONS), {}), words: null }
    if (name === 'control')
      return { name, about, flags: flagsOf(CONTROL_OPTIONS, Object.keys(CONTROL_OPTIONS), {}), words: null }
    if (name === 'check') {
      const flags = flagsOf(CHECK_OPTIONS, Object.keys(CHECK_OPTIONS), { kind: KINDS, output: CHECK_OUTPUTS })
      return { name, about, flags, words: 'files' }
    }
    if (name === 'completion') return { name, about, flags: [], words: SHELLS }
    if (OPS_COMMANDS.has(name)) {
      const flags = flagsOf(OPS_OPTIONS, opsFlags(name as OpsCommand), { output: OUTPUTS })
      return { name, about, flags, words: null }
    }
    return { name, about, flags: [], words: null }
  })
}

const words = (list: readonly string[]) => list.join(' ')

function bash(list: Command[]): string {
  const top = words([...list.map((c) => c.name), '--help', '--version'])
  const perCommand = list
    .map((c) => {
      const cases: string[] = []
      const files = c.flags.filter((f) => FILES.has(f.name)).map((f) => `--${f.name}`)
      const dirs = c.flags.filter((f) => DIRS.has(f.name)).map((f) => `--${f.name}`)
      const chosen = c.flags.filter((f) => f.choices !== null)
      const free = c.flags.filter(
        (f) => f.value && f.choices === null && !FILES.has(f.name) && !DIRS.has(f.name),
      )
      for (const f of chosen)
        cases.push(
          `        --${f.name}) COMPREPLY=($(compgen -W "${words(f.choices!)}" -- "$cur")); return ;;`,
        )
      if (files.length > 0)
        cases.push(`        ${files.join('|')}) COMPREPLY=($(compgen -f -- "$cur")); return ;;`)
      if (dirs.length > 0)
        cases.push(`        ${dirs.join('|')}) COMPREPLY=($(compgen -d -- "$cur")); return ;;`)
      if (free.length > 0)
        cases.push(`        ${free.map((f) => `--${f.name}`).join('|')}) COMPREPLY=(); return ;;`)
      const flags = words(c.flags.map((f) => `--${f.name}`))
      const other =
        c.words === 'files'
          ? 'COMPREPLY=($(compgen -f -- "$cur"))'
          : c.words === null
            ? `COMPREPLY=($(compgen -W "${flags}" -- "$cur"))`
            : `COMPREPLY=($(compgen -W "${words(c.words)}" -- "$cur"))`
      return [
        `    ${c.name})`,
        ...(cases.length > 0 ? ['      case "$prev" in', ...cases, '      esac'] : []),
        `      if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W "${flags}" -- "$cur")); else ${other}; fi`,
        '      ;;',
      ].join('\n')
    })
    .join('\n')
  return `# veer completion for bash: source <(veer completion bash), or save it in
# /etc/bash_completion.d/veer. Made by veer completion bash from the flags veer parses.
_veer() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="\${COMP_WORDS[COMP_CWORD-1]}"
  if [[ $COMP_CWORD -eq 1 ]]; then
    COMPREPLY=($(compgen -W "${top}" -- "$cur"))
    return
  fi
  case "\${COMP_WORDS[1]}" in
${perCommand}
    *) COMPREPLY=() ;;
  esac
}
complete -F _veer veer
`
}

function zsh(list: Command[]): string {
  // zsh runs the bash function through its bashcompinit layer: one script, the same lists.
  return `#compdef veer
# veer completion for zsh: source <(veer completion zsh), or save it as _veer on your $fpath.
autoload -U +X bashcompinit && bashcompinit
${bash(list).split('\n').slice(2).join('\n')}`
}

const quoted = (text: string) => `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`

function fish(list: Command[]): string {
  const names = words(list.map((c) => c.name))
  const lines = [
    '# veer completion for fish: veer completion fish > ~/.config/fish/completions/veer.fish',
    'complete -c veer -f',
    ...list.map(
      (c) =>
        `complete -c veer -n "not __fish_seen_subcommand_from ${names}" -a ${c.name} -d ${quoted(c.about)}`,
    ),
    'complete -c veer -n "not __fish_seen_subcommand_from ' +
      names +
      '" -l version -d ' +
      quoted('print the version'),
  ]
  for (const c of list) {
    const when = `-n "__fish_seen_subcommand_from ${c.name}"`
    for (const f of c.flags) {
      const value =
        f.choices !== null
          ? ` -x -a ${quoted(words(f.choices))}`
          : FILES.has(f.name) || DIRS.has(f.name)
            ? ' -r -F'
            : f.value
              ? ' -x'
              : ''
      lines.push(`complete -c veer ${when} -l ${f.name}${value}`)
    }
    if (c.words === 'files') lines.push(`complete -c veer ${when} -F`)
    else if (c.words !== null) lines.push(`complete -c veer ${when} -a ${quoted(words(c.words))}`)
  }
  return `${lines.join('\n')}\n`
}

export const COMPLETION_HELP = `Usage: veer completion ${SHELLS.join('|')}

Print a script that completes veer's commands and flags (and the choices of --kind, --output, the
files of --config, --plan, --token-file, --tls-cert, --tls-key):
  source <(veer completion bash)        # ~/.bashrc
  source <(veer completion zsh)         # ~/.zshrc
  veer completion fish > ~/.config/fish/completions/veer.fish
`

export async function runCompletion(argv: string[]): Promise<void> {
  const [shell, ...rest] = argv
  if (shell === '--help' || shell === '-h') {
    process.stdout.write(COMPLETION_HELP)
    return
  }
  if (shell === undefined || rest.length > 0 || !(SHELLS as readonly string[]).includes(shell))
    throw usage(`usage: veer completion ${SHELLS.join('|')} (got ${JSON.stringify(argv.join(' '))})`)
  const list = commands()
  process.stdout.write(shell === 'bash' ? bash(list) : shell === 'zsh' ? zsh(list) : fish(list))
}
