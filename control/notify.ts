/**
 * Webhooks on rollout events. Each URL has its own queue, delivered in order by one worker: a POST of
 * JSON (with a Slack-compatible `text`), retried with exponential backoff on a network error or a
 * non-2xx answer, then dropped with an error log. Sending never blocks the rollout: `send` only
 * enqueues. Queues live in memory; events not delivered when control stops are lost.
 */
import type { Logger } from 'pino'
import type { Notice } from './rollout.ts'

export interface Notification {
  readonly event: Notice
  readonly route: string
  readonly rollout: string | null
  /** 1-based step and the plan's step count, when a rollout is involved. */
  readonly step: number | null
  readonly steps: number | null
  readonly weight: number
  readonly previousWeight: number
  readonly who: string
  readonly why: string | null
  readonly revision: number
  readonly time: string
}

const VERB: Record<Notice, string> = {
  started: 'rollout started',
  step: 'rollout moved to the next step',
  paused: 'rollout paused',
  resumed: 'rollout resumed',
  promoted: 'rollout promoted',
  'rolled-back': 'ROLLED BACK',
  completed: 'rollout completed',
  'release-changed': 'has a new release pair',
}

const EMOJI: Record<Notice, string> = {
  started: ':rocket:',
  step: ':arrow_up:',
  paused: ':double_vertical_bar:',
  resumed: ':arrow_forward:',
  promoted: ':fast_forward:',
  'rolled-back': ':rotating_light:',
  completed: ':white_check_mark:',
  'release-changed': ':package:',
}

/** The JSON body a webhook receives: the notification plus a one-line `text` for Slack and the like. */
export function payload(n: Notification): Notification & { text: string; source: 'veer' } {
  const step = n.step !== null && n.steps !== null ? ` step ${n.step}/${n.steps},` : ''
  const why = n.why ? ` — ${n.why}` : ''
  const text = `${EMOJI[n.event]} veer: route *${n.route}* ${VERB[n.event]}:${step} canary ${n.previousWeight}% → ${n.weight}% (by ${n.who})${why}`
  return { source: 'veer', ...n, text }
}

export interface NotifierOptions {
  readonly backoffMs: number
  readonly attempts: number
  readonly timeoutMs: number
  readonly maxQueue: number
}

export const DEFAULT_NOTIFIER: NotifierOptions = {
  backoffMs: 1000,
  attempts: 6,
  timeoutMs: 5000,
  maxQueue: 1000,
}

class Hook {
  readonly url: string
  readonly queue: string[] = []
  running = false
  /** Resolves the current backoff sleep early on close. */
  wake: (() => void) | null = null

  constructor(url: string) {
    this.url = url
  }
}

export class Notifier {
  private readonly hooks: Hook[]
  private readonly log: Logger
  private readonly opts: NotifierOptions
  private closed = false

  constructor(urls: readonly string[], log: Logger, opts: NotifierOptions = DEFAULT_NOTIFIER) {
    this.hooks = urls.map((u) => new Hook(u))
    this.log = log
    this.opts = opts
  }

  send(n: Notification): void {
    if (this.hooks.length === 0 || this.closed) return
    const body = JSON.stringify(payload(n))
    for (const hook of this.hooks) {
      if (hook.queue.length >= this.opts.maxQueue) {
        // queue[0] is being delivered while `running` (drain shifts it when done): drop the next one.
        hook.queue.splice(hook.running ? 1 : 0, 1)
        this.log.warn({ webhook: redact(hook.url) }, 'webhook queue full, dropped the oldest waiting event')
      }
      hook.queue.push(body)
      if (!hook.running) void this.drain(hook)
    }
  }

  private async drain(hook: Hook): Promise<void> {
    hook.running = true
    while (hook.queue.length > 0 && !this.closed) {
      const body = hook.queue[0]!
      for (let attempt = 1; ; attempt++) {
        const problem = await this.post(hook.url, body)
        if (problem === null) break
        if (attempt >= this.opts.attempts || this.closed) {
          this.log.error(
            { webhook: redact(hook.url), attempts: attempt, problem },
            'webhook failed, event dropped',
          )
          break
        }
        const delay = this.opts.backoffMs * 2 ** (attempt - 1) * (0.8 + Math.random() * 0.4)
        this.log.warn(
          { webhook: redact(hook.url), attempt, problem, retryInMs: Math.round(delay) },
          'webhook failed, retrying',
        )
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, delay)
          hook.wake = () => {
            clearTimeout(t)
            resolve()
          }
        })
        hook.wake = null
      }
      hook.queue.shift()
    }
    hook.running = false
  }

  private async post(url: string, body: string): Promise<string | null> {
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'veer-control' },
        body,
        signal: AbortSignal.timeout(this.opts.timeoutMs),
      })
      await res.arrayBuffer().catch(() => undefined)
      return res.ok ? null : `HTTP ${res.status}`
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } }
      return e.cause?.code ?? e.name ?? 'error'
    }
  }

  close(): void {
    this.closed = true
    for (const h of this.hooks) h.wake?.()
  }
}

/** A webhook URL without its path and query, which often hold a secret (Slack's do). */
export function redact(url: string): string {
  try {
    return new URL(url).origin
  } catch {
    return '(invalid url)'
  }
}
