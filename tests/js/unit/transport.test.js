// The transport the client picks by itself (protocol 4.2): WebSocket, then Server-Sent
// Events, then long-polling, and back up. Stand-ins for WebSocket, EventSource and
// fetch play the proxies: a refused Upgrade, a buffered stream, a working poll.
// Secrets must travel in Authorization headers only, never in a URL.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { LiveConnection } from '../../../client/paylive/transport.js';

const SECRET = 'ps_1_secret_abc';
const snapshot = (seq = 0) => ({ type: 'snapshot', session: 'ps_1', seq, ts: Date.now(), data: { session: { id: 'ps_1', seq, status: 'created' } } });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(check, timeout = 2_000) {
  const deadline = Date.now() + timeout;
  while (!check()) {
    assert.ok(Date.now() < deadline, 'condition not met in time');
    await sleep(5);
  }
}

/** A network: which transports get through, and every URL and header requested. */
function network({ websocket = false, sse = false } = {}) {
  const net = { websocket, sse, urls: [], headers: [], sockets: [], sources: [] };
  net.WebSocket = class {
    constructor(url) {
      net.urls.push(url);
      net.sockets.push(this);
      setTimeout(() => {
        if (!net.websocket) {
          this.onclose?.({ code: 1006, reason: '' }); // a proxy answered the Upgrade 403
          return;
        }
        this.onopen?.();
        this.onmessage?.({ data: JSON.stringify(snapshot()) });
      }, 1);
    }
    send() {}
    close() {}
  };
  net.EventSource = class {
    constructor(url) {
      net.urls.push(url);
      net.sources.push(this);
      this.listeners = {};
      // A buffering proxy: nothing at all, not even the headers.
      if (net.sse) {
        setTimeout(() => {
          this.onopen?.();
          this.onmessage?.({ data: JSON.stringify(snapshot()) });
        }, 1);
      }
    }
    addEventListener(type, listener) {
      this.listeners[type] = listener;
    }
    removeEventListener(type, listener) {
      if (this.listeners[type] === listener) delete this.listeners[type];
    }
    close() {
      this.closed = true;
    }
  };
  net.fetch = async (url, init = {}) => {
    net.urls.push(url);
    net.headers.push(init.headers ?? {});
    if (url.endsWith('/api/tickets')) {
      return { ok: true, status: 201, json: async () => ({ ticket: `tk-${net.urls.length}` }) };
    }
    if (url.includes('/events?')) {
      if (!url.includes('wait=0')) await sleep(20); // a held poll
      const body = { session: 'ps_1', events: [snapshot()], seq: 0, status: 'created', deadline: null, retry_at: null, server_time: Date.now() };
      return { ok: true, status: 200, json: async () => body };
    }
    return { ok: false, status: 404, json: async () => ({}) };
  };
  return net;
}

function connection(net, options = {}) {
  return new LiveConnection({
    sessionId: 'ps_1',
    secret: SECRET,
    baseUrl: 'http://pay.example',
    since: () => null,
    WebSocket: net.WebSocket,
    EventSource: net.EventSource,
    fetch: net.fetch,
    watchNetwork: false,
    pingInterval: 0,
    firstMessageTimeout: 60,
    upgradeInterval: 0,
    backoffBase: 5,
    backoffMax: 20,
    ...options,
  });
}

function noSecretInUrls(net) {
  for (const url of net.urls) assert.ok(!url.includes(SECRET) && !url.includes('token='), url);
  assert.ok(net.headers.some((h) => h.Authorization === `Bearer ${SECRET}`));
}

test('a refused WebSocket makes way for Server-Sent Events', async () => {
  const net = network({ sse: true });
  const live = connection(net);
  const messages = [];
  const transports = [];
  live.on('message', (m) => messages.push(m));
  live.on('status', (d) => transports.push(d.transport));
  live.connect();
  await until(() => messages.length > 0);
  assert.equal(live.transport, 'sse');
  assert.equal(live.status, 'connected');
  assert.equal(messages[0].type, 'snapshot');
  assert.ok(transports.includes('websocket') && transports.includes('sse'));
  assert.ok(net.urls.some((u) => u.startsWith('ws://pay.example/ws/sessions/ps_1?ticket=')));
  assert.ok(net.urls.some((u) => u.startsWith('http://pay.example/api/sessions/ps_1/stream?ticket=')));
  noSecretInUrls(net);
  live.close();
});

test('a stream that delivers nothing makes way for long-polling', async () => {
  const net = network();
  const live = connection(net);
  const messages = [];
  live.on('message', (m) => messages.push(m));
  live.connect();
  await until(() => live.transport === 'polling' && messages.length >= 2);
  assert.equal(live.status, 'connected');
  assert.ok(net.sources.every((s) => s.closed), 'the silent stream was closed');
  const polls = net.urls.filter((u) => u.includes('/events?'));
  assert.ok(polls[0].includes('wait=0'), 'the first poll is answered at once');
  noSecretInUrls(net);
  live.close();
  const after = net.urls.length;
  await sleep(60);
  assert.ok(net.urls.length <= after + 1, 'polling stops once closed');
});

test('on a lower transport it moves back up when a better one works again', async () => {
  const net = network({ sse: true });
  const live = connection(net, { upgradeInterval: 40 });
  live.connect();
  await until(() => live.transport === 'sse' && live.status === 'connected');
  net.websocket = true; // the proxy lets sockets through now
  await until(() => live.transport === 'websocket' && live.status === 'connected');
  assert.ok(net.sources.at(-1).closed, 'the stream was closed after the move');
  live.close();
});

test('a transport that has delivered once is kept through a reconnect', async () => {
  const net = network({ websocket: true });
  const live = connection(net);
  live.connect();
  await until(() => live.status === 'connected');
  net.websocket = false; // the server goes away for a moment
  live.drop('test');
  await sleep(100);
  assert.equal(live.transport, 'websocket');
  net.websocket = true;
  await until(() => live.status === 'connected');
  assert.equal(live.transport, 'websocket');
  live.close();
});

test('commands go over the HTTP API when no socket carries them, answered as ack or error', async () => {
  const net = network({ sse: true });
  const plain = net.fetch;
  const posted = [];
  net.fetch = async (url, init = {}) => {
    if (init.method === 'POST' && !url.endsWith('/api/tickets')) {
      posted.push({ url, init });
      if (url.endsWith('/cancel')) {
        return { ok: false, status: 409, json: async () => ({ error: { code: 'invalid_state', message: 'over' } }) };
      }
      return { ok: true, status: 202, json: async () => ({}) };
    }
    return plain(url, init);
  };
  const live = connection(net);
  const answers = [];
  live.on('message', (m) => (m.type === 'ack' || m.type === 'error') && answers.push(m));
  live.connect();
  await until(() => live.transport === 'sse' && live.connected);
  assert.equal(live.send({ type: 'pay', payment_method: { card: '4242424242424242' }, ref: 'c1' }), true);
  assert.equal(live.send({ type: 'cancel', ref: 'c2' }), true);
  await until(() => answers.length === 2);
  const byRef = Object.fromEntries(answers.map((m) => [m.data.ref, m]));
  assert.equal(byRef.c1.type, 'ack');
  assert.deepEqual([byRef.c2.type, byRef.c2.data.code], ['error', 'invalid_state']);
  assert.equal(posted[0].url, 'http://pay.example/api/sessions/ps_1/attempts');
  assert.deepEqual(JSON.parse(posted[0].init.body), { payment_method: { card: '4242424242424242' } });
  assert.equal(posted[0].init.headers.Authorization, `Bearer ${SECRET}`);
  live.close();
});

test('a credential the server refuses ends the connection for good', async () => {
  const net = network();
  net.fetch = async () => ({ ok: false, status: 401, json: async () => ({}) });
  const live = connection(net);
  const fatal = [];
  live.on('fatal', (detail) => fatal.push(detail));
  live.connect();
  await until(() => fatal.length === 1);
  assert.equal(fatal[0].code, 4401);
  assert.equal(live.status, 'closed');
  assert.equal(live.transport, 'websocket');
});
