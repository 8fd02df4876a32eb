/**
 * The operator client's HTTP calls to the control API, and the exit codes scripts rely on:
 * 0 done, 1 the API refused (any 4xx/5xx answer), 2 usage (bad flag, file, missing token),
 * 3 control cannot be reached (refused, DNS, timeout).
 */
import { readFileSync } from 'node:fs'

export const EXIT = { ok: 0, refused: 1, usage: 2, unreachable: 3 } as const

/** What `--output json` names an error that is not the API's own code. */
const CODES: Record<number, string> = { [EXIT.usage]: 'usage', [EXIT.unreachable]: 'unreachable' }

export class CliError extends Error {
  readonly exitCode: number
  /** The API's error code, or `usage` / `unreachable`: `{"error"}` of `--output json`. */
  readonly code: string
  /** The message without the code after it: `{"message"}` of `--output json`. */
  readonly detail: string
  /** The API's HTTP status (0: no answer). */
  status = 0
  /** Whether the request may have reached control (a refused connection: it did not). */
  sent = true

  constructor(exitCode: number, message: string, code?: string, detail?: string) {
    super(message)
    this.exitCode = exitCode
    this.code = code ?? CODES[exitCode] ?? 'refused'
    this.detail = detail ?? message
  }

  /** The error as `--output json` prints it, on stdout. */
  json(): string {
    return JSON.stringify({ error: this.code, message: this.detail })
  }
}

export const usage = (message: string): CliError => new CliError(EXIT.usage, message)

/** The token: the first word of the first non-comment line of --token-file (a bare token file, or control's own), or VEER_TOKEN. */
export function readToken(file: string | undefined, env: NodeJS.ProcessEnv): string {
  if (file !== undefined) {
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch (err) {
      throw usage(`--token-file ${file}: cannot read it (${(err as NodeJS.ErrnoException).code})`)
    }
    for (const line of text.split('\n')) {
      const word = line.replace(/#.*$/, '').trim().split(/\s+/)[0]
      if (word) return word
    }
    throw usage(`--token-file ${file}: holds no token`)
  }
  const token = env.VEER_TOKEN?.trim()
  if (token) return token
  throw usage('no token: pass --token-file FILE or set VEER_TOKEN')
}

export interface Reply {
  status: number
  etag: string | null
  body: unknown
}

/**
 * The control API at one URL or several replicas' (comma-separated). A call moves to the next replica
 * when one cannot be reached; a read also when one answers 5xx or not in time. A write only where it
 * cannot have been made (refused connection, 503 shutting_down): a write answered 5xx may still land in
 * etcd, and made again on another replica it could be applied twice.
 */
export class ControlClient {
  private readonly bases: readonly string[]
  private readonly token: string
  private readonly timeoutMs: number

  constructor(base: string, token: string, timeoutMs = 10_000) {
    this.bases = base.split(',').map((one) => {
      let url: URL
      try {
        url = new URL(one)
      } catch {
        throw usage(`--control must be a URL such as http://127.0.0.1:9900 (got ${JSON.stringify(one)})`)
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:')
        throw usage(`--control must start with http:// or https:// (got ${JSON.stringify(one)})`)
      return url.href.replace(/\/+$/, '')
    })
    this.token = token
    this.timeoutMs = timeoutMs
  }

  async call(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<Reply> {
    const read = method === 'GET'
    for (let i = 0; ; i++) {
      const last = i === this.bases.length - 1
      try {
        return await this.#callOne(this.bases[i]!, method, path, body, headers)
      } catch (err) {
        if (last || !(err instanceof CliError)) throw err
        const moveOn =
          err.exitCode === EXIT.unreachable
            ? read || err.sent === false
            : read
              ? err.status >= 500
              : err.code === 'shutting_down'
        if (!moveOn) throw err
      }
    }
  }

  async #callOne(
    base: string,
    method: string,
    path: string,
    body: unknown,
    headers: Record<string, string>,
  ): Promise<Reply> {
    let res: Response
    try {
      res = await fetch(`${base}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.token}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          ...headers,
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      })
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } }
      const timedOut = e.name === 'TimeoutError'
      const why = timedOut ? `no answer within ${this.timeoutMs / 1000} s` : (e.cause?.code ?? e.message)
      const all = this.bases.length === 1 ? base : this.bases.join(',')
      const failed = new CliError(
        EXIT.unreachable,
        `cannot reach control at ${all} (${why}); is veer control running? (--control URL)`,
      )
      // Refused or not resolved: the request never reached control.
      failed.sent = !(e.cause?.code === 'ECONNREFUSED' || e.cause?.code === 'ENOTFOUND')
      throw failed
    }
    const text = await res.text()
    let parsed: unknown = null
    try {
      parsed = text === '' ? null : JSON.parse(text)
    } catch {
      parsed = text
    }
    if (res.status >= 400) {
      const e = parsed as { error?: string; message?: string } | null
      const message = (e?.message ?? `HTTP ${res.status}`).replace(/\s*\n\s*/g, ' ')
      const code = e?.error ?? `http_${res.status}`
      const refused = new CliError(EXIT.refused, `${message} (${code})`, code, message)
      refused.status = res.status
      throw refused
    }
    return { status: res.status, etag: res.headers.get('etag'), body: parsed }
  }
}
