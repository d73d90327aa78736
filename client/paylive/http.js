// What the HTTP transports share: the server's http(s) origin, tickets (protocol 4.2),
// and the customer commands sent over the HTTP API (section 3) when no socket carries them.

import { PayliveError } from './emitter.js';

/** http(s)://host of the current page, or of `base` when given (ws(s) URLs are mapped). */
export function httpOrigin(base) {
  const url = new URL(base ?? globalThis.location?.href ?? 'http://127.0.0.1/');
  const scheme = url.protocol === 'https:' || url.protocol === 'wss:' ? 'https:' : 'http:';
  return `${scheme}//${url.host}`;
}

/**
 * A single-use ticket bought with `credential` in the Authorization header, so that no
 * secret is ever written in a URL. Rejects with a `PayliveError` that has `fatal: true`
 * when the server refuses the credential (reconnecting cannot help).
 */
export async function fetchTicket(fetchFn, baseUrl, credential) {
  let reply;
  try {
    reply = await fetchFn(`${httpOrigin(baseUrl)}/api/tickets`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${credential}` },
      cache: 'no-store',
    });
  } catch (err) {
    throw new PayliveError('connection_lost', `no ticket: ${err?.message ?? err}`);
  }
  if (reply.ok) return (await reply.json()).ticket;
  const fatal = reply.status === 401 || reply.status === 403;
  throw new PayliveError(fatal ? 'unauthorized' : 'ticket_refused', `no ticket (HTTP ${reply.status})`, {
    fatal,
    closeCode: fatal ? 4401 : 1013,
  });
}

const COMMAND_PATHS = {
  pay: 'attempts',
  retry: 'attempts',
  cancel: 'cancel',
  interrupt: 'interrupt',
  check: 'check',
  seen: 'seen', // the outcome receipt (protocol 10)
};

/**
 * paylive's own answers among the statuses a proxy or load balancer also answers (502,
 * 503, 504): 503 with one of these codes in paylive's JSON error body (protocol 3.1,
 * `paylive.web.errors`; `overloaded` changed nothing), settled with that code. paylive
 * never answers 502 or 504. `engine_unavailable` to a `pay` or `retry` is no plain
 * refusal even so: the store may have saved it with only its reply lost, and the
 * command queue takes it as an unknown outcome (`commands.js`). Not `shutting_down`: a stopping worker cut the command, which may have been
 * applied, so a pay answered so is as unknown as one whose answer was lost. Held to
 * the server's table by tests/js/test_contract.py.
 */
export const UNAVAILABLE_CODES = Object.freeze(new Set([
  'overloaded',
  'engine_unavailable',
  'gateway_unavailable',
  'archive_unavailable',
]));

/** paylive's `{error: {code, message}}` from `body`, or null when it is not one. */
function ownError(body) {
  const error = body && typeof body === 'object' ? body.error : null;
  return error && typeof error === 'object' && typeof error.code === 'string' ? error : null;
}

/**
 * Send one customer command over the HTTP API and answer it as the socket would: an
 * `ack` or an `error` message with the command's `ref`, handed to `deliver`. A 502,
 * 503 or 504 that is not paylive's own refusal (a proxy's page: the request may have
 * reached paylive and been applied) is answered `connection_lost`, as a lost answer is.
 */
export async function httpCommand(fetchFn, { baseUrl, sessionId, secret }, command, deliver) {
  const path = COMMAND_PATHS[command.type];
  const ref = command.ref;
  const answer = (type, data) => deliver({ type, session: sessionId, seq: null, ts: 0, data: { ...data, ref } });
  if (!path) {
    if (command.type !== 'ping') answer('error', { code: 'unknown_command', message: `unknown command ${command.type}` });
    return;
  }
  const body = {};
  if (command.payment_method) body.payment_method = command.payment_method;
  if (command.type === 'interrupt') body.reason = command.reason ?? 'network_error';
  if (command.type === 'seen') body.status = command.status;
  let reply;
  try {
    reply = await fetchFn(`${httpOrigin(baseUrl)}/api/sessions/${encodeURIComponent(sessionId)}/${path}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${secret}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch (err) {
    answer('error', { code: 'connection_lost', message: `the command may not have arrived: ${err?.message ?? err}` });
    return;
  }
  if (reply.ok) {
    answer('ack', {});
    return;
  }
  let answered = null;
  try {
    answered = await reply.json();
  } catch {
    // Not JSON (a proxy's page): the status says what it can.
  }
  const own = ownError(answered);
  if (reply.status >= 500 && !(reply.status === 503 && UNAVAILABLE_CODES.has(own?.code))) {
    // Whatever stands in front of paylive gave up on the request (502, 504) or refused
    // it (503) with a page of its own, or the server failed (500: a fault, never a
    // refusal): it may have reached paylive, which may have applied it. The session's
    // state tells, as after any lost answer.
    answer('error', {
      code: 'connection_lost',
      message: `HTTP ${reply.status}: the command may have reached the server; the session state will tell`,
    });
    return;
  }
  const error = own ?? { code: 'error', message: `HTTP ${reply.status}` };
  answer('error', { code: error.code, message: error.message ?? `HTTP ${reply.status}` });
}
