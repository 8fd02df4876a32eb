// stickyHash: a user's key to a point in [0, 2^32), for short ids and UUIDs; cookieValue for the
// cookie form of sticky routing.
import { test } from 'vitest'
import { cookieValue, stickyHash } from '../../proxy/split/sticky.ts'
import { BATCH, nsPerOp, sink } from './report.ts'

const ids = Array.from({ length: 1024 }, (_, i) => `user-${(i * 7919) % 100_000}`)
const hex = (n: number, width: number) => (n >>> 0).toString(16).padStart(width, '0').slice(-width)
const uuids = Array.from(
  { length: 1024 },
  (_, i) =>
    `${hex(i * 2654435761, 8)}-${hex(i * 40503, 4)}-4${hex(i * 977, 3)}-a${hex(i * 131, 3)}-${hex(i * 2246822519, 8)}${hex(i, 4)}`,
)
const cookies = ids.map(
  (id) => `_ga=GA1.2.1234567890.1700000000; theme=dark; veer_user=${id}; session=abcdef0123456789`,
)

test('stickyHash', async ({ bench }) => {
  await nsPerOp(
    bench,
    bench('stickyHash: "user-12345" (10 chars)', () => {
      let h = 0
      for (let i = 0; i < BATCH; i++) h ^= stickyHash(ids[i & 1023]!)
      sink.n = h
    }),
    bench('stickyHash: UUID (36 chars)', () => {
      let h = 0
      for (let i = 0; i < BATCH; i++) h ^= stickyHash(uuids[i & 1023]!)
      sink.n = h
    }),
    bench('cookieValue: 4-cookie header', () => {
      for (let i = 0; i < BATCH; i++) sink.o = cookieValue(cookies[i & 1023]!, 'veer_user')
    }),
  )
})
