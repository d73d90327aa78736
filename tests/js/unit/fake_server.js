// A fake paylive server for the client's transport tests: sockets, event streams,
// long-polls, tickets and commands, answering as docs/protocol.md sections 4 to 4.3 say
// (a stream or socket reopened with \`since\` at the current seq is sent nothing).

export const SECRET = 'ps_1_secret_abc';
export const ID = 'ps_1';
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function fakeServer({ websocket = 'ok', sse = 'ok', heartbeat = null } = {}) {
  const srv = {
    websocket, // 'ok' | 'blocked' (the Upgrade is refused) | 'held' (accepted, then every frame held back) | {code, reason} (accepted, then closed)
    sse, // 'ok' | 'buffered' (headers pass, events are held back) | 'blocked'
    heartbeat, // PAYLIVE_SSE_HEARTBEAT_MS: a stream's `ping` first and this often; null: none (an older server)
    hold: 30, // PAYLIVE_POLL_HOLD_MS, said as `hold_ms`; null: not said (an older server)
    hang: false, // a held poll's connection dies without a word: never answered, only aborted
    aborted: 0, // polls the page aborted
    down: false, // the network is down: every request fails, every stream errors
    seq: 0,
    session: { id: ID, status: 'created', attempt: 0, max_attempts: 3, deadline: null, retry_at: null, last_error: null, seq: 0 },
    history: [],
    sockets: [],
    sources: [],
    opened: [], // every connection attempt: 'ticket', 'ws', 'sse', 'poll'
    at: [], // when each was made
    waiters: new Set(),
    commands: [], // every command request: {path, body, key} (key: its Idempotency-Key header, or null)
    onCommand: async () => ({ status: 202, body: {} }),
  };
  const message = (type, data, seq) => ({ type, session: ID, seq, ts: Date.now(), data });
  srv.snapshot = () => message('snapshot', { session: { ...srv.session } }, srv.seq);
  srv.catchUp = (since) => (since == null || since > srv.seq ? [srv.snapshot()] : srv.history.filter((e) => e.seq > since));
  srv.emit = (fields, cause) => {
    const previous = srv.session.status;
    srv.seq += 1;
    srv.session = { ...srv.session, ...fields, seq: srv.seq };
    const event = message('state', { session: { ...srv.session }, previous, cause }, srv.seq);
    srv.history.push(event);
    for (const ws of srv.sockets) if (ws.live) ws.deliver(event);
    for (const source of srv.sources) if (source.live) source.deliver(event);
    for (const wake of srv.waiters) wake();
    return event;
  };
  const sinceOf = (url) => {
    const value = new URL(url).searchParams.get('since');
    return value === null ? null : Number(value);
  };

  srv.WebSocket = class {
    constructor(url) {
      srv.opened.push('ws');
      srv.at.push(Date.now());
      srv.sockets.push(this);
      this.url = url;
      setTimeout(() => {
        if (this.closed) return;
        const mode = srv.websocket;
        if (mode === 'blocked') {
          this.onclose?.({ code: 1006, reason: '' });
          return;
        }
        this.onopen?.();
        if (mode === 'held') {
          // A middlebox passed the handshake and holds what the server sends: nothing, not even a pong, arrives.
          this.held = true;
          return;
        }
        if (typeof mode === 'object') {
          if (srv.closedAt === undefined) {
            // The first close only: what the page does next is what is measured.
            srv.closedAt = Date.now();
            srv.closedIndex = srv.opened.length;
          }
          this.onclose?.({ code: mode.code, reason: mode.reason });
          return;
        }
        this.live = true;
        for (const event of srv.catchUp(sinceOf(url))) this.deliver(event);
      }, 1);
    }
    deliver(event) {
      if (this.held) return;
      setTimeout(() => !this.closed && this.onmessage?.({ data: JSON.stringify(event) }), 0);
    }
    send(data) {
      const frame = JSON.parse(data);
      if (frame.type === 'ping') this.deliver(message('pong', {}, srv.seq));
      else srv.onSocketCommand?.(this, frame);
    }
    close() {
      this.closed = true;
      this.live = false;
    }
    /** The server (or the network) ends this socket. */
    kill(code = 1006, reason = '') {
      this.live = false;
      this.closed = true;
      this.onclose?.({ code, reason });
    }
  };

  srv.EventSource = class {
    constructor(url) {
      srv.opened.push('sse');
      srv.at.push(Date.now());
      srv.sources.push(this);
      this.url = url;
      this.listeners = {};
      setTimeout(() => {
        if (this.closed) return;
        if (srv.sse === 'blocked' || srv.down) {
          this.onerror?.({});
          return;
        }
        this.onopen?.();
        this.live = true;
        if (srv.heartbeat !== null) {
          const ping = () => this.deliver({ interval_ms: srv.heartbeat }, 'ping');
          ping();
          this.beat = setInterval(ping, srv.heartbeat);
        }
        for (const event of srv.catchUp(sinceOf(url))) this.deliver(event);
      }, 1);
    }
    addEventListener(type, listener) {
      this.listeners[type] = listener;
    }
    removeEventListener(type, listener) {
      if (this.listeners[type] === listener) delete this.listeners[type];
    }
    deliver(event, type = 'message') {
      if (srv.sse === 'buffered' || this.muted) return;
      setTimeout(() => {
        if (this.closed || this.muted) return;
        const frame = { data: JSON.stringify(event) };
        if (type === 'message') this.onmessage?.(frame);
        else this.listeners[type]?.(frame);
      }, 0);
    }
    /** The server ends the stream with `event: close`. */
    end(code, reason) {
      this.live = false;
      this.listeners.close?.({ data: JSON.stringify({ code, reason }) });
    }
    /** The connection dies without a word (a NAT timeout): nothing more arrives, no error. */
    mute() {
      this.muted = true;
    }
    close() {
      this.closed = true;
      this.live = false;
      clearInterval(this.beat);
    }
  };

  srv.fetch = async (url, init = {}) => {
    if (srv.down) throw new TypeError('Failed to fetch');
    if (url.endsWith('/api/tickets')) {
      srv.opened.push('ticket');
      srv.at.push(Date.now());
      return { ok: true, status: 201, json: async () => ({ ticket: `tk${srv.opened.length}` }) };
    }
    if (url.includes('/events?')) {
      srv.opened.push('poll');
      srv.at.push(Date.now());
      const since = sinceOf(url);
      let events = srv.catchUp(since);
      if (!events.length && new URL(url).searchParams.get('wait') !== '0') {
        if (srv.hang) {
          await new Promise((resolve, reject) => {
            init.signal?.addEventListener('abort', () => {
              srv.aborted += 1;
              reject(new Error('aborted'));
            });
          });
        }
        await new Promise((resolve) => {
          const wake = () => {
            srv.waiters.delete(wake);
            resolve();
          };
          srv.waiters.add(wake);
          setTimeout(wake, srv.hold ?? 30);
        });
        events = srv.catchUp(since);
      }
      const s = srv.session;
      const body = { session: ID, events, seq: srv.seq, status: s.status, deadline: s.deadline, retry_at: s.retry_at, server_time: Date.now() };
      if (srv.hold !== null) body.hold_ms = srv.hold;
      return { ok: true, status: 200, json: async () => body };
    }
    if (init.method === 'POST') {
      // `body`: a JSON answer; `text`: the raw body (a proxy's HTML page), read as a
      // Response would (json() throws when it is not JSON).
      const body = JSON.parse(init.body ?? '{}');
      const key = Object.entries(init.headers ?? {}).find(([name]) => name.toLowerCase() === 'idempotency-key')?.[1] ?? null;
      srv.commands.push({ path: new URL(url).pathname, body, key });
      const answer = await srv.onCommand(url, body, init);
      const text = answer.text ?? JSON.stringify(answer.body ?? {});
      return { ok: answer.status < 300, status: answer.status, json: async () => JSON.parse(text), text: async () => text };
    }
    return { ok: false, status: 404, json: async () => ({}) };
  };
  return srv;
}

export async function until(check, timeout = 2_000) {
  const deadline = Date.now() + timeout;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(5);
  }
}

/** A window with listeners only: whether the page guards its unload. */
export function fakeWindow() {
  const listeners = new Map();
  return {
    navigator: { onLine: true },
    addEventListener(type, fn) {
      if (!listeners.has(type)) listeners.set(type, new Set());
      listeners.get(type).add(fn);
    },
    removeEventListener(type, fn) {
      listeners.get(type)?.delete(fn);
    },
    guarded() {
      return (listeners.get('beforeunload')?.size ?? 0) > 0;
    },
    /** How many listeners of `type` are on the window. */
    count(type) {
      return listeners.get(type)?.size ?? 0;
    },
    /** The network goes (`offline`) or comes back (`online`), as the browser tells it. */
    fire(type) {
      this.navigator.onLine = type !== 'offline';
      for (const fn of [...(listeners.get(type) ?? [])]) fn({ type });
    },
  };
}
