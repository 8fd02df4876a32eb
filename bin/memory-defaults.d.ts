/** What is missing of veer's memory defaults: V8 flags for node's command line, and MALLOC_ARENA_MAX=1. */
export function missingMemoryDefaults(
  given: string,
  env: Record<string, string | undefined>,
  platform: string,
): { flags: string[]; arena: boolean }
