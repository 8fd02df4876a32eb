/**
 * A real Prometheus (Debian's /usr/bin/prometheus) for tests: a generated config scraping the targets
 * given, a temp TSDB, an ephemeral port (it listens on 127.0.0.1:0 and logs the port it bound:
 * `msg="Listening on" address=127.0.0.1:PORT`). `start` resolves once /-/ready answers 200 and every
 * target is up; `stop` in afterAll.
 *
 *   const prom = await startPrometheus({ scrape: [{ job: 'app', targets: [app.url] }] })
 *   const v = await prom.value('sum(up)')
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { until } from './control.ts'

export const PROMETHEUS_BIN = '/usr/bin/prometheus'

export interface ScrapeJob {
  readonly job: string
  /** `http://HOST:PORT` or `HOST:PORT` of each target. */
  readonly targets: readonly string[]
  /** Default /metrics. */
  readonly path?: string
  /** Labels added to every series of the job's targets. */
  readonly labels?: Readonly<Record<string, string>>
  /** A bearer token sent with every scrape (control's /metrics needs one). */
  readonly bearer?: string
}

export interface PrometheusOptions {
  readonly scrape: readonly ScrapeJob[]
  /** Default 500ms (scrape and rule evaluation). */
  readonly interval?: string
}

/** The `data` of an `/api/v1/query` answer. */
export interface QueryData {
  resultType: 'vector' | 'scalar' | 'matrix' | 'string'
  // biome-ignore lint/suspicious/noExplicitAny: the shape depends on resultType; tests read what they asked for
  result: any
}

export interface Prometheus {
  /** Base URL, e.g. http://127.0.0.1:41234 */
  readonly url: string
  readonly port: number
  readonly child: ChildProcess
  /** Its log (stderr) so far. */
  log(): string
  /** An instant query; throws unless Prometheus answers 200 with status success. */
  query(expr: string): Promise<QueryData>
  /** The single value of an instant query (a scalar or a one-series vector); null when empty. */
  value(expr: string): Promise<number | null>
  /** Resolves once every target of `job` (default: every job) is up. */
  targetsUp(job?: string): Promise<void>
  stop(): Promise<void>
}

const hostOf = (t: string): string => t.replace(/^https?:\/\//, '').replace(/\/.*$/, '')

export async function startPrometheus(opts: PrometheusOptions): Promise<Prometheus> {
  const dir = mkdtempSync(join(tmpdir(), 'veer-prometheus-'))
  const interval = opts.interval ?? '500ms'
  const config = {
    global: { scrape_interval: interval, scrape_timeout: interval, evaluation_interval: interval },
    scrape_configs: opts.scrape.map((j) => ({
      job_name: j.job,
      metrics_path: j.path ?? '/metrics',
      ...(j.bearer && { authorization: { credentials: j.bearer } }),
      static_configs: [{ targets: j.targets.map(hostOf), ...(j.labels && { labels: j.labels }) }],
    })),
  }
  const file = join(dir, 'prometheus.yml')
  writeFileSync(file, stringify(config))
  const child = spawn(
    PROMETHEUS_BIN,
    [
      `--config.file=${file}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      '--web.listen-address=127.0.0.1:0',
      '--log.level=info',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  )
  let log = ''
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()))
  const port = await new Promise<number>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      log += d.toString()
      const m = /msg="Listening on" address=127\.0\.0\.1:(\d+)/.exec(log)
      if (m) resolve(Number(m[1]))
    })
    child.on('error', reject)
    void exited.then(() => reject(new Error(`prometheus exited before it listened: ${log}`)))
  })
  const url = `http://127.0.0.1:${port}`

  const query = async (expr: string): Promise<QueryData> => {
    const res = await fetch(`${url}/api/v1/query?${new URLSearchParams({ query: expr })}`)
    const body = (await res.json()) as { status: string; data: QueryData; error?: string }
    if (res.status !== 200 || body.status !== 'success')
      throw new Error(`query ${expr}: ${res.status} ${body.error ?? ''}`)
    return body.data
  }
  const value = async (expr: string): Promise<number | null> => {
    const d = await query(expr)
    if (d.resultType === 'scalar') return Number(d.result[1])
    if (d.result.length === 0) return null
    if (d.result.length > 1) throw new Error(`query ${expr}: ${d.result.length} series`)
    return Number(d.result[0].value[1])
  }
  const targetsUp = async (job?: string): Promise<void> => {
    await until(async () => {
      const res = await fetch(`${url}/api/v1/targets?state=active`)
      const body = (await res.json()) as {
        data: { activeTargets: { labels: { job: string }; health: string }[] }
      }
      const jobs = job === undefined ? opts.scrape.map((j) => j.job) : [job]
      const mine = body.data.activeTargets.filter((t) => jobs.includes(t.labels.job))
      const expected = opts.scrape
        .filter((j) => jobs.includes(j.job))
        .reduce((n, j) => n + j.targets.length, 0)
      return mine.length === expected && mine.every((t) => t.health === 'up')
    }, 20_000)
  }
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    }
    rmSync(dir, { recursive: true, force: true })
  }

  try {
    await until(async () => (await fetch(`${url}/-/ready`).catch(() => null))?.status === 200, 20_000)
    await targetsUp()
  } catch (err) {
    await stop()
    throw new Error(`${(err as Error).message}; prometheus log: ${log.slice(-2000)}`)
  }
  return { url, port, child, log: () => log, query, value, targetsUp, stop }
}
