// One payment session, live: the socket, the session state and the command queue wired
// together, and the page's `beforeunload` guard.

import { CommandQueue } from './commands.js';
import { TERMINAL_STATUSES } from './constants.js';
import { Emitter, PayliveError } from './emitter.js';
import { HTTP_COMMAND_DEFAULTS, sendHttpCommand } from './http.js';
import { socketOrigin } from './socket.js';
import { LiveConnection, TRANSPORT_DEFAULTS, newSending } from './transport.js';
import { SessionState } from './state.js';

/** Options of `PayliveSession`, on top of `TRANSPORT_DEFAULTS` (and so `SOCKET_DEFAULTS`). */
export const SESSION_DEFAULTS = Object.freeze({
  ...TRANSPORT_DEFAULTS,
  /** Required: the session id (`ps_...`) and its client secret. */
  sessionId: null,
  secret: null,
  /** Where the server is; the page's own origin by default. */
  baseUrl: null,
  /** A command sent on the socket without `ack` or `error` this long after is rejected (ms). */
  commandTimeout: 15_000,
  /**
   * Over HTTP (on SSE or long-polling): each command's request is aborted after
   * `requestTimeout` (ms), and a command whose answer was lost is sent again with
   * its Idempotency-Key up to `resends` times, `resendDelay` (ms) apart (`http.js`).
   */
  ...HTTP_COMMAND_DEFAULTS,
  /** At most this many commands wait for a connection. */
  maxQueue: 32,
  /** Ask before leaving the page while a payment is in flight (or its answer was lost: `guardActive`). */
  guardUnload: true,
  /** Connect from the constructor. */
  autoConnect: true,
});

/**
 * The customer channel's URL; it carries `since` once a durable event was seen. With a
 * `ticket` (protocol 4.2) the URL holds the ticket instead of the client secret, as the
 * client's own connections do; without one, `?token=` (kept for compatibility).
 */
export function sessionUrl({ baseUrl, sessionId, secret }, since, ticket) {
  const params = new URLSearchParams(ticket ? { ticket } : { token: secret });
  if (since !== null && since !== undefined) params.set('since', String(since));
  return `${socketOrigin(baseUrl)}/ws/sessions/${encodeURIComponent(sessionId)}?${params}`;
}

function paymentMethod(card) {
  if (card && typeof card === 'object') return card;
  return { card: String(card ?? '').replace(/[\s-]+/g, '') };
}

/**
 * One payment session, live.
 *
 * Events (`on(type, handler)`):
 * - `session`: the session map, after every snapshot or state change;
 * - `snapshot`, `state`, `retry_prompt`, `countdown`: the server messages as they come;
 * - `error`: a server `error` no pending command was waiting for, or a fatal close
 *   (`{code, message}`);
 * - `connection`: `{status, transport}`, status one of `connecting`, `connected`,
 *   `reconnecting`, `offline`, `closed`; transport `websocket`, `sse` or `polling`;
 * - `guard`: `true`/`false` when the `beforeunload` guard turns on or off;
 * - `message`: every server message, including types this version does not know.
 */
export class PayliveSession extends Emitter {
  #options;
  #socket;
  #state = new SessionState();
  #commands;
  #guardOn = false;
  #closed = false;
  #acknowledged = null; // the outcome acknowledged (or being acknowledged), and how
  #receipt = null;
  // What close() aborts: a receipt sent over HTTP while no connection was up (the
  // queue's commands are rejected by close() itself). Made anew then, for a later one.
  #closing = newSending();
  #onBeforeUnload = (event) => {
    event.preventDefault();
    // Older browsers show the dialog only when returnValue is set.
    event.returnValue = '';
    return '';
  };

  constructor(options = {}) {
    super();
    this.#options = { ...SESSION_DEFAULTS, ...options };
    const { sessionId, secret } = this.#options;
    if (!sessionId || !secret) {
      throw new TypeError('PayliveSession needs options.sessionId and options.secret');
    }
    this.#commands = new CommandQueue(this.#options, (unknown) => this.#commandsChanged(unknown));
    // While a payment's outcome is unknown, a connection opens without `since`: the
    // server then sends a snapshot, where a resume would say nothing if nothing happened.
    this.#socket = new LiveConnection({
      ...this.#options,
      since: () => (this.#commands.outcomeUnknown ? null : this.lastSeq),
    });
    this.#socket.on('status', (detail) => this.emit('connection', detail));
    this.#socket.on('open', () => this.#opened());
    this.#socket.on('message', (message) => this.#receive(message));
    // A command sent on a socket is lost with it; one sent over HTTP (SSE, polling) is
    // answered by its own request whatever happens to the stream.
    this.#socket.on('close', ({ transport }) => {
      if (transport === undefined || transport === 'websocket') this.#commands.connectionLost();
    });
    this.#socket.on('fatal', ({ code, error }) =>
      this.#fail(new PayliveError(error, `connection refused (close code ${code})`, { closeCode: code })),
    );
    if (this.#options.autoConnect) this.connect();
  }

  get sessionId() {
    return this.#options.sessionId;
  }

  /** The last session map seen (null before the first snapshot). */
  get session() {
    return this.#state.session;
  }

  /** `seq` of the last durable event applied; `since` on reconnect. */
  get lastSeq() {
    return this.#state.lastSeq;
  }

  /** The current retry prompt (from `retry_prompt`, or derived from the session). */
  get retryPrompt() {
    return this.#state.retryPrompt;
  }

  /** Data of the last `countdown` of the current attempt. */
  get countdown() {
    return this.#state.countdown;
  }

  /** Estimated server clock minus local clock (ms). */
  get clockOffset() {
    return this.#state.clockOffset;
  }

  /** Connection status: `idle`, `connecting`, `connected`, `reconnecting`, `offline`, `closed`. */
  get connection() {
    return this.#socket.status;
  }

  /** The transport carrying the session now: `websocket`, `sse` or `polling` (protocol 4.2). */
  get transport() {
    return this.#socket.transport;
  }

  get status() {
    return this.session?.status ?? null;
  }

  /**
   * True while leaving the page could strand a payment: processing, a pay/retry not yet
   * answered, or one settled `connection_lost`, `timeout`, `engine_unavailable` or
   * `idempotency_key_in_use` until a snapshot, an attempt under way or an end is heard
   * (protocol 4.2).
   */
  get guardActive() {
    // Closed: the page said it is done with the session, whatever its state.
    return !this.#closed && (this.status === 'processing' || this.#commands.paymentPending);
  }

  /**
   * True from the moment a sent `pay` or `retry` is settled without its answer
   * (`connection_lost`, `timeout`, `engine_unavailable`, and over HTTP
   * `idempotency_key_in_use`: it may have started a charge) until the session's state,
   * heard after it, tells what became of it (a snapshot, an attempt under way or an
   * end; protocol 4.2). Over HTTP that is after the same request, sent again with its
   * Idempotency-Key, got no answer either. It turns true as the command's promise rejects, and false
   * just before the `session` event of the state that tells. A page keeps its Pay and
   * Retry off meanwhile and says it is checking the payment.
   */
  get outcomeUnknown() {
    return this.#commands.outcomeUnknown;
  }

  /** Commands sent or queued and not yet answered. */
  get pendingCommands() {
    return this.#commands.pending;
  }

  /** A socket URL with the client secret, for other clients (this one opens with tickets). */
  url() {
    return sessionUrl(this.#options, this.lastSeq);
  }

  connect() {
    this.#closed = false;
    this.#socket.connect();
  }

  /** Close for good: pending commands, sent ones included, are rejected with `closed`; the guard is removed. */
  close() {
    this.#closed = true;
    // Before the socket's close event, which would take a command sent on it for one
    // lost with the connection (`connection_lost`): the page closed it, `closed`.
    this.#commands.rejectAll(new PayliveError('closed', 'the session client was closed'));
    this.#closing.abort();
    this.#closing = newSending();
    this.#socket.close();
    this.#updateGuard();
  }

  /** Drop the connection and reconnect at once (with `since`; without, for a snapshot, while `outcomeUnknown`). */
  reconnect() {
    this.#socket.reconnectNow();
  }

  /** Drop the connection as a network failure would; it comes back by itself. */
  drop() {
    this.#socket.drop('dropped by the page');
  }

  /** Start the first attempt. `card` is a card number or a payment method map. */
  pay(card) {
    return this.#command({ type: 'pay', payment_method: paymentMethod(card) });
  }

  /** Start the next attempt; without `card` the server reuses the last method. */
  retry(card) {
    const command = { type: 'retry' };
    if (card !== undefined && card !== null && card !== '') {
      command.payment_method = paymentMethod(card);
    }
    return this.#command(command);
  }

  cancel() {
    return this.#command({ type: 'cancel' });
  }

  /**
   * Ask the server to look the attempt in flight up at the provider now (`check`),
   * for instance once the page has finished a 3-D Secure step, rather than wait
   * for the provider's webhook.
   */
  check() {
    return this.#command({ type: 'check' });
  }

  /**
   * Say that the page drew the session's final outcome (the outcome receipt, protocol
   * section 10): over the live connection when it is up (a socket message; on SSE or
   * long-polling, the same command over HTTP), else `POST /api/sessions/{id}/seen`,
   * sent as every HTTP command is (`sendHttpCommand`: an Idempotency-Key, each request
   * bounded by `requestTimeout`, sent again when its answer is lost; `close()` stops it
   * and it rejects `closed`). Once per outcome (a failed try may be made again);
   * resolves with the session, or null while the session has not ended.
   */
  acknowledgeOutcome() {
    const session = this.session;
    const status = session?.status;
    if (!TERMINAL_STATUSES.has(status)) return Promise.resolve(null);
    if (this.#acknowledged === status) return this.#receipt;
    this.#acknowledged = status;
    if (session.outcome_seen_at) {
      this.#receipt = Promise.resolve(session);
    } else if (this.#socket.connected) {
      this.#receipt = this.#command({ type: 'seen', status }).then(() => this.session);
    } else {
      this.#receipt = this.#postSeen(status);
    }
    this.#receipt.catch(() => {
      if (this.#acknowledged === status) this.#acknowledged = null;
    });
    return this.#receipt;
  }

  async #postSeen(status) {
    const result = await sendHttpCommand(this.#options.fetch, this.#options, { type: 'seen', status }, this.#closing.signal, true);
    if (result.type !== 'ack') throw new PayliveError(result.code, result.message);
    // 200 with the session (protocol 10); a body that is not one (a proxy's): the last seen.
    return result.body && typeof result.body === 'object' ? result.body : this.session;
  }

  /** Tell the server the attempt was lost on this side (`interrupt` command). */
  interrupt(reason = 'network_error') {
    return this.#command({ type: 'interrupt', reason });
  }

  /** The server's clock, as estimated from message timestamps. */
  serverNow() {
    return this.#state.serverNow(Date.now());
  }

  /** Time left in the current attempt (ms), computed locally between `countdown` messages. */
  remainingMs() {
    return this.#state.remainingMs(Date.now());
  }

  /** Time until a retry is allowed (ms); 0 when allowed now; null when no retry is pending. */
  retryInMs() {
    return this.#state.retryInMs(Date.now());
  }

  #command(command) {
    if (this.#socket.status === 'closed') {
      return Promise.reject(new PayliveError('closed', 'the connection is closed; reload the page'));
    }
    const promise = this.#commands.add(command);
    this.#flush();
    return promise;
  }

  #flush() {
    if (this.#socket.connected) {
      this.#commands.flush((message) => this.#socket.send(message), this.#socket.transport !== 'websocket');
    }
  }

  #fail(error) {
    // A command a socket carried was settled `connection_lost` by the close before this;
    // one sent over HTTP still has its own request, whose answer says what happened.
    this.#commands.rejectQueued(error);
    this.emit('error', { code: error.code, message: error.message, closeCode: error.closeCode });
  }

  #receive(message) {
    const before = this.lastSeq;
    const outcome = this.#state.receive(message, Date.now());
    this.emit('message', message);
    if (outcome === 'gap') {
      console.warn(`paylive: missed events ${before + 1}..${message.seq - 1}; resuming`);
      this.#socket.reconnectNow();
      return;
    }
    if (outcome === 'skipped') return;
    const data = message.data ?? {};
    switch (message.type) {
      case 'snapshot':
      case 'state': {
        // What became of a pay or retry whose answer was lost: a snapshot (asked for
        // since) tells, and so does an attempt under way or an end. A `state` still in
        // `created` or `interrupted` may be older than the command: the snapshot tells.
        const told = message.type === 'snapshot'
          ? Boolean(data.session)
          : this.status === 'processing' || TERMINAL_STATUSES.has(this.status);
        if (told) this.#commands.outcomeKnown();
        this.#updateGuard();
        this.emit(message.type, message);
        this.emit('session', this.session);
        break;
      }
      case 'retry_prompt':
      case 'countdown':
        this.emit(message.type, message);
        break;
      case 'ack':
        this.#commands.settle(data.ref, null, message);
        break;
      case 'error': {
        const error = new PayliveError(data.code ?? 'error', data.message ?? 'refused', { ref: data.ref });
        if (data.ref == null || !this.#commands.settle(data.ref, error)) {
          this.emit('error', { code: error.code, message: error.message });
        }
        break;
      }
      default:
        // `pong` and types added after this version: nothing to do.
        break;
    }
  }

  #commandsChanged(unknown) {
    this.#updateGuard();
    // A pay or retry whose answer was lost: only the session's state can say what became
    // of it. A connection still up (an HTTP command's request failed, or a command timed
    // out) would say nothing if nothing happened: it is made again, without `since`. Once
    // the current event is over: a socket's close settles its commands while the
    // connection still reads connected, and that one reconnects by itself.
    if (unknown) queueMicrotask(() => this.#askState());
  }

  /**
   * A connection opened. One made with `since` read before a pay or retry lost its
   * answer (it was opening as the loss was settled: no `reconnectNow` then) replays
   * nothing if nothing happened, and no snapshot would ever tell: it is made again,
   * now without `since` (so at most once per loss). Queued commands wait for that one.
   */
  #opened() {
    if (this.#commands.outcomeUnknown && !this.#closed && this.#socket.resumed) {
      this.#socket.reconnectNow();
      return;
    }
    this.#flush();
  }

  #askState() {
    if (this.#commands.outcomeUnknown && !this.#closed && this.#socket.connected) this.#socket.reconnectNow();
  }

  #updateGuard() {
    const active = this.#options.guardUnload && this.guardActive;
    if (active === this.#guardOn) return;
    this.#guardOn = active;
    const win = this.#options.window;
    if (win?.addEventListener) {
      // Added only while needed: a permanent beforeunload listener costs the page its bfcache.
      if (active) win.addEventListener('beforeunload', this.#onBeforeUnload);
      else win.removeEventListener('beforeunload', this.#onBeforeUnload);
    }
    this.emit('guard', active);
  }
}
