// Header sanitising: RequestHead.parse + addForwarding on a realistic 10-field browser request (what
// the proxy does to every request head), and responseHeaders on a realistic 10-field upstream answer.
import { test } from 'vitest'
import { type ForwardingPolicy, RequestHead, responseHeaders } from '../../proxy/listen/headers.ts'
import { BATCH, nsPerOp, sink } from './report.ts'

const policy: ForwardingPolicy = { trustedHops: 0, via: true, overrideHeader: 'x-veer-version' }
const trusting: ForwardingPolicy = { ...policy, trustedHops: 1 }

/** Node's rawHeaders for a browser's API call: 10 fields, names as the client cased them. */
function browserRequest(i: number, behindLb: boolean): string[] {
  const raw = [
    'Host',
    'shop.example.com',
    'User-Agent',
    'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36',
    'Accept',
    'application/json, text/plain, */*',
    'Accept-Encoding',
    'gzip, deflate, br, zstd',
    'Accept-Language',
    'en-US,en;q=0.9',
    'Connection',
    'keep-alive',
    'Cookie',
    `session=${(i * 2654435761).toString(16)}; theme=dark`,
    'X-User-Id',
    `user-${(i * 7919) % 100_000}`,
    'X-Request-Id',
    `${(i * 40503).toString(16).padStart(8, '0')}-5f1c-4a8e-9d3b-2c7e91f0a4b6`,
    'traceparent',
    `00-${(i * 977).toString(16).padStart(32, '0')}-${(i * 131).toString(16).padStart(16, '0')}-01`,
  ]
  // Behind a load balancer, one of the ten is its X-Forwarded-For (in place of the request id).
  if (behindLb) raw.splice(16, 2, 'X-Forwarded-For', `203.0.113.${i & 255}`)
  return raw
}
const requests = Array.from({ length: 64 }, (_, i) => browserRequest(i, false))
const lbRequests = Array.from({ length: 64 }, (_, i) => browserRequest(i, true))

/** undici's parsed head of a typical JSON answer: 10 fields, lower-case names, set-cookie as a list. */
const answers = Array.from({ length: 64 }, (_, i) => ({
  'content-type': 'application/json; charset=utf-8',
  'content-length': String(1000 + i),
  date: 'Sun, 22 Nov 2026 04:38:41 GMT',
  'cache-control': 'private, max-age=0, must-revalidate',
  etag: `W/"${(i * 2654435761).toString(16)}"`,
  vary: 'Accept-Encoding, Origin',
  'x-request-id': `${(i * 40503).toString(16).padStart(8, '0')}-5f1c-4a8e-9d3b-2c7e91f0a4b6`,
  'set-cookie': [`session=${i}; Path=/; HttpOnly`, 'theme=dark; Path=/'],
  connection: 'keep-alive',
  'keep-alive': 'timeout=5',
}))

test('header sanitising', async ({ bench }) => {
  await nsPerOp(
    bench,
    bench('RequestHead.parse + addForwarding (10 fields)', () => {
      for (let i = 0; i < BATCH; i++) {
        const head = new RequestHead()
        head.parse(requests[i & 63]!, policy)
        head.addForwarding(policy, '127.0.0.1', 'IPv4', 'http', '1.1')
        sink.o = head
      }
    }),
    bench('… with X-Forwarded-For, 1 trusted hop', () => {
      for (let i = 0; i < BATCH; i++) {
        const head = new RequestHead()
        head.parse(lbRequests[i & 63]!, trusting)
        head.addForwarding(trusting, '10.1.2.3', 'IPv4', 'http', '1.1')
        sink.o = head
      }
    }),
    bench('responseHeaders (10 fields)', () => {
      for (let i = 0; i < BATCH; i++) sink.o = responseHeaders(answers[i & 63]!, [])
    }),
  )
})
