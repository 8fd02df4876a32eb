/**
 * The status page under /ui/ (README "Status page"): a fixed list of files read once at start — the
 * page in control/ui/ and uPlot from node_modules — so a path can name nothing else (no traversal, no
 * file system access per request). The files are public and need no token; the page asks for one and
 * sends it with every API call. Every answer carries a strict Content-Security-Policy: the page runs
 * only its own script and styles, talks only to control, and cannot be framed.
 */
import { readFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

export const UI_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

const HEADERS = {
  'content-security-policy': UI_CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cache-control': 'no-cache',
}

interface Asset {
  readonly type: string
  readonly body: Buffer
}

export type UiAssets = ReadonlyMap<string, Asset>

const HTML = 'text/html; charset=utf-8'
const JS = 'text/javascript; charset=utf-8'
const CSS = 'text/css; charset=utf-8'

/**
 * Reads every file of the page now; throws (control does not start) when one is missing. The page's own
 * files sit next to this module (`npm run build` copies control/ui/ to dist/control/ui/).
 */
export function loadUi(): UiAssets {
  const own = (name: string) => fileURLToPath(new URL(`./ui/${name}`, import.meta.url))
  const uplot = createRequire(import.meta.url)
    .resolve('uplot/package.json')
    .replace(/package\.json$/, 'dist/')
  const files: [string, string, string][] = [
    ['', own('index.html'), HTML],
    ['app.js', own('app.js'), JS],
    ['style.css', own('style.css'), CSS],
    // The minified build (50 KiB, the ES module is 142 KiB unminified) defines the global `uPlot`.
    ['uplot.js', `${uplot}uPlot.iife.min.js`, JS],
    ['uplot.css', `${uplot}uPlot.min.css`, CSS],
  ]
  return new Map(files.map(([name, path, type]) => [name, { type, body: readFileSync(path) }]))
}

/** True when the raw request path is /ui or below it (the API never sees those). */
export function isUiPath(url: string | undefined): boolean {
  return url !== undefined && (url === '/ui' || url.startsWith('/ui/') || url.startsWith('/ui?'))
}

/**
 * Answer a /ui request from the assets. The raw path is looked up as it came (not normalised), so
 * `/ui/../state.json` or `/ui/%2e%2e/…` is simply not on the list: 404.
 */
export function serveUi(assets: UiAssets, req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/ui').split('?')[0]!
  const method = req.method ?? 'GET'
  if (method !== 'GET' && method !== 'HEAD') {
    res.writeHead(405, { ...HEADERS, allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' })
    res.end(`${path} takes GET\n`)
    return
  }
  if (path === '/ui') {
    res.writeHead(301, { ...HEADERS, location: '/ui/', 'content-length': '0' }).end()
    return
  }
  const asset = assets.get(path.slice('/ui/'.length))
  if (asset === undefined) {
    const text = `no file ${path} on the status page; open /ui/\n`
    res.writeHead(404, {
      ...HEADERS,
      'content-type': 'text/plain; charset=utf-8',
      'content-length': String(Buffer.byteLength(text)),
    })
    res.end(method === 'HEAD' ? undefined : text)
    return
  }
  res.writeHead(200, { ...HEADERS, 'content-type': asset.type, 'content-length': String(asset.body.length) })
  res.end(method === 'HEAD' ? undefined : asset.body)
}
