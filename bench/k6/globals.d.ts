// k6 gives scripts a console (log, info, warn, error, debug) but no other Node or browser globals.
// Declared here for bench/k6/tsconfig.json, which leaves out @types/node so that a Node API used by
// mistake fails the type check; under the root tsconfig these merge with Node's own declarations.
interface Console {
  log(...data: unknown[]): void
  info(...data: unknown[]): void
  warn(...data: unknown[]): void
  error(...data: unknown[]): void
  debug(...data: unknown[]): void
}
declare var console: Console
