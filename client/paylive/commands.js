// Customer commands on their way to the server: queued while the socket is down, sent
// in order when it is up, each settled by its `ack` or `error`. No socket in here: the
// session hands `flush` a function that sends one map, so the rules are testable alone.

import { PayliveError } from './emitter.js';
import { httpCommandBounds, newIdempotencyKey } from './http.js';

// The commands that may start a charge, and the settlements that leave it unknown
// whether the server took one: its answer was lost, or did not come in time, or the
// server's store did not answer (`engine_unavailable`: a save may have been made with
// only its reply lost, protocol 3.1), or, over HTTP, the request sent again with its
// Idempotency-Key found the first still running (`idempotency_key_in_use`).
const PAYMENTS = new Set(['pay', 'retry']);
const UNANSWERED = new Set(['connection_lost', 'timeout', 'engine_unavailable', 'idempotency_key_in_use']);
// Every command the server keeps an Idempotency-Key for carries one (protocol 4.1, v1.2),
// made once per command and kept for it.
const KEYED = new Set(['pay', 'retry', 'cancel', 'interrupt', 'check', 'seen']);
// The commands sent again, with their key, when their answer was lost with the socket:
// a payment, and a cancel (a customer who pressed Cancel would otherwise see nothing
// happen). An interrupt, a check or a receipt lost so is not worth another request.
const RESENT = new Set(['pay', 'retry', 'cancel']);

export class CommandQueue {
  #nextRef = 0;
  #pending = new Map(); // ref -> {type, command, resolve, reject, sent, viaRequest, timer}
  #queue = []; // refs waiting for a connection, in order
  #unknown = false; // a pay or retry was settled without its answer (see `outcomeUnknown`)
  #maxQueue;
  #commandTimeout;
  #resends;
  #onChange;

  /**
   * `onChange(unknown)` runs whenever a command is added or settled, and when
   * `outcomeKnown()` clears `outcomeUnknown`; `unknown` is true when a settlement has
   * just made a payment's outcome unknown.
   */
  constructor(options, onChange = () => {}) {
    const { maxQueue, commandTimeout } = options;
    this.#maxQueue = maxQueue;
    this.#commandTimeout = commandTimeout;
    this.#resends = httpCommandBounds(options).resends;
    this.#onChange = onChange;
  }

  /** Commands sent or queued and not yet answered, oldest first. */
  get pending() {
    return [...this.#pending.entries()].map(([ref, c]) => ({ ref, type: c.type, sent: c.sent }));
  }

  /**
   * True while a `pay` or `retry` is unanswered, or was settled without its answer and
   * the session has not been heard from since (`outcomeUnknown`): leaving the page
   * could strand it.
   */
  get paymentPending() {
    if (this.#unknown) return true;
    for (const command of this.#pending.values()) {
      if (command.type === 'pay' || command.type === 'retry') return true;
    }
    return false;
  }

  /**
   * True from the moment a sent `pay` or `retry` is settled `connection_lost`,
   * `timeout`, `engine_unavailable` or `idempotency_key_in_use` (the server may have
   * started the charge) until `outcomeKnown()`.
   */
  get outcomeUnknown() {
    return this.#unknown;
  }

  /** The session's state, heard after the loss, says what became of the payment. */
  outcomeKnown() {
    if (!this.#unknown) return;
    this.#unknown = false;
    this.#onChange(false);
  }

  /** Queue `command` (a map with `type`) under a new `ref`; settles with its `ack` message. */
  add(command) {
    if (this.#queue.length >= this.#maxQueue) {
      return Promise.reject(new PayliveError('queue_full', 'too many commands are waiting for the connection'));
    }
    const ref = `c${++this.#nextRef}`;
    const promise = new Promise((resolve, reject) => {
      const wire = { ...command, ref };
      if (KEYED.has(command.type) && wire.key === undefined) wire.key = newIdempotencyKey();
      // `carried`: it was sent on a socket that dropped, and is queued to go again.
      this.#pending.set(ref, { type: command.type, command: wire, resolve, reject, sent: false, timer: null, resent: 0, carried: false });
    });
    this.#queue.push(ref);
    this.#onChange(false);
    return promise;
  }

  /**
   * Send queued commands in order for as long as `send(map)` returns true; `viaRequest`:
   * each is answered by its own HTTP request (SSE, long-polling), which bounds itself
   * (`requestTimeout`, then the same request again: `http.js`) and always ends in an
   * answer. It gets no timer here: settled `timeout` while its request is still on its
   * way, a pay could yet land unseen, and its outcome would stay unknown until that
   * request ended, which a connection that swallows it never lets happen.
   */
  flush(send, viaRequest = false) {
    while (this.#queue.length) {
      const ref = this.#queue[0];
      const pending = this.#pending.get(ref);
      if (!send(pending.command)) return;
      this.#queue.shift();
      pending.sent = true;
      pending.viaRequest = viaRequest;
      if (viaRequest) continue;
      pending.timer = setTimeout(
        () => this.settle(ref, new PayliveError('timeout', `no answer to '${pending.type}' in time`)),
        this.#commandTimeout,
      );
    }
  }

  /** Resolve (no `error`) or reject the command `ref`; false when none waits under it. */
  settle(ref, error, value) {
    const pending = this.#pending.get(ref);
    if (!pending) return false;
    this.#pending.delete(ref);
    clearTimeout(pending.timer);
    if (!pending.sent) this.#queue = this.#queue.filter((queued) => queued !== ref);
    const unknown = Boolean((pending.sent || pending.carried) && error && PAYMENTS.has(pending.type) && UNANSWERED.has(error.code));
    if (unknown) this.#unknown = true;
    if (error) pending.reject(error);
    else pending.resolve(value);
    this.#onChange(unknown);
    return true;
  }

  /**
   * The socket dropped. A command already sent on it may or may not have reached the
   * server. A `pay`, `retry` or `cancel` is queued again, first and in order, the same
   * frame with the same `key` and `ref`, to go on the next connection (a socket, or
   * HTTP with the key as its Idempotency-Key), at most `resends` times: the server
   * answers what the first did and decides it once (protocol 4.1, v1.2). Any other,
   * and one sent so often already, is rejected with `connection_lost`, and the
   * session's state after reconnecting shows what really happened (a `pay` or
   * `retry`: `outcomeUnknown` until then). Commands still queued stay queued. One sent
   * over HTTP (before the page moved up to the socket) is not the socket's: its own
   * requests, maybe still being sent again with its key, settle it; settled here, its
   * outcome would be taken as known from a snapshot while a request of it could still
   * start the charge.
   */
  connectionLost() {
    const again = [];
    for (const [ref, pending] of [...this.#pending]) {
      if (!pending.sent || pending.viaRequest) continue;
      if (RESENT.has(pending.type) && pending.resent < this.#resends) {
        clearTimeout(pending.timer);
        pending.timer = null;
        pending.sent = false;
        pending.carried = true;
        pending.resent += 1;
        again.push(ref);
      } else {
        this.settle(ref, lostWithSocket());
      }
    }
    // Sent before anything still queued: they go first, in the order they went.
    this.#queue = [...again, ...this.#queue];
  }

  /**
   * Reject the commands not sent yet with `error`. Those sent stay: the server may have
   * applied them, so a refusal would mislead; each is settled by its answer (an HTTP
   * command's own request), by `connectionLost`, or by its timeout. One queued to be
   * sent again (`connectionLost`) was sent already: it is settled `connection_lost`.
   */
  rejectQueued(error) {
    for (const [ref, pending] of [...this.#pending]) {
      if (!pending.sent) this.settle(ref, pending.carried ? lostWithSocket() : error);
    }
  }

  /** Reject every command, sent or queued, with `error`. */
  rejectAll(error) {
    for (const ref of [...this.#pending.keys()]) this.settle(ref, error);
  }
}

function lostWithSocket() {
  return new PayliveError('connection_lost', 'the connection dropped before the server answered; the session state will tell');
}
