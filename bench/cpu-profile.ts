// Self time of a V8 .cpuprofile (node --cpu-prof), by function and by file: the parser bench/h2-profile.ts
// prints its tables with, and a CLI for profiles taken by hand:
//   node bench/cpu-profile.ts DIR_OR_FILE... [--top N]
// sums every .cpuprofile given (or found in a directory) and prints the top self-time entries.
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { basename, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  hitCount?: number
}

export interface SelfTimes {
  /** µs sampled, idle left out */
  total: number
  byFn: Map<string, number>
  byFile: Map<string, number>
}

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)))

/** Self time by function and by file over the whole profile, in µs; `root` shortens this checkout's paths. */
export function selfTimes(file: string, root = ROOT): SelfTimes {
  const p = JSON.parse(readFileSync(file, 'utf8')) as {
    nodes: ProfileNode[]
    samples: number[]
    timeDeltas: number[]
  }
  const nodes = new Map(p.nodes.map((n) => [n.id, n]))
  const byFn = new Map<string, number>()
  const byFile = new Map<string, number>()
  let total = 0
  for (let i = 0; i < p.samples.length; i++) {
    const n = nodes.get(p.samples[i]!)!
    const dt = p.timeDeltas[i + 1] ?? 0
    const f = n.callFrame
    if (f.functionName === '(idle)') continue
    total += dt
    const where = f.url === '' ? '' : shortUrl(f.url, root)
    const fn = `${f.functionName || '(anonymous)'} ${where}${where === '' ? '' : `:${f.lineNumber + 1}`}`
    byFn.set(fn, (byFn.get(fn) ?? 0) + dt)
    const key = where === '' ? f.functionName : where
    byFile.set(key, (byFile.get(key) ?? 0) + dt)
  }
  return { total, byFn, byFile }
}

function shortUrl(url: string, root: string): string {
  const u = url.replace(/^file:\/\//, '')
  const nm = u.lastIndexOf('node_modules/')
  if (nm !== -1) return u.slice(nm + 'node_modules/'.length)
  if (u.startsWith(root)) return u.slice(root.length + 1)
  return u.startsWith('node:') ? u : basename(u)
}

/** Self time of several profiles, summed. */
export function sumProfiles(files: readonly string[], root = ROOT): SelfTimes {
  const sum: SelfTimes = { total: 0, byFn: new Map(), byFile: new Map() }
  for (const f of files) {
    const t = selfTimes(f, root)
    sum.total += t.total
    for (const [k, v] of t.byFn) sum.byFn.set(k, (sum.byFn.get(k) ?? 0) + v)
    for (const [k, v] of t.byFile) sum.byFile.set(k, (sum.byFile.get(k) ?? 0) + v)
  }
  return sum
}

/** The .cpuprofile files in `dir`. */
export function profilesIn(dir: string): string[] {
  return readdirSync(dir)
    .filter((x) => x.endsWith('.cpuprofile'))
    .map((x) => join(dir, x))
}

/** Print the top `n` entries of `map` as shares of `total`. */
export function printTop(title: string, map: Map<string, number>, total: number, n: number): void {
  console.log(`\n${title} (of ${(total / 1e6).toFixed(1)} s sampled, warm-up and start included)`)
  for (const [k, v] of [...map].sort((a, b) => b[1] - a[1]).slice(0, n)) {
    console.log(`  ${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}`)
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const argv = process.argv.slice(2)
  const at = argv.indexOf('--top')
  const top = at === -1 ? 40 : Number(argv.splice(at, 2)[1])
  if (argv.length === 0 || !Number.isInteger(top) || top <= 0) {
    console.log('usage: node bench/cpu-profile.ts DIR_OR_FILE... [--top N]')
    process.exit(2)
  }
  const files = argv.flatMap((a) => (statSync(a).isDirectory() ? profilesIn(a) : [a]))
  const t = sumProfiles(files)
  printTop(`top self time by function, ${files.length} profile(s)`, t.byFn, t.total, top)
  printTop('self time by file', t.byFile, t.total, Math.min(top, 20))
}
