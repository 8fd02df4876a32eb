/**
 * Every refusal of the control API, one code each, with its status and a default message. Answers are
 * JSON `{"error": code, "message": …}`; README's table of codes is checked against this one by a test.
 */
export const CONTROL_ERRORS = {
  malformed_json: { status: 400, message: 'the body is not valid JSON' },
  invalid_body: { status: 400, message: 'the body does not have the expected fields' },
  invalid_plan: { status: 400, message: 'the rollout plan is not valid' },
  invalid_query: { status: 400, message: 'a query parameter is not valid' },
  unauthorized: {
    status: 401,
    message: 'send Authorization: Bearer <token> with a token from the token file or VEER_TOKEN',
  },
  forbidden: { status: 403, message: 'this token’s role may not make this call' },
  not_found: { status: 404, message: 'no such endpoint; see README “Control process” for the API' },
  unknown_route: { status: 404, message: 'no such route; GET /v1/routes lists them' },
  unknown_proxy: {
    status: 404,
    message: 'this proxy is not registered (control may have restarted); POST /v1/proxies/register again',
  },
  method_not_allowed: { status: 405, message: 'this endpoint does not take this method' },
  rollout_active: { status: 409, message: 'the route has a rollout in progress' },
  no_rollout: { status: 409, message: 'the route has no rollout in progress' },
  already_paused: { status: 409, message: 'the rollout is already paused' },
  not_paused: { status: 409, message: 'the rollout is not paused' },
  no_canary: { status: 409, message: 'the route has no canary upstream' },
  no_shadow: { status: 409, message: 'the route has no shadow upstream' },
  version_mismatch: { status: 412, message: 'the route changed since the version in If-Match' },
  body_too_large: { status: 413, message: 'the body is larger than 64 KiB' },
  unsupported_media_type: {
    status: 415,
    message: 'send the body as JSON with Content-Type: application/json',
  },
  too_many_auth_failures: {
    status: 429,
    message: 'too many failed authentications from this address; wait and retry with a valid token',
  },
  storage_failed: {
    status: 503,
    message: 'the state could not be written (a full disk or an I/O error); nothing changed, retry later',
  },
  internal: { status: 500, message: 'unexpected error; see the control log' },
  forward_loop: {
    status: 508,
    message:
      "this replica was sent a call it forwarded itself: the leader's store.etcd.advertise leads back here; set every replica's to its own address",
  },
  shutting_down: { status: 503, message: 'control is shutting down; retry in a moment' },
} as const

export type ControlErrorCode = keyof typeof CONTROL_ERRORS

/** The state could not be written or read in time (a full disk, etcd away): 503, retry in 5 s. */
export function storageFailed(message: string): ApiError {
  return new ApiError('storage_failed', message, { 'retry-after': '5' })
}

/** A refusal with a stable code; `message` says what was wrong and how to fix it. */
export class ApiError extends Error {
  readonly code: ControlErrorCode
  readonly status: number
  readonly headers: Readonly<Record<string, string>>

  constructor(code: ControlErrorCode, message?: string, headers: Record<string, string> = {}) {
    super(message ?? CONTROL_ERRORS[code].message)
    this.code = code
    this.status = CONTROL_ERRORS[code].status
    this.headers = headers
  }
}
