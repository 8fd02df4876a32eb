/**
 * The control process's own metrics (GET /metrics, read role). Counted where things happen: the store
 * reports every audit write it made (its latency, the decisions and rollbacks in it) and every write
 * that failed (`StoreObserver`). Read when scraped: each route's rollout phase, step and canary weight
 * and the proxies' sync from the engine's state and the proxy registry, and the state dir's size and
 * free space, so a filling disk is seen before writes get 503. The proxies count the rollbacks they
 * apply under the same `veer_rollbacks_total`, so take one source (or `max by (route, reason)`) in a sum.
 */
import { stat, statfs } from 'node:fs/promises'
import { join } from 'node:path'
import client from 'prom-client'
import { ROLLBACK_REASONS } from '../config/wire.ts'
import type { ProxyRegistry } from './proxies.ts'
import type { Phase } from './rollout.ts'
import type { AuditEntry, ControlState, StoreObserver } from './store.ts'

/** Every phase a route's `veer_control_rollout_phase` has a series for; `none`: no rollout yet. */
const PHASES: readonly (Phase | 'none')[] = ['none', 'progressing', 'paused', 'completed', 'aborted']

/** fsync of a small append: ~0.1 ms on tmpfs, 1–10 ms on an SSD, tens of ms on network disks. */
const AUDIT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]

export class ControlMetrics implements StoreObserver {
  readonly registry = new client.Registry()
  readonly rollbacks: client.Counter<'route' | 'reason'>
  readonly #decisions: client.Counter<'kind'>
  readonly #auditWrite: client.Histogram
  readonly #storageErrors: client.Counter<'code'>
  /** Bound children by label value: a decision kind or an errno code is looked up once. */
  readonly #byKind = new Map<string, client.Counter.Internal>()
  readonly #byCode = new Map<string, client.Counter.Internal>()

  /** Control's state, once `watchRoutes` is called. */
  #state: (() => ControlState) | null = null

  constructor() {
    const registers = [this.registry]
    const routes = () => Object.keys(this.#state?.().routes ?? {})
    this.rollbacks = new client.Counter({
      name: 'veer_rollbacks_total',
      help: 'Automatic rollbacks of a route by reason (the failed check: errors, outcome, latency-p95, latency-p99, prometheus; or analysis, inconclusive, fuse, smoke)',
      labelNames: ['route', 'reason'],
      registers,
      // Every route's counters at 0: a counter that appears at 1 is no increase() to Prometheus.
      collect() {
        for (const route of routes()) for (const reason of ROLLBACK_REASONS) this.labels(route, reason).inc(0)
      },
    })
    this.#decisions = new client.Counter({
      name: 'veer_control_decisions_total',
      help: 'Versioned changes committed, by kind (the audit action: set-weight, rollout-start, rollout-step, rollout-abort, abort, release-change, …)',
      labelNames: ['kind'],
      registers,
    })
    this.#auditWrite = new client.Histogram({
      name: 'veer_control_audit_write_seconds',
      help: 'Time to append and fsync audit lines (every change and refusal waits for it), seconds',
      buckets: AUDIT_BUCKETS,
      registers,
    })
    this.#storageErrors = new client.Counter({
      name: 'veer_control_storage_errors_total',
      help: 'State dir writes that failed, by errno code (ENOSPC, EIO, …; unknown when there is none)',
      labelNames: ['code'],
      registers,
    })
  }

  auditWritten(seconds: number): void {
    this.#auditWrite.observe(seconds)
  }

  /** The entries a write made durable: the decisions (versioned changes) and rollbacks among them. */
  audited(entries: readonly AuditEntry[]): void {
    for (const e of entries) {
      if (e.revision === undefined) continue
      let kind = this.#byKind.get(e.action)
      if (kind === undefined) this.#byKind.set(e.action, (kind = this.#decisions.labels(e.action)))
      kind.inc()
      if (e.rollback !== undefined && e.route !== null) this.rollbacks.labels(e.route, e.rollback).inc()
    }
  }

  storageFailed(code: string | undefined): void {
    const key = code ?? 'unknown'
    let child = this.#byCode.get(key)
    if (child === undefined) this.#byCode.set(key, (child = this.#storageErrors.labels(key)))
    child.inc()
  }

  /** Gauges read from control's state and the proxies at every scrape. */
  watchRoutes(state: () => ControlState, proxies: ProxyRegistry, now: () => number = Date.now): void {
    this.#state = state
    const registers = [this.registry]
    new client.Gauge({
      name: 'veer_control_rollout_phase',
      help: "Each route's rollout phase: 1 for the current one, 0 for the others (none: no rollout yet)",
      labelNames: ['route', 'phase'],
      registers,
      collect() {
        this.reset()
        for (const r of Object.values(state().routes)) {
          const phase = r.rollout?.phase ?? 'none'
          for (const p of PHASES) this.labels(r.name, p).set(p === phase ? 1 : 0)
        }
      },
    })
    new client.Gauge({
      name: 'veer_control_rollout_step',
      help: "The rollout's current step, 1-based (0: no rollout)",
      labelNames: ['route'],
      registers,
      collect() {
        this.reset()
        for (const r of Object.values(state().routes))
          this.labels(r.name).set(r.rollout ? r.rollout.step + 1 : 0)
      },
    })
    new client.Gauge({
      name: 'veer_control_rollout_steps',
      help: "The rollout plan's number of steps (0: no rollout)",
      labelNames: ['route'],
      registers,
      collect() {
        this.reset()
        for (const r of Object.values(state().routes))
          this.labels(r.name).set(r.rollout ? r.rollout.plan.steps.length : 0)
      },
    })
    new client.Gauge({
      name: 'veer_control_canary_weight',
      help: "The canary weight control holds for each route, percent (the proxies' veer_route_weight follows it)",
      labelNames: ['route'],
      registers,
      collect() {
        this.reset()
        for (const r of Object.values(state().routes)) this.labels(r.name).set(r.canary)
      },
    })
    new client.Gauge({
      name: 'veer_control_revision',
      help: "Control's revision of the weights (the proxies ack it)",
      registers,
      collect() {
        this.set(state().revision)
      },
    })
    const proxyGauge = (name: string, help: string, pick: (c: ProxyCounts) => number) =>
      new client.Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(pick(proxies.counts(state().revision, now())))
        },
      })
    proxyGauge(
      'veer_control_proxies_known',
      'Proxies control knows (registered, not yet forgotten)',
      (c) => c.known,
    )
    proxyGauge(
      'veer_control_proxies_live',
      'Proxies heard from recently (watching, or within the live time)',
      (c) => c.live,
    )
    proxyGauge(
      'veer_control_proxies_in_sync',
      "Live proxies that have applied control's current revision",
      (c) => c.inSync,
    )
  }

  /** 1 while this replica leads (runs the rollout clock), 0 while it follows; a single control: 1. */
  watchLead(lead: { leading(): boolean }): void {
    new client.Gauge({
      name: 'veer_control_leader',
      help: 'Whether this control replica leads and runs the rollout clock (1) or follows (0)',
      registers: [this.registry],
      collect() {
        this.set(lead.leading() ? 1 : 0)
      },
    })
  }

  /** Gauges of `dir`: the bytes state.json and audit.log take, and the bytes free for them. */
  watchStateDir(dir: string): void {
    new client.Gauge({
      name: 'veer_control_state_bytes',
      help: 'Bytes the state dir files take (state.json and audit.log)',
      registers: [this.registry],
      async collect() {
        let total = 0
        for (const name of ['state.json', 'audit.log'])
          total += await stat(join(dir, name)).then(
            (s) => s.size,
            () => 0,
          )
        this.set(total)
      },
    })
    new client.Gauge({
      name: 'veer_control_state_free_bytes',
      help: 'Bytes free for an unprivileged writer on the state dir filesystem',
      registers: [this.registry],
      async collect() {
        const fs = await statfs(dir).catch(() => null)
        if (fs !== null) this.set(fs.bavail * fs.bsize)
      },
    })
  }
}

type ProxyCounts = ReturnType<ProxyRegistry['counts']>
