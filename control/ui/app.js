// veer's status page (README "Status page"). Reads control's API with a bearer token kept in this tab's
// sessionStorage (never in a URL), follows GET /v1/events with fetch() — EventSource cannot send an
// Authorization header — and reconnects with backoff. Charts are uPlot (the global from uplot.js).

const KEY = 'veer-token'
/** Chart points kept per route: 5 minutes of one `stats` event a second. */
const POINTS = 300
const AUDIT = 20

const $ = (id) => document.getElementById(id)
const routes = new Map() // name → { view, at, el, charts, series, audit }
let role = null
let stopped = null // AbortController of the running stream

const token = () => sessionStorage.getItem(KEY)
const headers = (json) => ({
  authorization: `Bearer ${token()}`,
  ...(json && { 'content-type': 'application/json' }),
})

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  })
  const data = await res.json().catch(() => null)
  if (res.status === 401) signOut('the token is not valid (401)')
  if (!res.ok) throw new Error(data?.message ?? `${method} ${path}: ${res.status}`)
  return data
}

// ---- sign in / out -------------------------------------------------------------------------------

function signOut(why = '') {
  sessionStorage.removeItem(KEY)
  stopped?.abort()
  stopped = null
  role = null
  connects = 0
  routes.clear()
  $('routes').replaceChildren()
  $('proxies').hidden = true
  $('logout').hidden = true
  $('who').textContent = ''
  document.body.dataset.role = ''
  setConn('offline')
  $('login').hidden = false
  $('login-error').textContent = why
}

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault()
  sessionStorage.setItem(KEY, $('token').value.trim())
  $('token').value = ''
  start()
})
$('logout').addEventListener('click', () => signOut())

async function start() {
  $('login').hidden = true
  $('logout').hidden = false
  try {
    await load()
  } catch (err) {
    if (token() !== null) $('routes').textContent = err.message
    return
  }
  stopped = new AbortController()
  follow(stopped.signal)
}

/** Everything the stream does not replay: routes, their history, the proxies. */
async function load() {
  const { routes: list } = await api('GET', '/v1/routes')
  for (const v of list) update(v)
  await Promise.all([...list.map((v) => loadAudit(v.name)), loadProxies(), loadControl()])
}

/** Replicated control (etcd): which replica this page talks to, and who leads. */
async function loadControl() {
  const c = await api('GET', '/v1/control')
  const el = $('replica')
  el.hidden = c.role === 'single'
  const leads = c.role === 'leader' ? 'leader' : `follower; leader ${c.leader?.id ?? 'none elected'}`
  el.textContent = `replica ${c.replica} (${leads})`
}

// ---- the event stream ----------------------------------------------------------------------------

/** `ms`, or less when `signal` aborts; its abort listener goes with it either way. */
const wait = (ms, signal) =>
  new Promise((resolve) => {
    const aborted = () => {
      clearTimeout(t)
      resolve()
    }
    const t = setTimeout(() => {
      signal.removeEventListener('abort', aborted)
      resolve()
    }, ms)
    signal.addEventListener('abort', aborted, { once: true })
  })

async function follow(signal) {
  let delay = 1000
  while (!signal.aborted) {
    try {
      const res = await fetch('/v1/events', { headers: headers(), signal, cache: 'no-store' })
      if (res.status === 401) return signOut('the token is not valid (401)')
      if (!res.ok) throw new Error(`events: ${res.status}`)
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
      let buffer = ''
      for (;;) {
        const { value, done } = await reader.read()
        if (done) break
        buffer += value.replace(/\r\n?/g, '\n')
        for (let end = buffer.indexOf('\n\n'); end !== -1; end = buffer.indexOf('\n\n')) {
          const frame = parseFrame(buffer.slice(0, end))
          buffer = buffer.slice(end + 2)
          if (frame.event === 'hello') delay = 1000
          if (frame.data !== '') onEvent(frame.event, JSON.parse(frame.data))
        }
      }
    } catch (err) {
      if (signal.aborted) return
      console.warn('event stream:', err.message)
    }
    setConn('reconnecting')
    await wait(delay, signal)
    delay = Math.min(delay * 2, 30_000)
  }
}

function parseFrame(text) {
  const frame = { event: 'message', data: '' }
  const data = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith(':')) continue
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '')
    if (field === 'event') frame.event = value
    else if (field === 'data') data.push(value)
  }
  frame.data = data.join('\n')
  return frame
}

let proxiesDue = null
let connects = 0
function onEvent(event, data) {
  if (event === 'hello') {
    role = data.role
    $('who').textContent = `${data.who} (${data.role})`
    setConn('live')
    // After a reconnect, whatever changed while the stream was down is read again, once.
    if (++connects > 1) load().catch((err) => console.warn(err.message))
    for (const r of routes.values()) render(r)
    document.body.dataset.role = role
  } else if (event === 'change') {
    update(data.state, data)
  } else if (event === 'applied') {
    update(data)
  } else if (event === 'stats') {
    stats(data)
  } else if (event === 'proxy') {
    // Acks come in bursts (one per proxy per revision): the table is read again at most once a second.
    if (proxiesDue === null)
      proxiesDue = setTimeout(() => {
        proxiesDue = null
        Promise.all([loadProxies(), loadControl()]).catch((err) => console.warn(err.message))
      }, 1000)
  }
}

function setConn(state) {
  $('conn').dataset.state = state
  $('conn').textContent = state
}

// ---- routes --------------------------------------------------------------------------------------

function update(view, entry) {
  let r = routes.get(view.name)
  if (r === undefined) {
    r = card(view)
    routes.set(view.name, r)
    loadAudit(view.name).catch((err) => console.warn(err.message))
  }
  if (entry !== undefined) addAudit(r, entry)
  if (!newer(view, r.view)) return
  r.view = view
  r.at = Date.now()
  render(r)
}

/**
 * Views arrive from the stream and from action answers in no set order: an older one (an answer that
 * lost the race with the `applied` event after it) must not overwrite a newer one.
 */
function newer(a, b) {
  if (a === b) return true
  if (a.version !== b.version) return a.version > b.version
  const at = (v) => (v.rollout === null ? 0 : Date.parse(v.rollout.updatedAt))
  if (at(a) !== at(b)) return at(a) > at(b)
  return (a.rollout?.applied ?? false) >= (b.rollout?.applied ?? false)
}

function card(view) {
  const el = $('route-card').content.firstElementChild.cloneNode(true)
  el.dataset.route = view.name
  const list = $('routes')
  const after = [...list.children].find((c) => c.dataset.route > view.name)
  list.insertBefore(el, after ?? null)
  const r = { view, at: Date.now(), el, audit: [], seen: new Set(), data: [[], [], [], [], [], [], []] }
  r.charts = {
    rps: chart(el, 'rps'),
    err: chart(el, 'err'),
    p99: chart(el, 'p99'),
  }
  return r
}

const clockTicks = (_, splits) =>
  splits.map((s) =>
    new Date(s * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' }),
  )

function chart(el, name) {
  const fig = el.querySelector(`[data-chart=${name}]`)
  const line = (label, stroke) => ({ label, stroke, width: 2 })
  return new uPlot(
    {
      width: 300,
      height: 140,
      // The figure's caption shows the latest values; the x axis the last two minutes.
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { range: (_, _min, max) => [(max ?? Date.now() / 1000) - 120, max ?? Date.now() / 1000] },
        y: { range: (_, _min, max) => [0, Math.max(max ?? 0, 1) * 1.1] },
      },
      series: [{}, line('stable', '#2f6fdf'), line('canary', '#e0761d')],
      // One line of clock time per tick: uPlot's default adds a second line with the date, which overlaps.
      axes: [{ space: 70, values: clockTicks }, { size: 48 }],
    },
    [[], [], []],
    fig,
  )
}

const field = (r, name) => r.el.querySelector(`[data-field="${name}"]`)
const set = (r, name, text) => {
  const f = field(r, name)
  if (f.textContent !== text) f.textContent = text
}

function render(r) {
  const v = r.view
  const ro = v.rollout
  set(r, 'name', v.name)
  set(r, 'releases', `stable ${v.stable?.release ?? '—'} · canary ${v.canary?.release ?? 'none'}`)
  field(r, 'bar').value = v.weights.canary
  set(r, 'weights', `stable ${v.weights.stable}% · canary ${v.weights.canary}%`)
  set(
    r,
    'rollout',
    ro === null ? 'none' : `step ${ro.step} of ${ro.steps} · canary ${ro.stepWeight}% · ${ro.state}`,
  )
  r.el.dataset.state = ro?.state ?? 'none'
  left(r)
  const a = ro?.analysis ?? null
  verdict(r, a)
  sync(r, v.proxies)
  const last = v.last
  set(r, 'last', last === null ? '—' : `${last.action} by ${last.who}${last.why ? `: ${last.why}` : ''}`)
  set(r, 'next', v.next ?? '—')
  actions(r)
}

function verdict(r, a) {
  if (a === null || a === undefined) {
    set(r, 'verdict', '—')
    set(r, 'harm', '—')
    return
  }
  const off = r.view.rollout?.plan.analysis.enabled === false
  const text = a.verdict === null ? 'not judged yet' : `${a.verdict}${a.reason ? `: ${a.reason}` : ''}`
  set(r, 'verdict', off ? 'analysis off' : text)
  set(r, 'harm', `harmed ${a.harmed} · saved ${a.saved} · of ${a.canaryRequests} canary requests`)
}

function sync(r, p) {
  const stale = p.stale.length > 0 ? ` · stale: ${p.stale.join(', ')}` : ''
  set(r, 'sync', `${p.inSync} of ${p.live} live in sync${stale}`)
  r.el.dataset.sync = p.inSync === p.live && p.stale.length === 0 ? 'yes' : 'no'
}

function left(r) {
  const ro = r.view.rollout
  if (ro === null || ro.pauseLeftMs === null) return set(r, 'left', '—')
  const ms = ro.state === 'pausing' ? Math.max(0, ro.pauseLeftMs - (Date.now() - r.at)) : ro.pauseLeftMs
  const s = Math.ceil(ms / 1000)
  const text =
    s >= 3600
      ? `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`
      : `${Math.floor(s / 60)}m ${s % 60}s`
  set(r, 'left', ro.state === 'pausing' ? text : `${text} (held)`)
}
// The countdown is redrawn locally; nothing is fetched for it.
setInterval(() => {
  for (const r of routes.values()) left(r)
}, 1000)

function stats(s) {
  const r = routes.get(s.route)
  if (r === undefined) return
  const d = r.data
  const pct = (x) => (x === null ? null : x.errorRate * 100)
  const row = [
    s.at / 1000,
    s.stable.rps,
    s.canary?.rps ?? null,
    pct(s.stable),
    pct(s.canary),
    s.stable.p99Ms,
    s.canary?.p99Ms ?? null,
  ]
  for (let i = 0; i < d.length; i++) {
    d[i].push(row[i])
    if (d[i].length > POINTS) d[i].shift()
  }
  r.charts.rps.setData([d[0], d[1], d[2]])
  r.charts.err.setData([d[0], d[3], d[4]])
  r.charts.p99.setData([d[0], d[5], d[6]])
  r.el.dataset.points = String(d[0].length)
  const both = (a, b, fmt) => `stable ${a === null ? '—' : fmt(a)} · canary ${b === null ? '—' : fmt(b)}`
  set(
    r,
    'now-rps',
    both(row[1], row[2], (x) => x.toFixed(1)),
  )
  set(
    r,
    'now-err',
    both(row[3], row[4], (x) => x.toFixed(2)),
  )
  set(
    r,
    'now-p99',
    both(row[5], row[6], (x) => x.toFixed(1)),
  )
  if (r.view.rollout !== null) verdict(r, s.analysis)
  sync(r, s.proxies)
}

// ---- history -------------------------------------------------------------------------------------

async function loadAudit(name) {
  const page = await api('GET', `/v1/audit?route=${encodeURIComponent(name)}&limit=${AUDIT}`)
  const r = routes.get(name)
  if (r === undefined) return
  for (const e of page.entries) addAudit(r, e)
}

function addAudit(r, e) {
  if (r.seen.has(e.seq)) return
  r.seen.add(e.seq)
  r.audit.push(e)
  r.audit.sort((a, b) => b.seq - a.seq)
  while (r.audit.length > AUDIT) r.seen.delete(r.audit.pop().seq)
  field(r, 'audit').replaceChildren(
    ...r.audit.map((x) => {
      const li = document.createElement('li')
      li.dataset.action = x.action
      const time = document.createElement('time')
      time.dateTime = x.time
      time.textContent = new Date(x.time).toLocaleTimeString()
      li.append(time, ` ${x.action} by ${x.who}${x.why ? `: ${x.why}` : ''}`)
      return li
    }),
  )
}

// ---- proxies -------------------------------------------------------------------------------------

async function loadProxies() {
  const { proxies } = await api('GET', '/v1/proxies')
  $('proxies').hidden = false
  $('proxy-rows').replaceChildren(
    ...proxies.map((p) => {
      const tr = document.createElement('tr')
      tr.dataset.live = String(p.live)
      const cells = [
        p.id,
        p.who,
        p.routes.join(', '),
        String(p.appliedRevision),
        p.live ? 'yes' : 'no',
        p.lastError ?? '—',
        p.lastReportAt ?? '—',
        p.replica ?? 'this one',
      ]
      for (const c of cells) tr.append(Object.assign(document.createElement('td'), { textContent: c }))
      return tr
    }),
  )
}

// ---- actions (operator tokens only; the API answers 403 to the others anyway) -------------------

function actions(r) {
  let box = r.el.querySelector('.actions')
  if (role !== 'operator') return box?.remove()
  if (box === null) {
    box = $('route-actions').content.firstElementChild.cloneNode(true)
    r.el.querySelector('.weights').after(box)
    box.addEventListener('click', (e) => {
      const act = e.target.closest('[data-act]')?.dataset.act
      if (act) confirmAct(r.view.name, act)
    })
  }
  const ro = r.view.rollout
  const active = ro !== null && (ro.phase === 'progressing' || ro.phase === 'paused')
  box.querySelector('[data-act=pause]').disabled = ro?.phase !== 'progressing'
  box.querySelector('[data-act=resume]').disabled = ro?.phase !== 'paused'
  box.querySelector('[data-act=promote]').disabled = !active
  box.querySelector('[data-act=abort]').disabled = !active && r.view.weights.canary === 0
}

let pending = null
function confirmAct(route, act) {
  pending = { route, act }
  $('confirm-title').textContent = `${act[0].toUpperCase()}${act.slice(1)} ${route}?`
  $('confirm-reason').value = ''
  $('confirm-error').textContent = ''
  $('confirm').showModal()
  $('confirm-reason').focus()
}
$('confirm-cancel').addEventListener('click', () => $('confirm').close())
$('confirm-form').addEventListener('submit', async (e) => {
  e.preventDefault()
  if (pending === null) return
  const { route, act } = pending
  const reason = $('confirm-reason').value.trim()
  $('confirm-ok').disabled = true
  try {
    const view = await api('POST', `/v1/routes/${encodeURIComponent(route)}/${act}`, reason ? { reason } : {})
    update(view)
    const r = routes.get(route)
    if (r !== undefined) set(r, 'message', `${act}: done`)
    pending = null
    $('confirm').close()
  } catch (err) {
    $('confirm-error').textContent = err.message
  } finally {
    $('confirm-ok').disabled = false
  }
})

if (token() === null) signOut()
else start()
