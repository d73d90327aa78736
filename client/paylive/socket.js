// A WebSocket that comes back by itself; the checkout session and the admin dashboard share it.

import { Backoff, restartDelay } from './backoff.js';
import { FATAL_CLOSE_CODES, JSON_PROTOCOL } from './constants.js';
import { Emitter } from './emitter.js';

// Client close code for connections we abandon ourselves (silent server, offline, test).
const ABANDONED = 4000;

/** Options shared by every socket; `PayliveSession` adds its own. */
export const SOCKET_DEFAULTS = Object.freeze({
  /** Send `{"type":"ping"}` this often (ms); 0 turns app-level pings off. */
  pingInterval: 10_000,
  /** The server's countdown period (ms); it sets how long a silence is tolerated. */
  countdownInterval: 1_000,
  /**
   * A server silent for longer than this (ms) is gone, and an attempt not open after it
   * is given up; null: 2 * countdown + ping.
   */
  silenceTimeout: null,
  /** Reconnect delay: uniform in [0, min(backoffMax, backoffBase * 2^n)] for attempt n. */
  backoffBase: 500,
  backoffMax: 15_000,
  /** A connection that lasted this long (ms) resets the backoff to its first step. */
  stableAfter: 5_000,
  /** Listen to the window's `offline` and `online` events (from `connect()` until closed). */
  watchNetwork: true,
  /** Injectable for tests and non-browser hosts. */
  WebSocket: globalThis.WebSocket,
  window: typeof window === 'undefined' ? null : window,
});

/** The silence bound (ms) of `options`: its `silenceTimeout`, else two countdown periods and a ping. */
export function silenceBound(options) {
  return options.silenceTimeout ?? 2 * options.countdownInterval + (options.pingInterval || 0);
}

/** ws(s)://host of the current page, or of `base` when given (http(s) URLs are mapped). */
export function socketOrigin(base) {
  const url = new URL(base ?? globalThis.location?.href ?? 'http://127.0.0.1/');
  const scheme = url.protocol === 'https:' || url.protocol === 'wss:' ? 'wss:' : 'ws:';
  return `${scheme}//${url.host}`;
}

/**
 * A WebSocket that comes back by itself.
 *
 * `status` is one of `idle`, `connecting`, `connected`, `reconnecting`, `offline`,
 * `closed`. Events: `status` ({status, attempt?, delay?, code?, reason?}), `open`,
 * `message` (the decoded map), `close` ({code, reason, reconnect, silent?, pinged?}:
 * `silent` when an open socket was given up for its silence, `pinged` when a ping had
 * gone out on it), `fatal` ({code, reason, error}).
 */
export class ReconnectingSocket extends Emitter {
  #makeUrl;
  #options;
  #backoff;
  #ws = null;
  #status = 'idle';
  #retryTimer = null;
  #pingTimer = null;
  #silenceTimer = null;
  #pinged = false; // a ping went out on the connection open now
  #stopped = false;
  #watching = false; // listening to the window's `offline` and `online` events
  #onOffline = () => this.#wentOffline();
  #onOnline = () => this.#cameOnline();

  /**
   * `makeUrl()` is called before every attempt, so the URL may change (say, `since`); it
   * may return a promise (a URL with a fresh ticket). A rejection with `fatal: true`
   * ends the socket (`fatal` event); any other is retried with backoff.
   */
  constructor(makeUrl, options = {}) {
    super();
    this.#makeUrl = makeUrl;
    this.#options = { ...SOCKET_DEFAULTS, ...options };
    this.#backoff = new Backoff(this.#options);
  }

  get status() {
    return this.#status;
  }

  get connected() {
    return this.#status === 'connected';
  }

  /** How long a silent server (or an attempt not yet open) is tolerated before the socket is dropped (ms). */
  get silenceTimeout() {
    return silenceBound(this.#options);
  }

  /** Open the socket (again). Does nothing when already open or connecting. */
  connect() {
    this.#stopped = false;
    this.#watchNetwork(true);
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
    this.#setStatus(first ? 'connecting' : 'reconnecting', { attempt: this.#backoff.attempt });
    // An attempt that has not opened within the silence bound is given up and tried
    // again: on a bad network a ticket request or a handshake may hang, not fail.
    this.#heard();
    let url;
    try {
      url = this.#makeUrl();
    } catch (err) {
      this.#stop('closed', { code: 0, reason: String(err), error: 'bad_url' });
      return;
    }
    if (url && typeof url.then === 'function') {
      // A URL made by asking the server first (a ticket): hold the place meanwhile.
      const pending = { pending: true };
      this.#ws = pending;
      url.then(
        (made) => {
          if (this.#ws !== pending) return;
          this.#ws = null;
          this.#open(made);
        },
        (err) => {
          if (this.#ws !== pending) return;
          this.#detach();
          if (err?.fatal) this.#stop('closed', { code: err.closeCode ?? 4401, reason: err.message, error: err.code });
          else this.#afterClose(ABANDONED, err?.message ?? 'no ticket');
        },
      );
      return;
    }
    this.#open(url);
  }

  #open(url) {
    let ws;
    try {
      // JSON only: msgpack (`paylive.v1.msgpack`) is for clients that bring a codec.
      ws = new this.#options.WebSocket(url, [JSON_PROTOCOL]);
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
    this.#watchNetwork(false);
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
    this.#backoff.reset();
    if (this.#ws) this.#abandon('reconnect requested', 0);
    else this.connect();
  }

  /** Drop the connection as if the network had failed; it reconnects with backoff. */
  drop(reason = 'dropped') {
    if (this.#ws) this.#abandon(reason);
  }

  /** Send a map now; false when not connected (the caller queues it). */
  send(message) {
    if (!this.#ws || this.#ws.pending || this.#status !== 'connected') return false;
    this.#ws.send(JSON.stringify(message));
    return true;
  }

  #onOpen(ws) {
    if (ws !== this.#ws) return;
    this.#backoff.opened(Date.now());
    this.#setStatus('connected');
    this.#pinged = false;
    const every = this.#options.pingInterval;
    if (every > 0) {
      this.#pingTimer = setInterval(() => {
        if (this.send({ type: 'ping' })) this.#pinged = true;
      }, every);
    }
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
  #abandon(reason, delay = null, detail = {}) {
    const ws = this.#detach();
    try {
      ws?.close(ABANDONED, reason);
    } catch {
      // Already closing.
    }
    this.#afterClose(ABANDONED, reason, delay, detail);
  }

  #detach() {
    const ws = this.#ws;
    this.#ws = null;
    clearInterval(this.#pingTimer);
    clearTimeout(this.#silenceTimer);
    this.#pingTimer = this.#silenceTimer = null;
    if (ws?.pending) return null;
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    return ws;
  }

  #afterClose(code, reason, delay = null, detail = {}) {
    this.#backoff.closed(Date.now());
    if (this.#stopped) return;
    const fatal = FATAL_CLOSE_CODES.get(code);
    if (fatal) {
      this.emit('close', { code, reason, reconnect: false });
      this.#stop('closed', { code, reason, error: fatal });
      return;
    }
    this.emit('close', { code, reason, reconnect: true, ...detail });
    if (this.#stopped) return; // a listener closed it for good
    if (this.#isOffline()) {
      this.#setStatus('offline', { code, reason });
      // navigator.onLine can be wrong; try now and then even without an `online` event.
      this.#schedule(this.#options.backoffMax);
      return;
    }
    // A reconnect asked for at once (`reconnectNow`) is no failed attempt: not counted.
    const drawn = delay === null ? this.#backoff.next() : 0;
    // A restarting server (1012) says within how long to come back: a random delay in it.
    const wait = delay ?? restartDelay(code, reason) ?? drawn;
    this.#setStatus('reconnecting', { attempt: this.#backoff.attempt, delay: wait, code, reason });
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
    this.#watchNetwork(false);
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#silenceTimer);
    this.#retryTimer = this.#silenceTimer = null;
    this.#setStatus(status, detail);
    this.emit('fatal', detail);
  }

  #heard() {
    clearTimeout(this.#silenceTimer);
    this.#silenceTimer = setTimeout(() => {
      // An open socket's silence is told apart from a hung handshake: a middlebox that
      // passes the handshake and holds every frame shows only as open sockets that stay
      // silent, and the caller may take that transport for one that does not work here.
      const silent = this.#status === 'connected' ? { silent: true, pinged: this.#pinged } : {};
      this.#abandon('server silent', null, silent);
    }, this.silenceTimeout);
  }

  /**
   * Listen to the window's network events while the socket is wanted, and only then: a
   * socket closed for good (a probe given up, say) leaves no listener on the window.
   */
  #watchNetwork(on) {
    const win = this.#options.window;
    if (on === this.#watching || !this.#options.watchNetwork || !win?.addEventListener) return;
    this.#watching = on;
    const method = on ? 'addEventListener' : 'removeEventListener';
    win[method]('offline', this.#onOffline);
    win[method]('online', this.#onOnline);
  }

  #wentOffline() {
    if (this.#stopped) return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    // The socket is most likely dead already, and a browser may take minutes to
    // notice; drop it now and resume with `since` when the network is back.
    const ws = this.#detach();
    this.#backoff.closed(Date.now());
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
    this.#backoff.reset();
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
