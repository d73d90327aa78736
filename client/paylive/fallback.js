// The HTTP transports (protocol 4.2) behind the same face as `ReconnectingSocket`: an
// event stream (EventSource) and long-polling (fetch). Each comes back by itself with
// backoff and resumes from `since()`; commands go over the HTTP API.

import { Backoff, restartDelay } from './backoff.js';
import { FATAL_CLOSE_CODES } from './constants.js';
import { Emitter } from './emitter.js';
import { fetchTicket, httpCommand, httpOrigin } from './http.js';
import { silenceBound } from './socket.js';

const ABANDONED = 4000;
const LOST = 1006;

/** Status, backoff and reconnection shared by the two; subclasses open and shut. */
class HttpConnection extends Emitter {
  options;
  #status = 'idle';
  #stopped = false;
  #active = false;
  #timer = null;
  #openTimer = null;
  #backoff;

  constructor(options) {
    super();
    this.options = options;
    this.#backoff = new Backoff(options);
  }

  get status() {
    return this.#status;
  }

  get connected() {
    return this.#status === 'connected';
  }

  connect() {
    this.#stopped = false;
    if (this.#active) return;
    clearTimeout(this.#timer);
    this.#timer = null;
    const first = this.#status === 'idle' || this.#status === 'closed';
    this.#setStatus(first ? 'connecting' : 'reconnecting', { attempt: this.#backoff.attempt });
    this.#active = true;
    // An open not done within the socket's silence bound is given up and made again:
    // on a bad network a ticket request or the first poll may hang, not fail.
    clearTimeout(this.#openTimer);
    this.#openTimer = setTimeout(() => {
      this.#openTimer = null;
      if (!this.#active || this.#status === 'connected') return;
      this.shut();
      this.ended(LOST, 'no answer');
    }, this.silenceTimeout);
    this.open();
  }

  /** The socket's silence bound (ms): how long an open may take, and the margin on top of the server's own bounds. */
  get silenceTimeout() {
    return silenceBound(this.options);
  }

  close(code = 1000, reason = 'client closed') {
    this.#stopped = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#openTimer);
    this.#timer = this.#openTimer = null;
    const was = this.#active;
    this.#active = false;
    this.shut();
    this.#setStatus('closed', { code, reason });
    if (was) this.emit('close', { code, reason, reconnect: false });
  }

  reconnectNow() {
    this.#backoff.reset();
    if (this.#active) {
      this.shut();
      this.ended(ABANDONED, 'reconnect requested', 0);
    } else {
      this.connect();
    }
  }

  drop(reason = 'dropped') {
    if (!this.#active) return;
    this.shut();
    this.ended(ABANDONED, reason);
  }

  /**
   * The browser is back online: come back now, not after the backoff drawn during the
   * outage (up to `backoffMax`). A stream or held poll that lived through it may be
   * dead without a word: made again, with `since`. An attempt under way is left to
   * finish (its open is timed).
   */
  backOnline() {
    if (this.#stopped) return;
    this.#backoff.reset();
    if (!this.#active) {
      this.connect();
    } else if (this.#status === 'connected') {
      this.shut();
      this.ended(ABANDONED, 'back online', 0);
    }
  }

  /**
   * Commands travel over the HTTP API; their `ack` or `error` goes to `answer`, by
   * default as a message of this connection. `closing` (an AbortSignal) stops the
   * command's requests and resends, and drops its answer, once the page is done with
   * it: not this connection's close, since the command outlives the transport that sent it.
   */
  send(message, answer = (reply) => this.emit('message', reply), closing = null) {
    if (this.#status !== 'connected') return false;
    httpCommand(this.options.fetch, this.options, message, answer, closing);
    return true;
  }

  // For the subclasses ---------------------------------------------------------

  open() {}

  shut() {}

  opened() {
    clearTimeout(this.#openTimer);
    this.#openTimer = null;
    this.#backoff.opened(Date.now());
    this.#setStatus('connected');
    this.emit('open');
  }

  deliver(message) {
    if (message && typeof message === 'object') this.emit('message', message);
  }

  ended(code, reason, delay = null) {
    this.#active = false;
    clearTimeout(this.#openTimer);
    this.#openTimer = null;
    this.#backoff.closed(Date.now());
    if (this.#stopped) return;
    const fatal = FATAL_CLOSE_CODES.get(code);
    if (fatal) {
      this.failed({ code, reason, error: fatal });
      return;
    }
    this.emit('close', { code, reason, reconnect: true });
    if (this.#stopped) return; // a listener closed it for good
    // A restarting server (1012) says within how long to come back (protocol 4.3).
    const wait = delay ?? restartDelay(code, reason) ?? this.#backoff.next();
    this.#setStatus('reconnecting', { attempt: this.#backoff.attempt, delay: wait, code, reason });
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.connect();
    }, wait);
  }

  failed(detail) {
    this.#active = false;
    clearTimeout(this.#openTimer);
    this.#openTimer = null;
    this.#stopped = true;
    this.shut();
    this.emit('close', { code: detail.code, reason: detail.reason, reconnect: false });
    this.#setStatus('closed', detail);
    this.emit('fatal', detail);
  }

  #setStatus(status, detail = {}) {
    this.#status = status;
    this.emit('status', { status, ...detail });
  }
}

/**
 * Server-Sent Events: each open buys a ticket and opens an `EventSource` on the session's
 * stream (or the admin stream), resuming with `since`. EventSource's own reconnect would
 * reuse a spent ticket, so any error ends this stream and a fresh one is opened. The
 * server's `ping` events say how often it speaks at least: a stream silent for longer
 * than that plus `silenceTimeout` died without a word (a NAT or a proxy dropped it,
 * and EventSource may never notice), and a fresh one is opened.
 */
export class EventStreamConnection extends HttpConnection {
  /** The stream open (or opening) was asked for with `since`. */
  resumed = false;
  #source = null;
  #onClose = null; // the source's `close` event listener
  #onPing = null; // and its `ping` event listener
  #silenceTimer = null;
  #attempt = null;

  open() {
    const attempt = {};
    this.#attempt = attempt;
    const o = this.options;
    fetchTicket(o.fetch, o.baseUrl, o.secret).then(
      (ticket) => {
        if (this.#attempt !== attempt) return;
        const params = new URLSearchParams({ ticket });
        const since = o.since?.();
        this.resumed = since !== null && since !== undefined;
        if (this.resumed) params.set('since', String(since));
        const path = o.sessionId ? `/api/sessions/${encodeURIComponent(o.sessionId)}/stream` : '/api/admin/stream';
        const source = new o.EventSource(`${httpOrigin(o.baseUrl)}${path}?${params}`);
        this.#source = source;
        // Armed by the first ping, which says the server's interval: a server that
        // sends none (an older one) is not held to it.
        let interval = null;
        const heard = () => {
          if (interval === null) return;
          clearTimeout(this.#silenceTimer);
          this.#silenceTimer = setTimeout(() => {
            if (this.#source !== source) return;
            this.shut();
            this.ended(LOST, 'stream silent');
          }, interval + this.silenceTimeout);
        };
        this.#onPing = (event) => {
          if (this.#source !== source) return;
          try {
            const every = JSON.parse(event.data)?.interval_ms;
            if (Number.isFinite(every) && every > 0) interval = every;
          } catch {
            // A ping without an interval still says the stream is alive.
          }
          heard();
        };
        source.addEventListener('ping', this.#onPing);
        source.onopen = () => {
          if (this.#source === source) this.opened();
        };
        source.onmessage = (event) => {
          if (this.#source !== source) return;
          heard();
          try {
            this.deliver(JSON.parse(event.data));
          } catch {
            console.warn('paylive: ignoring an event that is not JSON');
          }
        };
        this.#onClose = (event) => {
          if (this.#source !== source) return;
          let detail = { code: LOST, reason: 'stream closed' };
          try {
            detail = JSON.parse(event.data);
          } catch {
            // A close without a reason: reconnect.
          }
          this.shut();
          this.ended(detail.code, detail.reason);
        };
        source.addEventListener('close', this.#onClose);
        source.onerror = () => {
          if (this.#source !== source) return;
          this.shut();
          this.ended(LOST, 'stream lost');
        };
      },
      (err) => {
        if (this.#attempt !== attempt) return;
        this.#attempt = null;
        if (err?.fatal) this.failed({ code: err.closeCode ?? 4401, reason: err.message, error: err.code });
        else this.ended(LOST, err?.message ?? 'no ticket');
      },
    );
  }

  shut() {
    this.#attempt = null;
    clearTimeout(this.#silenceTimer);
    this.#silenceTimer = null;
    const source = this.#source;
    this.#source = null;
    if (source) {
      source.onopen = source.onmessage = source.onerror = null;
      source.removeEventListener('close', this.#onClose);
      source.removeEventListener('ping', this.#onPing);
      source.close();
    }
    this.#onClose = this.#onPing = null;
  }
}

/**
 * Long-polling, the last resort: `GET .../events?since=` with the client secret in the
 * Authorization header, again as soon as each answer is in. The first poll of each
 * connection is not held, so the page hears at once; between polls the countdown is
 * drawn from the answer's `deadline` and `server_time` (a `countdown` made here). A
 * held poll not answered within the server's `hold_ms` plus `silenceTimeout` lost its
 * connection without a word: it is aborted and the page polls again.
 */
export class PollingConnection extends HttpConnection {
  #round = null;
  #abort = null;
  #pollTimer = null;

  open() {
    const round = {};
    this.#round = round;
    this.#loop(round);
  }

  shut() {
    this.#round = null;
    clearTimeout(this.#pollTimer);
    this.#pollTimer = null;
    this.#abort?.abort();
    this.#abort = null;
  }

  async #loop(round) {
    const o = this.options;
    let first = true;
    let hold = null; // the server's longest hold, from its last answer (none from an older server)
    while (this.#round === round) {
      const params = new URLSearchParams();
      const since = o.since?.();
      if (since !== null && since !== undefined) params.set('since', String(since));
      if (first) params.set('wait', '0');
      const abort = typeof AbortController === 'undefined' ? null : new AbortController();
      this.#abort = abort;
      // The first poll is timed as an open (`connect`); a held one by what the server said.
      if (!first && hold !== null) {
        this.#pollTimer = setTimeout(() => {
          this.#pollTimer = null;
          if (this.#round !== round) return;
          this.shut();
          this.ended(LOST, 'poll unanswered');
        }, hold + this.silenceTimeout);
      }
      let body;
      try {
        const reply = await o.fetch(
          `${httpOrigin(o.baseUrl)}/api/sessions/${encodeURIComponent(o.sessionId)}/events?${params}`,
          { headers: { Authorization: `Bearer ${o.secret}` }, cache: 'no-store', signal: abort?.signal },
        );
        if (this.#round !== round) return;
        if (!reply.ok) {
          const code = { 401: 4401, 403: 4401, 404: 4404 }[reply.status] ?? 1013;
          this.shut();
          this.ended(code, `poll refused (HTTP ${reply.status})`);
          return;
        }
        body = await reply.json();
      } catch (err) {
        if (this.#round !== round) return;
        this.shut();
        this.ended(LOST, `poll failed: ${err?.message ?? err}`);
        return;
      } finally {
        if (this.#round === round) {
          clearTimeout(this.#pollTimer);
          this.#pollTimer = null;
        }
      }
      if (this.#round !== round) return;
      if (Number.isFinite(body?.hold_ms) && body.hold_ms >= 0) hold = body.hold_ms;
      if (first) this.opened();
      first = false;
      // A listener may end this round (close(), a resume after a gap): then the rest of
      // the answer is not for it.
      for (const message of body.events ?? []) {
        if (this.#round !== round) return;
        this.deliver(message);
      }
      if (this.#round !== round) return;
      if (body.status === 'processing' && typeof body.deadline === 'number') {
        this.deliver({
          type: 'countdown',
          session: body.session,
          seq: body.seq,
          ts: body.server_time,
          data: { attempt: null, remaining_ms: Math.max(0, body.deadline - body.server_time), deadline: body.deadline },
        });
      }
    }
  }
}
