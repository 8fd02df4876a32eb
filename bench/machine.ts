// What the figures were measured on: cores, CPU model, memory, kernel, Node version.
import { readFileSync } from 'node:fs'
import { availableParallelism, release, totalmem } from 'node:os'

export interface Machine {
  nproc: number
  cpuModel: string
  memGiB: number
  kernel: string
  node: string
}

function cpuModel(): string {
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8')
    return /^model name\s*:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? 'unknown'
  } catch {
    return 'unknown'
  }
}

export function describeMachine(): Machine {
  return {
    nproc: availableParallelism(),
    cpuModel: cpuModel(),
    memGiB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: process.version,
  }
}

/** The line under a report's title: `DATE · N cores · CPU · N GiB · Linux … · Node …`. */
export function machineLine(date: string, m: Machine): string {
  return `${date} · ${m.nproc} cores · ${m.cpuModel} · ${m.memGiB} GiB · Linux ${m.kernel} · Node ${m.node}`
}
