/**
 * Sticky assignment: a user's key (a header or cookie value) hashes to a fixed point in [0, 2^32), and
 * the user gets the canary when that point is under the weight's threshold. Raising the weight only
 * raises the threshold, so a user on canary at 5% stays on canary at 25% (monotone in the weight).
 */

/** FNV-1a over UTF-16 code units, then murmur3's fmix32 so near-identical keys spread evenly. */
export function stickyHash(key: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/**
 * The value of cookie `name` in a Cookie header, or undefined. Scans without splitting or allocating
 * beyond the returned slice (RFC 6265 section 5.4: pairs separated by "; ").
 */
export function cookieValue(header: string, name: string): string | undefined {
  let from = 0
  while (from < header.length) {
    const at = header.indexOf(name, from)
    if (at === -1) return undefined
    const end = at + name.length
    let before = at - 1
    while (before >= 0 && header.charCodeAt(before) === 32) before--
    if ((before < 0 || header.charCodeAt(before) === 59) && header.charCodeAt(end) === 61) {
      const stop = header.indexOf(';', end + 1)
      return header.slice(end + 1, stop === -1 ? header.length : stop).trim()
    }
    from = end
  }
  return undefined
}
