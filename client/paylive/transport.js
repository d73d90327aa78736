// The live connection a page uses, whichever transport carries it (protocol 4.2):
// WebSocket first; when its handshake fails or no first message comes within
// `firstMessageTimeout`, or when sockets open and then stay silent twice in a row (a
// middlebox that holds their frames), Server-Sent Events; when the stream delivers
// nothing either (a proxy that buffers it), long-polling. On a lower transport it tries
// the higher ones again every `upgradeInterval` and moves back up as soon as one delivers.

import { Emitter } from './emitter.js';
import { EventStreamConnection, PollingConnection } from './fallback.js';
import { fetchTicket } from './http.js';
import { ReconnectingSocket, SOCKET_DEFAULTS, socketOrigin } from './socket.js';

/** The transports, best first. */
export const TRANSPORTS = Object.freeze(['websocket', 'sse', 'polling']);

// Open sockets given up as silent, in a row, that make the socket a transport that does
// not work here. One is a network's hiccup; two with nothing at all in between is a
// middlebox, and each costs the page a silence bound without news.
const SILENT_SOCKETS = 2;

/** Options of `LiveConnection`, on top of `SOCKET_DEFAULTS`. */
export const TRANSPORT_DEFAULTS = Object.freeze({
  ...SOCKET_DEFAULTS,
  /** The transports to use, best first (a subset of `TRANSPORTS`). */
  transports: TRANSPORTS,
  /** A transport that has not delivered a first message this long after it started is skipped (ms). */
  firstMessageTimeout: 5_000,
  /** On a lower transport, try a higher one this often (ms); 0: never. */
  upgradeInterval: 30_000,
  /** Injectable for tests and non-browser hosts. */
  EventSource: globalThis.EventSource,
  fetch: globalThis.fetch ? (...args) => globalThis.fetch(...args) : undefined,
});

/**
 * One live connection over the best transport that works. Same face as
 * `ReconnectingSocket` (`status`, `connect`, `close`, `reconnectNow`, `drop`, `send`;
 * events `status`, `open`, `message`, `close`, `fatal`), plus `transport`, which every
 * `status` event carries too.
 *
 * Options: `sessionId` and `secret` (a client secret) for a session's channel, or only
 * `secret` (the admin token) for the admin feed; `since()` gives the seq to resume from.
 * Secrets travel in `Authorization` headers only: a socket or a stream is opened with a
 * single-use ticket bought with them.
 */
export class LiveConnection extends Emitter {
  #options;
  #transports;
  #level = 0;
  #carrier = null;
  #wiring = new Map(); // carrier -> the functions that stop this connection listening to it
  #resumedOf = new WeakMap(); // carrier -> whether its last open was made with `since`
  #heard = new Set(); // transports that have delivered at least once
  #silentSockets = 0; // open sockets given up as silent in a row, each owed a message
  #firstTimer = null;
  #probe = null;
  #probeLevel = 0;
  #probeTimer = null;
  #upgradeTimer = null;
  #closed = false;
  #watching = false; // listening to the window's `online` event
  #onOnline = () => this.#cameOnline();
  // Aborted by close(): an HTTP command still being sent (or sent again) stops, and its
  // answer is dropped. Not by a carrier's end: the command outlives the transport.
  #sending = newSending();

  constructor(options = {}) {
    super();
    this.#options = { ...TRANSPORT_DEFAULTS, ...options };
    const wanted = this.#options.transports.filter((t) => TRANSPORTS.includes(t));
    // Polling is a session's alone; and a host without EventSource cannot stream.
    this.#transports = wanted.filter(
      (t) =>
        (t !== 'polling' || this.#options.sessionId) &&
        (t !== 'sse' || typeof this.#options.EventSource === 'function') &&
        (t !== 'websocket' || typeof this.#options.WebSocket === 'function'),
    );
    if (!this.#transports.length) this.#transports = ['websocket'];
  }

  /** The transport in use: `websocket`, `sse` or `polling`. */
  get transport() {
    return this.#transports[this.#level];
  }

  get status() {
    return this.#carrier?.status ?? 'idle';
  }

  get connected() {
    return this.#carrier?.connected ?? false;
  }

  /**
   * The connection in use was opened with `since` (read as it was made): it says
   * nothing until something happens. Long-polling reads `since` again for each poll: false.
   */
  get resumed() {
    return this.#resumedOf.get(this.#carrier)?.() ?? false;
  }

  connect() {
    this.#closed = false;
    this.#watchNetwork(true);
    if (!this.#carrier) this.#carrier = this.#make(this.#level);
    this.#carrier.connect();
    // On a lower transport, probe for a better one again: close() stopped the probes.
    if (!this.#probe && !this.#upgradeTimer) this.#scheduleUpgrade();
  }

  close(code = 1000, reason = 'client closed') {
    this.#closed = true;
    this.#sending.abort();
    this.#sending = newSending();
    this.#watchNetwork(false);
    this.#stopProbing();
    clearTimeout(this.#firstTimer);
    this.#carrier?.close(code, reason);
  }

  reconnectNow() {
    if (this.#carrier) this.#carrier.reconnectNow();
    else this.connect();
  }

  drop(reason = 'dropped') {
    this.#carrier?.drop(reason);
  }

  send(message) {
    // A command sent over HTTP is answered by its own request, whichever carrier is
    // current by then (even once the one that sent it is given up); and that answer
    // says nothing of whether the stream delivers (a buffering proxy passes requests
    // and holds the events back). A socket's answers come as its messages.
    const sending = this.#sending;
    const answer = (reply) => {
      if (!sending.signal.aborted) this.emit('message', reply);
    };
    return this.#carrier?.send(message, answer, sending.signal) ?? false;
  }

  /** A carrier for transport `level`, its events wired to this connection. */
  #make(level) {
    const transport = this.#transports[level];
    const o = this.#options;
    let carrier;
    let resumed = false; // this socket's last attempt was made with `since`
    let delivered = false; // the connection open now has delivered a frame
    if (transport === 'websocket') {
      const path = o.sessionId ? `/ws/sessions/${encodeURIComponent(o.sessionId)}` : '/ws/admin';
      carrier = new ReconnectingSocket(async () => {
        const params = new URLSearchParams({ ticket: await fetchTicket(o.fetch, o.baseUrl, o.secret) });
        const since = o.since?.();
        resumed = since !== null && since !== undefined;
        if (resumed) params.set('since', String(since));
        return `${socketOrigin(o.baseUrl)}${path}?${params}`;
      }, o);
    } else if (transport === 'sse') {
      carrier = new EventStreamConnection(o);
    } else {
      carrier = new PollingConnection(o);
    }
    this.#resumedOf.set(carrier, transport === 'websocket' ? () => resumed : () => carrier.resumed === true);
    const wiring = [];
    this.#wiring.set(carrier, wiring);
    wiring.push(carrier.on('status', (detail) => {
      if (carrier !== this.#carrier) return;
      if (detail.status === 'connecting' || detail.status === 'reconnecting') this.#armFirst(level);
      this.emit('status', { ...detail, transport });
    }));
    wiring.push(carrier.on('open', () => {
      delivered = false;
      if (carrier === this.#probe) {
        // A middlebox may pass the handshake and hold every frame: a probe moves the page
        // up only once something came through (`#onMessage`), and a ping makes an idle
        // server answer at once (without `since` the snapshot comes by itself). A stream
        // must deliver anyway.
        if (transport === 'websocket' && resumed) carrier.send({ type: 'ping' });
        return;
      }
      if (carrier !== this.#carrier) return;
      // The socket in use, reopened with `since` at the current seq, is sent nothing
      // until something happens, so an idle page cannot wait for a message: it counts as
      // working once open (one that drops before its first pong comes back as a socket),
      // until open sockets keep staying silent (`#silentSockets`). Without `since` the
      // server sends a snapshot at once: that first message is waited for.
      if (transport === 'websocket' && resumed) this.#heard.add(transport);
      this.emit('open');
    }));
    wiring.push(carrier.on('message', (message) => {
      delivered = true;
      if (transport === 'websocket') this.#silentSockets = 0;
      this.#onMessage(carrier, level, message);
    }));
    wiring.push(carrier.on('close', (detail) => {
      if (carrier === this.#probe) {
        this.#probeFailed();
        return;
      }
      if (carrier !== this.#carrier) return;
      // Only a socket that owed a message counts: its snapshot (opened without `since`)
      // or the answer to its ping. One opened with `since` on a page that does not ping
      // is sent nothing while the session is idle, and its silence says nothing.
      if (detail.silent && !delivered && (detail.pinged || !resumed)) {
        this.#silentSockets += 1;
        if (this.#silentSockets >= SILENT_SOCKETS) {
          this.#silentSockets = 0;
          this.#heard.delete(transport);
        }
      }
      // A transport that never delivered anything is not going to: the next one. Not
      // when the server itself said to come back later (1012 restarting, 1013 try
      // later): the transport got through, and its own wait (the 1012 hint, the
      // backoff) spreads a deploy's pages instead of sending them all to the next one.
      // Nor while the browser says the network is down: that tells nothing of the transport.
      const comeBack = detail.code === 1012 || detail.code === 1013;
      if (detail.reconnect && !comeBack && !this.#offline() && !this.#heard.has(transport) && this.#level < this.#transports.length - 1) {
        this.#stepDown();
        return;
      }
      this.emit('close', { ...detail, transport });
    }));
    wiring.push(carrier.on('fatal', (detail) => {
      if (carrier === this.#probe) {
        this.#probeFailed();
        return;
      }
      if (carrier !== this.#carrier) return;
      // Over for good (a bad token, an unknown session): no probe may bring it back.
      this.#closed = true;
      this.#watchNetwork(false);
      this.#stopProbing();
      clearTimeout(this.#firstTimer);
      this.emit('fatal', { ...detail, transport });
    }));
    return carrier;
  }

  /** Close a carrier this connection is done with, and stop listening to it. */
  #retire(carrier, reason) {
    if (!carrier) return;
    for (const off of this.#wiring.get(carrier) ?? []) off();
    this.#wiring.delete(carrier);
    carrier.close(4000, reason);
  }

  #onMessage(carrier, level, message) {
    if (isCommandAnswer(message)) {
      // An answer on a socket: no sign of anything beyond the command it answers.
      this.emit('message', message);
      return;
    }
    if (carrier === this.#probe) {
      this.#adopt(carrier, level);
    } else if (carrier !== this.#carrier) {
      return;
    }
    this.#heard.add(this.#transports[level]);
    clearTimeout(this.#firstTimer);
    this.#firstTimer = null;
    this.emit('message', message);
  }

  #armFirst(level) {
    clearTimeout(this.#firstTimer);
    this.#firstTimer = null;
    if (this.#heard.has(this.#transports[level]) || level >= this.#transports.length - 1) return;
    this.#firstTimer = setTimeout(() => {
      this.#firstTimer = null;
      // Offline, nothing could have come: the next attempt, once back online, is timed.
      if (this.#offline()) return;
      if (this.#level === level && !this.#heard.has(this.#transports[level])) this.#stepDown();
    }, this.#options.firstMessageTimeout);
  }

  /**
   * Listen to the window's `online` event from `connect()` until closed (or over for
   * good), and only then: a connection closed leaves no listener on the window.
   */
  #watchNetwork(on) {
    const o = this.#options;
    const win = o.window;
    if (on === this.#watching || !o.watchNetwork || !win?.addEventListener) return;
    this.#watching = on;
    win[on ? 'addEventListener' : 'removeEventListener']('online', this.#onOnline);
  }

  /**
   * Back online: the HTTP transport in use comes back at once, as a socket does by
   * itself (it watches the network on its own). Only the one in use: a probe is timed
   * on its own, and a transport given up is no longer listened to.
   */
  #cameOnline() {
    if (this.#closed || this.transport === 'websocket') return;
    this.#carrier?.backOnline();
  }

  /** The browser says the network is down (as the socket reads it). */
  #offline() {
    const o = this.#options;
    return Boolean(o.watchNetwork && o.window?.navigator?.onLine === false);
  }

  #stepDown() {
    const old = this.#carrier;
    this.#carrier = null;
    this.#retire(old, 'trying another transport');
    this.#level += 1;
    this.emit('close', { code: 4000, reason: `moving to ${this.transport}`, reconnect: true, transport: this.#transports[this.#level - 1] });
    if (this.#closed) return;
    this.#carrier = this.#make(this.#level);
    this.#carrier.connect();
    this.#scheduleUpgrade();
  }

  #scheduleUpgrade() {
    clearTimeout(this.#upgradeTimer);
    this.#upgradeTimer = null;
    const every = this.#options.upgradeInterval;
    if (!every || this.#level === 0 || this.#closed) return;
    this.#upgradeTimer = setTimeout(() => this.#tryUpgrade(), every);
  }

  #tryUpgrade() {
    this.#upgradeTimer = null;
    if (this.#closed || this.#level === 0 || this.#probe) return;
    if (this.#probeLevel >= this.#level) this.#probeLevel = 0;
    const level = this.#probeLevel;
    this.#probe = this.#make(level);
    this.#probe.connect();
    this.#probeTimer = setTimeout(() => this.#probeFailed(), this.#options.firstMessageTimeout);
  }

  #probeFailed() {
    const probe = this.#probe;
    if (!probe) return;
    this.#probe = null;
    clearTimeout(this.#probeTimer);
    this.#retire(probe, 'probe over');
    this.#probeLevel += 1;
    this.#scheduleUpgrade();
  }

  #adopt(probe, level) {
    clearTimeout(this.#probeTimer);
    this.#probe = null;
    const old = this.#carrier;
    this.#carrier = probe;
    this.#level = level;
    this.#probeLevel = 0;
    this.#retire(old, 'moved to a better transport');
    this.emit('status', { status: probe.status, transport: this.transport });
    if (probe.connected) this.emit('open');
    this.#scheduleUpgrade();
  }

  #stopProbing() {
    clearTimeout(this.#upgradeTimer);
    clearTimeout(this.#probeTimer);
    this.#upgradeTimer = this.#probeTimer = null;
    const probe = this.#probe;
    this.#probe = null;
    this.#retire(probe, 'closed');
  }
}

/** What `close()` aborts; a stand-in where the host has no AbortController (old ones). */
export function newSending() {
  if (typeof AbortController === 'function') return new AbortController();
  const signal = { aborted: false };
  return { signal, abort: () => { signal.aborted = true; } };
}

/** An `ack`, or an `error` whose data names a command's `ref`: the answer to one command. */
function isCommandAnswer(message) {
  const ref = message?.data?.ref;
  return message?.type === 'ack' || (message?.type === 'error' && ref !== undefined && ref !== null);
}
