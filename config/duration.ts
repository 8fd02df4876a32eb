/** Durations in config and plans: `250ms`, `5s`, `2m`, `1h`, or a bare number of milliseconds. */
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** Milliseconds for a duration string, or `undefined` when it is not one. */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined
  if (typeof value !== 'string') return undefined
  let i = 0
  while (i < value.length && ((value[i]! >= '0' && value[i]! <= '9') || value[i] === '.')) i++
  if (i === 0) return undefined
  const amount = Number(value.slice(0, i))
  const unit = UNIT_MS[value.slice(i)]
  if (unit === undefined || !Number.isFinite(amount)) return undefined
  return amount * unit
}

export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`
  if (ms % 1000 === 0 && ms > 0) return `${ms / 1000}s`
  return `${ms}ms`
}
