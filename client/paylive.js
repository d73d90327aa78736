/**
 * paylive.js: the browser side of a paylive payment session (docs/protocol.md section 4).
 *
 * One dependency-free ES module. It opens the customer channel
 * `/ws/sessions/{id}?token=<client secret>&since=<seq>`, keeps the last `seq` of the
 * durable events it has applied (`state`, `retry_prompt`) and resumes from it after
 * every reconnect, so nothing that happened while it was away is missed.
 *
 *     import { PayliveSession } from '/client/paylive.js';
 *     const pay = new PayliveSession({ sessionId, secret });
 *     pay.on('session', (session) => render(session));
 *     pay.on('connection', ({ status }) => showConnection(status));
 *     await pay.pay('4242424242424242');
 *
 * Connection handling lives in `ReconnectingSocket` (also used by the admin dashboard):
 * exponential backoff with full jitter drawn afresh for each attempt, an app-level
 * ping, a watchdog that gives up on a silent server, and the browser's
 * `offline`/`online` events. Commands sent while disconnected wait in a bounded queue.
 */

export const JSON_PROTOCOL = 'paylive.v1.json';

/** Message types that carry a new `seq` and are replayed by `since`. */
export const DURABLE_TYPES = new Set(['state', 'retry_prompt']);

export const TERMINAL_STATUSES = new Set(['succeeded', 'failed', 'cancelled', 'expired']);
export const ACTIVE_STATUSES = new Set(['created', 'processing', 'interrupted']);

/** Interruption reasons after which the provider may have charged: it is voided first. */
export const OUTCOME_UNKNOWN_REASONS = new Set(['timeout', 'network_error']);

/** Close codes after which reconnecting cannot help (docs/protocol.md section 4). */
export const FATAL_CLOSE_CODES = new Map([
  [4401, 'unauthorized'],
  [4403, 'origin_not_allowed'],
  [4404, 'unknown_session'],
  [1008, 'policy_violation'],
]);

/** The card numbers of the sandbox gateway (docs/protocol.md section 3). */
export const SANDBOX_CARDS = [
  { number: '4242424242424242', label: 'Succeeds' },
  { number: '4000000000000002', label: 'Declined: card_declined (retryable)' },
  { number: '4000000000009995', label: 'Declined: insufficient_funds (retryable)' },
  { number: '4000000000009979', label: 'Declined: stolen_card (fails the session)' },
  { number: '4000000000000119', label: 'Provider error (retryable)' },
  { number: '4000000000000408', label: 'Never answers: the attempt times out' },
  { number: '4000000000000507', label: 'Gateway unreachable: network error' },
  { number: '4000000000000523', label: 'Charged, answer lost: network error, then succeeds' },
  { number: '4000000000000770', label: 'Charged, webhook arrives late: late success' },
];

// Client close code for connections we abandon ourselves (silent server, offline, test).
const ABANDONED = 4000;

/** Options shared by every socket; `PayliveSession` adds its own below. */
export const SOCKET_DEFAULTS = Object.freeze({
  /** Send `{"type":"ping"}` this often (ms); 0 turns app-level pings off. */
  pingInterval: 10_000,
  /** The server's countdown period (ms); it sets how long a silence is tolerated. */
  countdownInterval: 1_000,
  /** A server silent for longer than this (ms) is gone; null: 2 * countdown + ping. */
  silenceTimeout: null,
  /** Reconnect delay: uniform in [0, min(backoffMax, backoffBase * 2^n)] for attempt n. */
  backoffBase: 500,
  backoffMax: 15_000,
  /** A connection that lasted this long (ms) resets the backoff to its first step. */
  stableAfter: 5_000,
  /** Listen to the window's `offline` and `online` events. */
  watchNetwork: true,
  /** Injectable for tests and non-browser hosts. */
  WebSocket: globalThis.WebSocket,
  window: typeof window === 'undefined' ? null : window,
});

/**
 * Full-jitter backoff (as in centrifuge-js `utils.ts`): a fresh uniform draw for
 * every attempt, so a crowd of clients dropped together does not come back together.
 */
export function backoffDelay(attempt, base, max) {
  const cap = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return Math.floor(Math.random() * cap);
}

/** ws(s)://host of the current page, or of `base` when given (http(s) URLs are mapped). */
export function socketOrigin(base) {
  const url = new URL(base ?? globalThis.location?.href ?? 'http://127.0.0.1/');
  const scheme = url.protocol === 'https:' || url.protocol === 'wss:' ? 'wss:' : 'ws:';
  return `${scheme}//${url.host}`;
}

/** An error the server sent (`{code, message}`) or one the client made up (`connection_lost`). */
export class PayliveError extends Error {
  constructor(code, message, details = {}) {
    super(message || code);
    this.name = 'PayliveError';
    this.code = code;
    Object.assign(this, details);
  }
}

/** A minimal event emitter: `on` returns a function that unsubscribes. */
export class Emitter {
  #handlers = new Map();

  on(type, handler) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(handler);
    return () => this.off(type, handler);
  }

  off(type, handler) {
    this.#handlers.get(type)?.delete(handler);
  }

  emit(type, detail) {
    for (const handler of [...(this.#handlers.get(type) ?? [])]) {
      try {
        handler(detail);
      } catch (err) {
        // One broken listener must not stop the others or the socket.
        console.error(`paylive: a '${type}' listener threw`, err);
      }
    }
  }
}

/**
 * A WebSocket that comes back by itself.
 *
 * `status` is one of `idle`, `connecting`, `connected`, `reconnecting`, `offline`,
 * `closed`. Events: `status` ({status, attempt?, delay?, code?, reason?}), `open`,
 * `message` (the decoded map), `close` ({code, reason, reconnect}), `fatal`
 * ({code, reason, error}).
 */
export class ReconnectingSocket extends Emitter {
  #makeUrl;
  #options;
  #ws = null;
  #status = 'idle';
  #attempt = 0;
  #openedAt = 0;
  #retryTimer = null;
  #pingTimer = null;
  #silenceTimer = null;
  #stopped = false;

  /** `makeUrl()` is called before every attempt, so the URL may change (say, `since`). */
  constructor(makeUrl, options = {}) {
    super();
    this.#makeUrl = makeUrl;
    this.#options = { ...SOCKET_DEFAULTS, ...options };
    const win = this.#options.window;
    if (this.#options.watchNetwork && win?.addEventListener) {
      win.addEventListener('offline', () => this.#wentOffline());
      win.addEventListener('online', () => this.#cameOnline());
    }
  }

  get status() {
    return this.#status;
  }

  get connected() {
    return this.#status === 'connected';
  }

  /** How long a silent server is tolerated before the socket is dropped (ms). */
  get silenceTimeout() {
    const o = this.#options;
    return o.silenceTimeout ?? 2 * o.countdownInterval + (o.pingInterval || 0);
  }

  /** Open the socket (again). Does nothing when already open or connecting. */
  connect() {
    this.#stopped = false;
    if (this.#ws) return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    if (this.#isOffline()) {
      this.#setStatus('offline');
      // Wait for `online`, but try now and then in case navigator.onLine is wrong.
      this.#schedule(this.#options.backoffMax);
      return;
    }
    const first = this.#status === 'idle' || this.#status === 'closed';
    this.#setStatus(first ? 'connecting' : 'reconnecting', { attempt: this.#attempt });
    let ws;
    try {
      // JSON only: msgpack (`paylive.v1.msgpack`) is for clients that bring a codec.
      ws = new this.#options.WebSocket(this.#makeUrl(), [JSON_PROTOCOL]);
    } catch (err) {
      // A malformed URL or a blocked port: nothing to retry.
      this.#stop('closed', { code: 0, reason: String(err), error: 'bad_url' });
      return;
    }
    this.#ws = ws;
    ws.onopen = () => this.#onOpen(ws);
    ws.onmessage = (event) => this.#onMessage(ws, event);
    ws.onclose = (event) => this.#onClose(ws, event.code, event.reason);
    // An error is always followed by a close event; nothing to do here.
    ws.onerror = () => {};
  }

  /** Close for good; no reconnect until `connect()` is called again. */
  close(code = 1000, reason = 'client closed') {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    const ws = this.#detach();
    try {
      ws?.close(code, reason);
    } catch {
      // Already closing.
    }
    this.#setStatus('closed', { code, reason });
    if (ws) this.emit('close', { code, reason, reconnect: false });
  }

  /** Drop the current connection (if any) and connect again at once, backoff reset. */
  reconnectNow() {
    this.#attempt = 0;
    if (this.#ws) this.#abandon('reconnect requested', 0);
    else this.connect();
  }

  /** Drop the connection as if the network had failed; it reconnects with backoff. */
  drop(reason = 'dropped') {
    if (this.#ws) this.#abandon(reason);
  }

  /** Send a map now; false when not connected (the caller queues it). */
  send(message) {
    if (!this.#ws || this.#status !== 'connected') return false;
    this.#ws.send(JSON.stringify(message));
    return true;
  }

  #onOpen(ws) {
    if (ws !== this.#ws) return;
    this.#openedAt = Date.now();
    this.#setStatus('connected');
    const every = this.#options.pingInterval;
    if (every > 0) this.#pingTimer = setInterval(() => this.send({ type: 'ping' }), every);
    this.#heard();
    this.emit('open');
  }

  #onMessage(ws, event) {
    if (ws !== this.#ws) return;
    this.#heard();
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      console.warn('paylive: ignoring a frame that is not JSON');
      return;
    }
    if (message && typeof message === 'object') this.emit('message', message);
  }

  #onClose(ws, code, reason) {
    if (ws !== this.#ws) return;
    this.#detach();
    this.#afterClose(code, reason);
  }

  /** Forget a socket without waiting for its close handshake (a dead peer never answers). */
  #abandon(reason, delay = null) {
    const ws = this.#detach();
    try {
      ws?.close(ABANDONED, reason);
    } catch {
      // Already closing.
    }
    this.#afterClose(ABANDONED, reason, delay);
  }

  #detach() {
    const ws = this.#ws;
    this.#ws = null;
    clearInterval(this.#pingTimer);
    clearTimeout(this.#silenceTimer);
    this.#pingTimer = this.#silenceTimer = null;
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    return ws;
  }

  #afterClose(code, reason, delay = null) {
    if (this.#openedAt && Date.now() - this.#openedAt >= this.#options.stableAfter) {
      this.#attempt = 0;
    }
    this.#openedAt = 0;
    if (this.#stopped) return;
    const fatal = FATAL_CLOSE_CODES.get(code);
    if (fatal) {
      this.emit('close', { code, reason, reconnect: false });
      this.#stop('closed', { code, reason, error: fatal });
      return;
    }
    this.emit('close', { code, reason, reconnect: true });
    if (this.#isOffline()) {
      this.#setStatus('offline', { code, reason });
      // navigator.onLine can be wrong; try now and then even without an `online` event.
      this.#schedule(this.#options.backoffMax);
      return;
    }
    const o = this.#options;
    const wait = delay ?? backoffDelay(this.#attempt, o.backoffBase, o.backoffMax);
    this.#attempt += 1;
    this.#setStatus('reconnecting', { attempt: this.#attempt, delay: wait, code, reason });
    this.#schedule(wait);
  }

  #schedule(delay) {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      this.connect();
    }, delay);
  }

  #stop(status, detail) {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#setStatus(status, detail);
    this.emit('fatal', detail);
  }

  #heard() {
    clearTimeout(this.#silenceTimer);
    this.#silenceTimer = setTimeout(() => this.#abandon('server silent'), this.silenceTimeout);
  }

  #wentOffline() {
    if (this.#stopped) return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    // The socket is most likely dead already, and a browser may take minutes to
    // notice; drop it now and resume with `since` when the network is back.
    const ws = this.#detach();
    this.#openedAt = 0;
    if (ws) {
      try {
        ws.close(ABANDONED, 'offline');
      } catch {
        // Already closing.
      }
      this.emit('close', { code: ABANDONED, reason: 'offline', reconnect: true });
    }
    this.#setStatus('offline');
    this.#schedule(this.#options.backoffMax);
  }

  #cameOnline() {
    if (this.#stopped || this.#ws) return;
    this.#attempt = 0;
    this.connect();
  }

  #isOffline() {
    return this.#options.watchNetwork && this.#options.window?.navigator?.onLine === false;
  }

  #setStatus(status, detail = {}) {
    this.#status = status;
    this.emit('status', { status, ...detail });
  }
}

/** Options of `PayliveSession`, on top of `SOCKET_DEFAULTS`. */
export const SESSION_DEFAULTS = Object.freeze({
  ...SOCKET_DEFAULTS,
  /** Required: the session id (`ps_...`) and its client secret. */
  sessionId: null,
  secret: null,
  /** Where the server is; the page's own origin by default. */
  baseUrl: null,
  /** A command without `ack` or `error` this long after it was sent is rejected (ms). */
  commandTimeout: 15_000,
  /** At most this many commands wait for a connection. */
  maxQueue: 32,
  /** Ask before leaving the page while a payment is in flight. */
  guardUnload: true,
  /** Connect from the constructor. */
  autoConnect: true,
});

/**
 * One payment session, live.
 *
 * Events (`on(type, handler)`):
 * - `session`: the session map, after every snapshot or state change;
 * - `snapshot`, `state`, `retry_prompt`, `countdown`: the server messages as they come;
 * - `error`: a server `error` no pending command was waiting for, or a fatal close
 *   (`{code, message}`);
 * - `connection`: `{status}`, one of `connecting`, `connected`, `reconnecting`,
 *   `offline`, `closed`;
 * - `guard`: `true`/`false` when the `beforeunload` guard turns on or off;
 * - `message`: every server message, including types this version does not know.
 */
export class PayliveSession extends Emitter {
  /** The last session map seen (null before the first snapshot). */
  session = null;
  /** `seq` of the last durable event applied; `since` on reconnect. */
  lastSeq = null;
  /** The current retry prompt (from `retry_prompt`, or derived from the session). */
  retryPrompt = null;
  /** Data of the last `countdown` of the current attempt. */
  countdown = null;
  /** Estimated server clock minus local clock (ms). */
  clockOffset = 0;

  #options;
  #socket;
  #nextRef = 0;
  #pending = new Map(); // ref -> {type, resolve, reject, sent, timer}
  #queue = []; // refs waiting for a connection, in order
  #guardOn = false;
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
    this.#socket = new ReconnectingSocket(() => this.url(), this.#options);
    this.#socket.on('status', (detail) => this.emit('connection', detail));
    this.#socket.on('open', () => this.#flush());
    this.#socket.on('message', (message) => this.#receive(message));
    this.#socket.on('close', () => this.#connectionLost());
    this.#socket.on('fatal', ({ code, error }) =>
      this.#fail(new PayliveError(error, `connection refused (close code ${code})`, { closeCode: code })),
    );
    if (this.#options.autoConnect) this.connect();
  }

  get sessionId() {
    return this.#options.sessionId;
  }

  /** Connection status: `idle`, `connecting`, `connected`, `reconnecting`, `offline`, `closed`. */
  get connection() {
    return this.#socket.status;
  }

  get status() {
    return this.session?.status ?? null;
  }

  /** True while leaving the page could strand a payment: processing, or a pay/retry not yet acknowledged. */
  get guardActive() {
    if (this.status === 'processing') return true;
    for (const command of this.#pending.values()) {
      if (command.type === 'pay' || command.type === 'retry') return true;
    }
    return false;
  }

  /** Commands sent or queued and not yet answered. */
  get pendingCommands() {
    return [...this.#pending.entries()].map(([ref, c]) => ({ ref, type: c.type, sent: c.sent }));
  }

  /** The socket URL for the next attempt: it carries `since` once a durable event was seen. */
  url() {
    const { baseUrl, sessionId, secret } = this.#options;
    const params = new URLSearchParams({ token: secret });
    if (this.lastSeq !== null) params.set('since', String(this.lastSeq));
    return `${socketOrigin(baseUrl)}/ws/sessions/${encodeURIComponent(sessionId)}?${params}`;
  }

  connect() {
    this.#socket.connect();
  }

  /** Close for good: pending commands are rejected, the guard is removed. */
  close() {
    this.#socket.close();
    for (const ref of [...this.#pending.keys()]) {
      this.#settle(ref, new PayliveError('closed', 'the session client was closed'));
    }
    this.#updateGuard();
  }

  /** Drop the connection and reconnect at once (with `since`). */
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

  /** Tell the server the attempt was lost on this side (`interrupt` command). */
  interrupt(reason = 'network_error') {
    return this.#command({ type: 'interrupt', reason });
  }

  /** The server's clock, as estimated from message timestamps. */
  serverNow() {
    return Date.now() + this.clockOffset;
  }

  /** Time left in the current attempt (ms), computed locally between `countdown` messages. */
  remainingMs() {
    const deadline = this.session?.status === 'processing' ? this.session.deadline : null;
    if (deadline == null) return null;
    return Math.max(0, deadline - this.serverNow());
  }

  /** Time until a retry is allowed (ms); 0 when allowed now; null when no retry is pending. */
  retryInMs() {
    const at = this.retryPrompt?.retry_at ?? null;
    if (at == null || this.session?.status !== 'interrupted') return null;
    return Math.max(0, at - this.serverNow());
  }

  #command(command) {
    const ref = `c${++this.#nextRef}`;
    const promise = new Promise((resolve, reject) => {
      if (this.#socket.status === 'closed') {
        reject(new PayliveError('closed', 'the connection is closed; reload the page'));
        return;
      }
      if (this.#queue.length >= this.#options.maxQueue) {
        reject(new PayliveError('queue_full', 'too many commands are waiting for the connection'));
        return;
      }
      const wire = { ...command, ref };
      this.#pending.set(ref, { type: command.type, resolve, reject, sent: false, timer: null, command: wire });
      this.#queue.push(ref);
    });
    this.#updateGuard();
    this.#flush();
    return promise;
  }

  #flush() {
    while (this.#queue.length && this.#socket.connected) {
      const ref = this.#queue[0];
      const pending = this.#pending.get(ref);
      if (!pending) {
        this.#queue.shift();
        continue;
      }
      if (!this.#socket.send(pending.command)) return;
      this.#queue.shift();
      pending.sent = true;
      pending.timer = setTimeout(
        () => this.#settle(ref, new PayliveError('timeout', `no answer to '${pending.type}' in time`)),
        this.#options.commandTimeout,
      );
    }
  }

  /**
   * The connection dropped. A command already sent may or may not have reached the
   * server: it is not sent again (a second `pay` would only be refused), it is
   * rejected with `connection_lost`, and the replay after reconnecting shows what
   * really happened. Commands still queued stay queued.
   */
  #connectionLost() {
    for (const [ref, pending] of [...this.#pending]) {
      if (pending.sent) {
        this.#settle(ref, new PayliveError('connection_lost', 'the connection dropped before the server answered; the session state will tell'));
      }
    }
  }

  #fail(error) {
    for (const ref of [...this.#pending.keys()]) this.#settle(ref, error);
    this.emit('error', { code: error.code, message: error.message, closeCode: error.closeCode });
  }

  #settle(ref, error, value) {
    const pending = this.#pending.get(ref);
    if (!pending) return false;
    this.#pending.delete(ref);
    clearTimeout(pending.timer);
    if (error) pending.reject(error);
    else pending.resolve(value);
    this.#updateGuard();
    return true;
  }

  #receive(message) {
    // Replayed durable events keep the time they happened; only the others say what
    // the server's clock reads now.
    if (!DURABLE_TYPES.has(message.type) && typeof message.ts === 'number' && message.ts > 0) {
      this.clockOffset = message.ts - Date.now();
    }
    this.emit('message', message);
    const data = message.data ?? {};
    switch (message.type) {
      case 'snapshot':
        if (data.session) {
          this.lastSeq = data.session.seq ?? message.seq ?? this.lastSeq;
          this.#applySession(data.session);
          this.retryPrompt = derivePrompt(data.session);
        }
        this.emit('snapshot', message);
        this.emit('session', this.session);
        break;
      case 'state':
        if (!this.#inOrder(message)) return;
        if (data.session) {
          this.#applySession(data.session);
          this.retryPrompt = derivePrompt(data.session);
        }
        this.emit('state', message);
        this.emit('session', this.session);
        break;
      case 'retry_prompt':
        if (!this.#inOrder(message)) return;
        this.retryPrompt = { ...data };
        this.emit('retry_prompt', message);
        break;
      case 'countdown':
        if (typeof data.deadline === 'number' && typeof data.remaining_ms === 'number') {
          this.clockOffset = data.deadline - data.remaining_ms - Date.now();
        }
        this.countdown = { ...data };
        this.emit('countdown', message);
        break;
      case 'ack':
        this.#settle(data.ref, null, message);
        break;
      case 'error': {
        const error = new PayliveError(data.code ?? 'error', data.message ?? 'refused', { ref: data.ref });
        if (data.ref == null || !this.#settle(data.ref, error)) {
          this.emit('error', { code: error.code, message: error.message });
        }
        break;
      }
      default:
        // `pong` and types added after this version: nothing to do.
        break;
    }
  }

  /**
   * Durable events must come in `seq` order with no gap. An old one (a replay
   * overlapping what was seen) is skipped; after a gap the socket reconnects with
   * `since`, and the server replays what is missing, this event included.
   */
  #inOrder(message) {
    const seq = message.seq;
    if (typeof seq !== 'number' || this.lastSeq === null) {
      if (typeof seq === 'number') this.lastSeq = seq;
      return true;
    }
    if (seq <= this.lastSeq) return false;
    if (seq > this.lastSeq + 1) {
      console.warn(`paylive: missed events ${this.lastSeq + 1}..${seq - 1}; resuming`);
      this.#socket.reconnectNow();
      return false;
    }
    this.lastSeq = seq;
    return true;
  }

  #applySession(session) {
    this.session = session;
    if (session.status !== 'processing') this.countdown = null;
    this.#updateGuard();
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

/** The retry prompt a session implies, for when no `retry_prompt` message was seen (after a snapshot). */
export function derivePrompt(session) {
  if (!session || session.status !== 'interrupted') return null;
  const reason = session.last_error?.reason ?? null;
  return {
    attempt: session.attempt,
    next_attempt: session.attempt + 1,
    max_attempts: session.max_attempts,
    reason,
    retry_at: session.retry_at,
    outcome_unknown: OUTCOME_UNKNOWN_REASONS.has(reason),
  };
}

function paymentMethod(card) {
  if (card && typeof card === 'object') return card;
  return { card: String(card ?? '').replace(/[\s-]+/g, '') };
}

/** "€19.99" from (1999, "EUR"), using the currency's own number of minor digits. */
export function formatAmount(amount, currency, locale = undefined) {
  try {
    const format = new Intl.NumberFormat(locale, { style: 'currency', currency });
    const digits = format.resolvedOptions().maximumFractionDigits;
    return format.format(amount / 10 ** digits);
  } catch {
    return `${amount} ${currency}`;
  }
}

/** "12 s" or "1.4 s": whole seconds when long, tenths when short. */
export function formatSeconds(ms) {
  if (ms == null) return '';
  const s = Math.max(0, ms) / 1000;
  // A no-break space keeps the number and its unit on one line.
  return s >= 10 ? `${Math.ceil(s)}\u00a0s` : `${s.toFixed(1)}\u00a0s`;
}
