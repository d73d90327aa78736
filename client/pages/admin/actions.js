// The staff actions of the dashboard (a refund, resolving a review, an effect done by
// hand, "Send again"): each is one intent under one Idempotency-Key, sent as the
// checkout's commands are (`sendKeyedRequest`: each request bounded, sent again with
// its key while its answer is lost), so an answer lost on the way back (a proxy's 502,
// a timeout, a worker stopping) is answered with what paylive did rather than shown as
// a failure that invites a second click (protocol 3.1, 6, 8.1).

import { newIdempotencyKey, sendKeyedRequest } from 'paylive-client';

/** What the dashboard says of an action whose every answer was lost. */
export const NOT_KNOWN =
  'Not known whether it was done — its answer was lost on the way: check the session before doing it ' +
  'again (pressed again, the same request goes with the same key and is not done twice).';

// Refusals made before a request's Idempotency-Key is looked at (the edge's checks,
// and the "not now" refusals that release the key: protocol 3.1), or a page that is
// not paylive's (`error`): they say nothing of what an earlier request under it did.
const AT_THE_DOOR = new Set([
  'unauthorized', 'forbidden', 'role_not_allowed', 'origin_not_allowed', 'rate_limited',
  'overloaded', 'gateway_unavailable', 'archive_unavailable', 'request_timeout',
  'body_too_large', 'headers_too_large', 'invalid_json', 'conflict', 'error',
]);

const KEPT_KEYS = 100;

export class StaffActions {
  #token;
  #options;
  // Actions in flight, by what they act on: a second press joins the first.
  #running = new Map();
  // Keys of actions whose outcome is unknown, by what they act on and their body. The
  // same request pressed again goes with the same key (paylive answers what it did),
  // even after another intent on the same thing (a refund of 300 between two presses
  // of one of 500); any other request is a new intent with a key of its own.
  #unknown = new Map();

  /** ``token()`` gives the staff token; ``options``: as ``sendKeyedRequest``'s. */
  constructor(token, options = {}) {
    this.#token = token;
    this.#options = options;
  }

  /**
   * POST ``body`` (an object, or undefined for none) to ``path`` as the action
   * ``name`` (what it acts on: "refund ps_...", "done <effect>"). Resolves as
   * ``sendKeyedRequest`` does; while it runs, the same name gets the same promise.
   */
  run(name, path, body) {
    const running = this.#running.get(name);
    if (running) return running;
    const text = body === undefined ? undefined : JSON.stringify(body);
    const intent = `${name}\n${text ?? ''}`;
    const key = this.#unknown.get(intent) ?? newIdempotencyKey();
    const headers = { Authorization: `Bearer ${this.#token()}`, 'Idempotency-Key': key };
    if (text !== undefined) headers['Content-Type'] = 'application/json';
    const sent = sendKeyedRequest(path, { method: 'POST', headers, body: text }, this.#options)
      .then((result) => {
        if (!result.ok && result.unknown) {
          this.#unknown.set(intent, key);
          // Bounded: the oldest goes first (its session has long been checked).
          if (this.#unknown.size > KEPT_KEYS) this.#unknown.delete(this.#unknown.keys().next().value);
        }
        // A refusal at the door (the token, the role, the rate, a busy server) came
        // before paylive looked at the key: what the kept one did is no better known.
        else if (result.ok || !AT_THE_DOOR.has(result.code)) this.#unknown.delete(intent);
        if (!result.ok) console.warn(`paylive dashboard: ${name}: ${result.code}: ${result.message}`);
        return result;
      })
      .finally(() => this.#running.delete(name));
    this.#running.set(name, sent);
    return sent;
  }

  /** Whether the action ``name`` is in flight. */
  running(name) {
    return this.#running.has(name);
  }
}

/** Show in ``element`` what came of an action that was not done, or may not have been. */
export function showFailure(element, result) {
  element.dataset.outcome = result.unknown ? 'unknown' : 'refused';
  element.textContent = result.unknown ? NOT_KNOWN : result.message;
}

/** Clear what ``element`` said of an action. */
export function clearFailure(element) {
  delete element.dataset.outcome;
  element.textContent = '';
}
