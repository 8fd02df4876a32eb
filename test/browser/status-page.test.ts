/**
 * The status page (control/ui/) in a real headless Chromium against a real `veer control`, a real
 * `veer proxy` following it and real upstreams, with steady traffic through the proxy so the charts
 * move. Every wait is a Playwright locator waiting for what the page should show, never a sleep.
 * `npm run test:browser`; the screenshot is kept in test-artifacts/status-page.png.
 */
import { mkdirSync } from 'node:fs'
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core'
import { request } from 'undici'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { type ControlProcess, startLinkedBed, TOKENS, until } from '../helpers/control.ts'
import { startUpstream, type Upstream } from '../helpers/upstream.ts'
import type { VeerProcess } from '../helpers/veer.ts'

/** The browser globals the functions run in the page use (the project's tsconfig has no DOM lib). */
declare const document: {
  addEventListener(
    type: 'securitypolicyviolation',
    f: (e: { violatedDirective: string; blockedURI: string }) => void,
  ): void
  querySelector(selector: string): { dataset: Record<string, string | undefined> } | null
}

const ARTIFACTS = new URL('../../test-artifacts/', import.meta.url).pathname
const WAIT_MS = 20_000

let browser: Browser
let stable: Upstream
let canary: Upstream
let control: ControlProcess
let proxy: VeerProcess
let traffic: NodeJS.Timeout

/** What every page did that it must not: console errors, uncaught exceptions, CSP violations. */
let problems: string[] = []
/** Every URL any page asked for. */
let urls: string[] = []
let context: BrowserContext | null = null

beforeAll(async () => {
  stable = await startUpstream('stable')
  canary = await startUpstream('canary')
  ;({ control, proxy } = await startLinkedBed(stable, canary))
  // ~100 requests a second through the proxy: what the charts draw.
  traffic = setInterval(() => {
    request(`${proxy.url}/x`)
      .then((r) => r.body.dump())
      .catch(() => {})
  }, 10)
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
})

afterAll(async () => {
  clearInterval(traffic)
  await browser?.close()
  await Promise.all([control?.stop(), proxy?.stop()])
  await Promise.all([stable?.close(), canary?.close()])
})

afterEach(async () => {
  await context?.close()
  context = null
  expect(problems).toEqual([])
  for (const token of Object.values(TOKENS)) expect(urls.filter((u) => u.includes(token))).toEqual([])
  problems = []
  urls = []
})

/** A fresh tab on /ui/, signed in with `token` through the login form. */
async function signIn(token: string): Promise<Page> {
  context = await browser.newContext({ viewport: { width: 1280, height: 1000 } })
  // Run by the browser before the page's own script, outside its CSP.
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) =>
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`),
    )
  })
  const page = await context.newPage()
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(m.text())
  })
  page.on('pageerror', (err) => problems.push(err.message))
  page.on('request', (r) => urls.push(r.url()))
  await page.goto(`${control.url}/ui`)
  expect(page.url()).toBe(`${control.url}/ui/`)
  await page.locator('#token').fill(token)
  await page.locator('#login-form button[type=submit]').click()
  await page.locator(`body[data-role]:not([data-role=""])`).waitFor({ timeout: WAIT_MS })
  await page.locator('article[data-route="shop"]').waitFor({ timeout: WAIT_MS })
  expect(page.url()).toBe(`${control.url}/ui/`)
  expect(await page.evaluate(() => sessionStorage.getItem('veer-token'))).toBe(token)
  return page
}

const field = (page: Page, name: string) => page.locator(`article[data-route="shop"] [data-field="${name}"]`)

/** Wait until the route's `name` field shows `text`. */
const shows = (page: Page, name: string, text: RegExp) =>
  page
    .locator(`article[data-route="shop"] [data-field="${name}"]`, { hasText: text })
    .waitFor({ timeout: WAIT_MS })

/** Click the route's `act` button, give the reason, confirm. */
async function act(page: Page, what: string, reason: string): Promise<void> {
  await page.locator(`article[data-route="shop"] button[data-act="${what}"]:enabled`).click()
  await page.locator('#confirm[open]').waitFor()
  await page.locator('#confirm-reason').fill(reason)
  await page.locator('#confirm-ok').click()
  await page.locator('#confirm:not([open])').waitFor({ state: 'attached' })
}

const ANALYSIS = { enabled: true, alpha: 0.000001, latency: { enabled: false } }

describe('the status page', () => {
  it('shows a rollout live, step by step, with its charts, verdict and history', async () => {
    const page = await signIn(TOKENS.operator)
    await shows(page, 'rollout', /^none$/)
    await shows(page, 'weights', /^stable 100% · canary 0%$/)
    await shows(page, 'sync', /^1 of 1 live in sync$/)
    await page.locator('#proxy-rows tr[data-live="true"]').waitFor()

    const start = await control.api('POST', '/v1/routes/shop/rollout', {
      body: {
        steps: [{ weight: 10, pause: '1h' }, { weight: 50 }, { weight: 100 }],
        analysis: ANALYSIS,
        reason: 'browser test rollout',
      },
    })
    expect(start.status).toBe(200)
    // Step 1: applied by the proxy, its hour's pause running down.
    await shows(page, 'rollout', /^step 1 of 3 · canary 10% · pausing$/)
    await shows(page, 'weights', /^stable 90% · canary 10%$/)
    await shows(page, 'left', /^(59m \d+s|1h 0m)$/)
    await shows(page, 'audit', /rollout-start by alice: browser test rollout/)
    // The charts: per-version figures from the `stats` events, canary traffic included.
    await shows(page, 'now-rps', /^stable \d+\.\d · canary [1-9]\d*\.\d$/)
    await shows(page, 'now-err', /^stable 0\.00 · canary 0\.00$/)
    await shows(page, 'now-p99', /^stable \d+\.\d · canary \d+\.\d$/)
    expect(await page.locator('article[data-route="shop"] .uplot canvas').count()).toBe(3)
    await shows(page, 'verdict', /^(pass|inconclusive): /)
    await shows(page, 'harm', /^harmed 0 · saved 0 · of [1-9]\d* canary requests$/)

    // Step 2 by the page's promote button (with its reason), step 3 by the API: both seen live.
    await act(page, 'promote', 'step 1 looks fine')
    await shows(page, 'rollout', /^step 2 of 3 · canary 50% · waiting-for-promote$/)
    await shows(page, 'weights', /^stable 50% · canary 50%$/)
    await shows(page, 'audit', /rollout-promote by alice: step 1 looks fine/)
    await shows(page, 'left', /^—$/)
    await shows(page, 'sync', /^1 of 1 live in sync$/)
    // A few seconds of chart for the screenshot: one point a second from the `stats` events.
    await page.waitForFunction(
      () => Number(document.querySelector('article[data-route="shop"]')?.dataset.points) >= 8,
      undefined,
      { timeout: WAIT_MS },
    )
    mkdirSync(ARTIFACTS, { recursive: true })
    await page.screenshot({ path: `${ARTIFACTS}status-page.png`, fullPage: true })

    expect((await control.api('POST', '/v1/routes/shop/promote', { body: {} })).status).toBe(200)
    await shows(page, 'rollout', /^step 3 of 3 · canary 100% · waiting-for-promote$/)
    expect((await control.api('POST', '/v1/routes/shop/promote', { body: {} })).status).toBe(200)
    await shows(page, 'rollout', /^step 3 of 3 · canary 100% · completed$/)
    await shows(page, 'weights', /^stable 0% · canary 100%$/)
    expect(await field(page, 'last').textContent()).toBe('rollout-promote by alice')
  })

  it('aborts from the page: confirm and reason; the route rolls back and the audit has the reason', async () => {
    expect((await control.api('PUT', '/v1/routes/shop/weights', { body: { canary: 0 } })).status).toBe(200)
    const page = await signIn(TOKENS.operator)
    await shows(page, 'weights', /^stable 100% · canary 0%$/)
    const start = await control.api('POST', '/v1/routes/shop/rollout', {
      body: { steps: [{ weight: 30, pause: '1h' }, { weight: 100 }], analysis: ANALYSIS },
    })
    expect(start.status).toBe(200)
    await shows(page, 'rollout', /^step 1 of 2 · canary 30% · pausing$/)

    // Cancel changes nothing; confirm with a reason aborts.
    await page.locator('article[data-route="shop"] button[data-act="abort"]').click()
    await page.locator('#confirm-cancel').click()
    await page.locator('#confirm:not([open])').waitFor({ state: 'attached' })
    expect((await control.api('GET', '/v1/routes/shop')).json.rollout.phase).toBe('progressing')

    await act(page, 'abort', 'canary looks wrong on the status page')
    await shows(page, 'rollout', /^step 1 of 2 · canary 30% · aborted$/)
    await shows(page, 'weights', /^stable 100% · canary 0%$/)
    await shows(page, 'audit', /rollout-abort by alice: canary looks wrong on the status page/)
    await shows(page, 'sync', /^1 of 1 live in sync$/)
    const audit = await control.api('GET', '/v1/audit?route=shop&action=rollout-abort&limit=1')
    expect(audit.json.entries[0]).toMatchObject({
      who: 'alice',
      role: 'operator',
      why: 'canary looks wrong on the status page',
    })
    // The proxy applied the rollback: users get stable only.
    await until(async () => {
      const r = await request(`${proxy.adminUrl}/v1/config`)
      const cfg = (await r.body.json()) as { routes: { weights: { canary: number } }[] }
      return cfg.routes[0]!.weights.canary === 0
    })
    expect(await page.locator('article[data-route="shop"] button[data-act="abort"]').isDisabled()).toBe(true)
  })

  it('a read token sees the route and acts on nothing: no buttons, and the API answers 403', async () => {
    const page = await signIn(TOKENS.read)
    await page.locator('body[data-role="read"]').waitFor()
    await shows(page, 'weights', /^stable 100% · canary 0%$/)
    await shows(page, 'now-rps', /^stable [1-9]\d*\.\d/)
    expect(await page.locator('#who').textContent()).toBe('dashboard (read)')
    // One control on a state dir: no replica to name.
    expect(await page.locator('#replica').isHidden()).toBe(true)
    expect(await page.locator('button[data-act]').count()).toBe(0)
    expect(await page.locator('.actions').count()).toBe(0)
    // Even when asked by hand, with the token the page holds.
    const status = await page.evaluate(async () => {
      const res = await fetch('/v1/routes/shop/abort', {
        method: 'POST',
        headers: { authorization: `Bearer ${sessionStorage.getItem('veer-token')}` },
      })
      return res.status
    })
    expect(status).toBe(403)
    // The refusal is audited: a forbidden call logs no console error of the page's own (fetch by hand).
    problems = problems.filter((p) => !p.includes('403'))
    // Sign out forgets the token.
    await page.locator('#logout').click()
    await page.locator('#login:not([hidden])').waitFor()
    expect(await page.evaluate(() => sessionStorage.getItem('veer-token'))).toBeNull()
  })

  it('a wrong token is refused at the login, with a message', async () => {
    context = await browser.newContext()
    const page = await context.newPage()
    page.on('request', (r) => urls.push(r.url()))
    await page.goto(`${control.url}/ui/`)
    await page.locator('#token').fill('not-a-valid-token-at-all')
    await page.locator('#login-form button[type=submit]').click()
    await page.locator('#login-error', { hasText: /not valid/ }).waitFor({ timeout: WAIT_MS })
    expect(await page.evaluate(() => sessionStorage.getItem('veer-token'))).toBeNull()
    expect(urls.filter((u) => u.includes('not-a-valid-token'))).toEqual([])
  })
})
