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
 * How an HTTP command (on SSE or long-polling) is bounded and sent again; options of
 * `PayliveSession` (`SESSION_DEFAULTS`), these values when a host gives none.
 */
export const HTTP_COMMAND_DEFAULTS = Object.freeze({
  /**
   * Each request of a command is aborted after this long (ms): its answer is then lost.
   * Above the server's own bound on a command's provider calls
   * (`PAYLIVE_PROVIDER_DEADLINE_MS`, 15 s by default), so that a slow provider's pay is
   * answered rather than cut at the edge and sent again.
   */
  requestTimeout: 20_000,
  /** A command whose answer was lost is sent again, with its Idempotency-Key, at most this many times. */
  resends: 2,
  /** How long to wait before each of those (ms). */
  resendDelay: 1_000,
});

/**
 * A new Idempotency-Key: 32 hex digits of randomness (the contract takes 1 to 255
 * printable characters). `crypto.randomUUID` exists in secure contexts only;
 * `getRandomValues` everywhere a page runs.
 */
export function newIdempotencyKey() {
  const bytes = new Uint8Array(16);
  const crypto = globalThis.crypto;
  if (typeof crypto?.getRandomValues === 'function') crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i += 1) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

// The longest delay a timer keeps: past it setTimeout fires at once (browsers and node
// alike), so a bound of a month would abort every request on the spot.
const LONGEST_TIMER = 2 ** 31 - 1;

/**
 * The bounds of `options` as `httpCommand` uses them: a value that is no bound (not a
 * number, NaN, Infinity, negative; a `requestTimeout` of 0, which no answer could beat)
 * is the default rather than an abort or a resend at once, or a pay sent again for ever.
 */
export function httpCommandBounds(options = {}) {
  const number = (value, least) => typeof value === 'number' && Number.isFinite(value) && value >= least;
  const pick = (name, least) => (number(options[name], least) ? options[name] : HTTP_COMMAND_DEFAULTS[name]);
  return {
    requestTimeout: Math.min(pick('requestTimeout', 1), LONGEST_TIMER),
    resends: Math.floor(pick('resends', 0)),
    resendDelay: Math.min(pick('resendDelay', 0), LONGEST_TIMER),
  };
}

/** Wait `ms`, or less when `signal` (the page closed the session) aborts first. */
const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener?.('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener?.('abort', done);
  });

/**
 * One request, bounded by `timeout` (ms): `{reply, body}` (the body read for an answer
 * that is not 2xx, and for a 2xx one when `readAnswer`), or `{timedOut: true}`, or
 * `{closed: true}` once `closing` aborts. Aborted when it runs out (a connection that
 * swallows the request would hold it for ever) or the page closes the session; raced
 * as well, for a fetch that ignores the signal. Rejects as `fetchFn` does.
 */
async function boundedRequest(fetchFn, url, init, timeout, closing, readAnswer = false) {
  const abort = typeof AbortController === 'function' ? new AbortController() : null;
  let timer;
  let onClose;
  const expired = new Promise((resolve) => {
    timer = setTimeout(() => {
      resolve({ timedOut: true });
      abort?.abort();
    }, timeout);
    // The page closed the session: nobody waits for this answer any more.
    onClose = () => {
      resolve({ closed: true });
      abort?.abort();
    };
    if (closing?.aborted) onClose();
    else closing?.addEventListener?.('abort', onClose);
  });
  const answered = (async () => {
    const reply = await fetchFn(url, { ...init, signal: abort?.signal });
    let body = null;
    if (!reply.ok || readAnswer) {
      try {
        body = await reply.json();
      } catch {
        // Not JSON (a proxy's page): the status says what it can.
      }
    }
    return { reply, body };
  })();
  try {
    return await Promise.race([answered, expired]);
  } finally {
    clearTimeout(timer);
    closing?.removeEventListener?.('abort', onClose);
  }
}

/**
 * What one request of a command came to: `{type: 'ack', body}` (`body`: the answer's
 * JSON when `readAnswer`, else null), or `{type: 'error', code, message, lost}`;
 * `lost`: the answer was lost, or says only that the request is still running
 * (`idempotency_key_in_use`), so the same request with the same key may be sent again
 * and be answered with what the server did.
 */
async function sendOnce(fetchFn, url, init, timeout, closing, readAnswer) {
  let result;
  try {
    result = await boundedRequest(fetchFn, url, init, timeout, closing, readAnswer);
  } catch (err) {
    return { type: 'error', code: 'connection_lost', message: `the command may not have arrived: ${err?.message ?? err}`, lost: true };
  }
  if (result.closed) return { type: 'error', code: 'closed', message: 'the session client was closed', lost: false };
  if (result.timedOut) {
    return { type: 'error', code: 'timeout', message: `no answer within ${timeout} ms; the request was aborted`, lost: true };
  }
  const { reply, body } = result;
  if (reply.ok) return { type: 'ack', body };
  const own = ownError(body);
  if (reply.status >= 500 && !(reply.status === 503 && UNAVAILABLE_CODES.has(own?.code))) {
    // Whatever stands in front of paylive gave up on the request (502, 504) or refused
    // it (503) with a page of its own, or the server failed (500: a fault, never a
    // refusal), or a stopping worker cut it (503 `shutting_down`): it may have reached
    // paylive, which may have applied it.
    return {
      type: 'error',
      code: 'connection_lost',
      message: `HTTP ${reply.status}: the command may have reached the server; the session state will tell`,
      lost: true,
    };
  }
  const error = own ?? { code: 'error', message: `HTTP ${reply.status}` };
  // `engine_unavailable`: the store may have saved the attempt with only its reply lost
  // (protocol 3.1: the same request again is answered with it).
  const lost = error.code === 'engine_unavailable' || error.code === 'idempotency_key_in_use';
  return { type: 'error', code: error.code, message: error.message ?? `HTTP ${reply.status}`, lost };
}

/**
 * Send one customer command over the HTTP API and answer it as the socket would: an
 * `ack` or an `error` message with the command's `ref`, handed to `deliver` (nothing
 * once `closing` aborted: the command was rejected `closed`). How it is sent:
 * `sendHttpCommand`.
 */
export async function httpCommand(fetchFn, options, command, deliver, closing = null) {
  const ref = command.ref;
  const answer = (type, data) => deliver({ type, session: options.sessionId, seq: null, ts: 0, data: { ...data, ref } });
  if (command.type === 'ping') return; // the HTTP API has nothing to answer it
  const result = await sendHttpCommand(fetchFn, options, command, closing);
  if (closing?.aborted === true) return;
  if (result.type === 'ack') answer('ack', {});
  else answer('error', { code: result.code, message: result.message });
}

/**
 * Send one customer command (`pay`, `retry`, `cancel`, `interrupt`, `check`, `seen`)
 * over the HTTP API: `{type: 'ack', body}` (`body`: the last answer's JSON when
 * `readAnswer`, else null) or `{type: 'error', code, message}`, code `closed` once
 * `closing` (an AbortSignal: the page closed the session) aborts. Each request is
 * aborted after `requestTimeout`. A 502, 503 or 504 that is not paylive's own refusal
 * (a proxy's page: the request may have reached paylive and been applied) is a lost
 * answer, as a failed or timed-out request is. Every command carries an
 * `Idempotency-Key` (protocol 3.1: every state-changing route keeps one), made here for
 * this command (the queue sends each command once) and kept for it: when its answer is
 * lost it is sent again, the same request with the same key, up to `resends` times
 * `resendDelay` apart, and the server answers what it did (a cancel made already is
 * answered 200 again, not refused `invalid_state`).
 * The last answer settles it; when that is lost too, `connection_lost` or `timeout` (the
 * outcome is unknown: `commands.js`).
 */
export async function sendHttpCommand(fetchFn, options, command, closing = null, readAnswer = false) {
  const { baseUrl, sessionId, secret } = options;
  const path = COMMAND_PATHS[command.type];
  if (!path) return { type: 'error', code: 'unknown_command', message: `unknown command ${command.type}` };
  const body = {};
  if (command.payment_method) body.payment_method = command.payment_method;
  if (command.type === 'interrupt') body.reason = command.reason ?? 'network_error';
  if (command.type === 'seen') body.status = command.status;
  const headers = {
    Authorization: `Bearer ${secret}`,
    'Content-Type': 'application/json',
    // A command's own key when it has one (a socket frame's, sent again here after the
    // page fell back: the same request, protocol 4.1, v1.2), else one made for it.
    'Idempotency-Key': typeof command.key === 'string' && command.key ? command.key : newIdempotencyKey(),
  };
  const url = `${httpOrigin(baseUrl)}/api/sessions/${encodeURIComponent(sessionId)}/${path}`;
  const init = { method: 'POST', headers, body: JSON.stringify(body) };
  const result = await sendKeyed(fetchFn, url, init, httpCommandBounds(options), closing, readAnswer);
  if (result.type === 'ack') return { type: 'ack', body: result.body };
  if (result.code === 'closed') return { type: 'error', code: 'closed', message: 'the session client was closed' };
  return { type: 'error', code: result.code, message: result.message };
}

/**
 * The sending that commands and `sendKeyedRequest` share: `init` (its Idempotency-Key
 * in its headers) sent, each request bounded by `requestTimeout`, and sent again, the
 * same request with the same key, up to `resends` times `resendDelay` apart while its
 * answer is lost. `{type: 'ack', body}` or `{type: 'error', code, message, lost}`
 * (`lost`: the last answer was lost too, so what the server did is unknown), code
 * `closed` once `closing` aborts.
 */
async function sendKeyed(fetchFn, url, init, bounds, closing, readAnswer) {
  const { requestTimeout: timeout, resends, resendDelay: delay } = bounds;
  // `closing` aborts when the page closes the session (`close()`) or gives the request
  // up: nothing more is sent for it and its answer goes nowhere.
  const closed = () => closing?.aborted === true;
  let result = await sendOnce(fetchFn, url, init, timeout, closing, readAnswer);
  for (let sent = 0; result.lost && sent < resends && !closed(); sent += 1) {
    await sleep(delay, closing);
    if (closed()) break;
    result = await sendOnce(fetchFn, url, init, timeout, closing, readAnswer);
  }
  if (closed()) return { type: 'error', code: 'closed', message: 'the request was given up', lost: false };
  return result;
}

/**
 * One state-changing request to paylive (a staff action of the dashboard: a refund,
 * resolving a review, an effect done by hand, "Send again"), sent as the HTTP commands
 * are: under one `Idempotency-Key` (the one in `init.headers`, else a new one), each
 * request aborted after `requestTimeout`, and while its answer is lost (no answer, a
 * timeout, a proxy's 502/503/504, 503 `shutting_down` or `engine_unavailable`, 409
 * `idempotency_key_in_use`) sent again, the same request with the same key, up to
 * `resends` times `resendDelay` apart: paylive answers with what it did (protocol 3.1).
 * `options`: `fetch`, `requestTimeout`, `resends`, `resendDelay` (`HTTP_COMMAND_DEFAULTS`
 * when none), `signal` (aborting gives up: code `closed`). Resolves, never rejects:
 * `{ok: true, key, body}` (the answer's JSON), or `{ok: false, key, code, message,
 * unknown}`; `unknown` when the last answer was lost too, or the request given up: it
 * may have been done, and only the state on the server can tell.
 */
export async function sendKeyedRequest(url, init = {}, options = {}) {
  const fetchFn = options.fetch ?? ((...args) => globalThis.fetch(...args));
  const headers = { ...(init.headers ?? {}) };
  let key = Object.entries(headers).find(([name]) => name.toLowerCase() === 'idempotency-key')?.[1];
  if (!key) {
    key = newIdempotencyKey();
    headers['Idempotency-Key'] = key;
  }
  const request = { method: 'POST', ...init, headers };
  const result = await sendKeyed(fetchFn, url, request, httpCommandBounds(options), options.signal ?? null, true);
  if (result.type === 'ack') return { ok: true, key, body: result.body };
  if (result.code === 'closed') return { ok: false, key, code: 'closed', message: 'the request was given up', unknown: true };
  return { ok: false, key, code: result.code, message: result.message, unknown: result.lost };
}
