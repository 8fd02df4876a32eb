/** The operator client's command names, known to the dispatcher without loading the client. */
export const OPS_COMMANDS: ReadonlySet<string> = new Set([
  'status',
  'history',
  'set-weight',
  'shadow',
  'rollout',
  'promote-shadow',
  'promote',
  'pause',
  'resume',
  'abort',
])

export type OpsCommand =
  | 'status'
  | 'history'
  | 'set-weight'
  | 'shadow'
  | 'rollout'
  | 'promote-shadow'
  | 'promote'
  | 'pause'
  | 'resume'
  | 'abort'
