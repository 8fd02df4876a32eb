/**
 * Durations in config and plans: `250ms`, `5s`, `2m`, `1h`. A number needs its unit (`pause: 30` could
 * mean seconds or milliseconds); only 0, which means the same in every unit, may go without.
 */
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** Milliseconds for a duration string, or `undefined` when it is not one. */
export function parseDuration(value: unknown): number | undefined {
  if (value === 0 || value === '0') return 0
  if (typeof value !== 'string') return undefined
  let i = 0
  while (i < value.length && ((value[i]! >= '0' && value[i]! <= '9') || value[i] === '.')) i++
  if (i === 0) return undefined
  const amount = Number(value.slice(0, i))
  const unit = UNIT_MS[value.slice(i)]
  if (unit === undefined || !Number.isFinite(amount)) return undefined
  return amount * unit
}

/** A number, or a string of digits, written where a duration goes: it lacks its unit. */
export function lacksUnit(value: unknown): boolean {
  return typeof value === 'number' || (typeof value === 'string' && /^[0-9.]+$/.test(value))
}

export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`
  if (ms % 1000 === 0 && ms > 0) return `${ms / 1000}s`
  return `${ms}ms`
}
