import { spawn, spawnSync } from 'node:child_process'
import {
  closeSync,
  constants,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isoNow, jsonFields, LineSink } from '../../proxy/log.ts'

let dir: string
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'veer-sink-'))
})
afterEach(() => rmSync(dir, { recursive: true, force: true }))

const line = (i: number, pad = 0) => `${JSON.stringify({ i, pad: 'x'.repeat(pad) })}\n`

describe('LineSink', () => {
  it('writes every line whole and in order, across chunks and for lines longer than a chunk', async () => {
    const file = join(dir, 'out')
    const fd = openSync(file, 'w')
    const sink = new LineSink(fd, 64)
    const expected: string[] = []
    for (let i = 0; i < 500; i++) {
      // Mostly short lines, some longer than a whole chunk, some with multi-byte characters.
      const l = i % 50 === 7 ? line(i, 200) : i % 13 === 0 ? `{"i":${i},"s":"ünïcødé ✓"}\n` : line(i)
      expected.push(l)
      expect(sink.write(l)).toBe(true)
    }
    await sink.drained()
    sink.close()
    closeSync(fd)
    expect(readFileSync(file, 'utf8')).toBe(expected.join(''))
  })

  it('writes nothing more after close() but the write already in flight', async () => {
    const file = join(dir, 'out')
    const fd = openSync(file, 'w')
    const sink = new LineSink(fd, 64)
    // Short lines, 3 to a chunk: the first full chunk goes to a write at once, the others queue.
    for (let i = 0; i < 60; i++) sink.write(line(i))
    sink.close()
    expect(sink.write(line(99))).toBe(false)
    // Until the write in flight has ended: one the sink started after it would be in flight again.
    while (sink.inFlight) await new Promise((r) => setImmediate(r))
    closeSync(fd)
    const text = readFileSync(file, 'utf8')
    expect(text.length).toBeLessThanOrEqual(64)
    expect(`${line(0)}${line(1)}${line(2)}`.startsWith(text)).toBe(true)
  })

  it('holds a partial chunk until flush, then writes it', async () => {
    const file = join(dir, 'out')
    const fd = openSync(file, 'w')
    const sink = new LineSink(fd, 4096, 60_000)
    sink.write(line(1))
    await new Promise((r) => setImmediate(r))
    expect(readFileSync(file, 'utf8')).toBe('')
    await sink.drained()
    expect(readFileSync(file, 'utf8')).toBe(line(1))
    sink.close()
    closeSync(fd)
  })

  it('drops lines beyond its queue limit while stdout is stuck, then says how many', async () => {
    const fifo = join(dir, 'fifo')
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0)
    // Read-write and non-blocking: nobody reads yet, so once the pipe is full every write gets EAGAIN.
    const fd = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK)
    const sink = new LineSink(fd, 4096, 10, 256 * 1024)
    let written = 0
    let dropped = 0
    // ~1 MiB of lines against a 64 KiB pipe and a 256 KiB queue.
    for (let i = 0; i < 10_000; i++) {
      if (sink.write(line(i, 80))) written++
      else dropped++
      if (i % 500 === 0) await new Promise((r) => setTimeout(r, 1))
    }
    expect(dropped).toBeGreaterThan(0)
    expect(written).toBeGreaterThan(0)
    // Now read everything out while the sink writes the rest.
    const got: Buffer[] = []
    const buf = Buffer.alloc(65536)
    let done = false
    void sink.drained(20_000).then(() => (done = true))
    for (;;) {
      let n = 0
      try {
        n = readSync(fd, buf)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err
      }
      if (n > 0) got.push(Buffer.from(buf.subarray(0, n)))
      else if (done) break
      else await new Promise((r) => setTimeout(r, 2))
    }
    sink.close()
    closeSync(fd)
    const lines = Buffer.concat(got).toString('utf8').trimEnd().split('\n')
    const records = lines.map((l) => JSON.parse(l) as { i?: number; msg?: string; dropped?: number })
    const kept = records.filter((r) => r.i !== undefined).map((r) => r.i!)
    expect(kept.length).toBe(written)
    // In order, with a gap where lines were dropped.
    for (let k = 1; k < kept.length; k++) expect(kept[k]!).toBeGreaterThan(kept[k - 1]!)
    const notes = records.filter((r) => r.msg === 'log lines dropped')
    expect(notes.map((n) => n.dropped).reduce((a, b) => a! + b!, 0)).toBe(dropped)
  }, 30_000)

  it('holds no more buffers than its lines need while stdout is stuck, however often it flushes', async () => {
    const fifo = join(dir, 'fifo')
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0)
    const fd = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK)
    // Fill the pipe so that every write gets EAGAIN; flush every millisecond.
    const filler = Buffer.alloc(4096, 'f')
    for (;;) {
      try {
        writeSync(fd, filler)
      } catch {
        break
      }
    }
    const sink = new LineSink(fd, 4096, 1)
    let bytes = 0
    for (let i = 0; i < 150; i++) {
      const l = line(i)
      bytes += Buffer.byteLength(l)
      sink.write(l)
      await new Promise((r) => setTimeout(r, 2))
    }
    // The lines fill a few chunks; a flush while a write waits must not seal a fresh chunk each time.
    expect(sink.held).toBeLessThanOrEqual(bytes + 2 * 4096)
    sink.close()
    closeSync(fd)
  })

  it('at exit, retries a full non-blocking stdout until its reader catches up, losing nothing', async () => {
    const script = [
      `import { LineSink } from ${JSON.stringify(join(import.meta.dirname, '../../proxy/log.ts'))}`,
      // Touching process.stdout makes a piped fd 1 non-blocking, as a console exporter would.
      `process.stdout`,
      `const sink = new LineSink(1)`,
      `process.on('exit', () => sink.flushAtExit())`,
      `for (let i = 0; i < 12000; i++) sink.write(JSON.stringify({ i, pad: 'p'.repeat(80) }) + '\\n')`,
      `await sink.drained(100)`,
      // A chunk whose write(2) is in flight at exit is the thread pool's, not flushAtExit's: exit
      // between two attempts, as a stuck stdout's writes spend nearly all their time.
      `while (sink.inFlight) await new Promise((r) => setTimeout(r, 1))`,
      `process.exit(0)`,
    ].join('\n')
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    // The reader sleeps for 0.6 s first: the child's pipe fills and its exit has to wait for it.
    child.stdout.pause()
    setTimeout(() => child.stdout.resume(), 600)
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
    const code = await new Promise((r) => child.on('close', r))
    expect(code).toBe(0)
    const ids = out
      .trimEnd()
      .split('\n')
      .map((l) => (JSON.parse(l) as { i: number }).i)
    expect(ids.length).toBe(12000)
    expect(ids.every((id, k) => id === k)).toBe(true)
  }, 15_000)

  it('writes what is buffered when the process exits', () => {
    const file = join(dir, 'out')
    const script = [
      `import { openSync } from 'node:fs'`,
      `import { LineSink } from ${JSON.stringify(join(import.meta.dirname, '../../proxy/log.ts'))}`,
      `const sink = new LineSink(openSync(${JSON.stringify(file)}, 'w'))`,
      `process.on('exit', () => sink.flushAtExit())`,
      `for (let i = 0; i < 40; i++) sink.write(JSON.stringify({ i }) + '\\n')`,
      `process.exit(0)`,
    ].join('\n')
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })
    expect(r.stderr).toBe('')
    // Nothing was written before exit (no chunk was full and no flush came): the exit wrote it all.
    const ids = readFileSync(file, 'utf8')
      .trimEnd()
      .split('\n')
      .map((l) => (JSON.parse(l) as { i: number }).i)
    expect(ids).toEqual(Array.from({ length: 40 }, (_, i) => i))
  })
})

describe('line parts', () => {
  it('jsonFields serialises fixed fields as a JSON object tail', () => {
    const tail = jsonFields({ pid: 7, route: 'a"b', release: 'v1\n' })
    expect(JSON.parse(`{"x":1${tail}}`)).toEqual({ x: 1, pid: 7, route: 'a"b', release: 'v1\n' })
  })

  it('isoNow is the current time in ISO 8601', () => {
    const before = Date.now()
    const t = Date.parse(isoNow())
    expect(t).toBeGreaterThanOrEqual(before)
    expect(t).toBeLessThanOrEqual(Date.now())
  })
})
