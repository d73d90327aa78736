// Sockets that a middlebox lets open and then holds (found in a review, 2027-01): the
// handshake passes, nothing the server sends gets through, not even a pong. Such a
// socket was given up as silent and opened again for ever, and the page never moved
// down to a transport that reaches it (protocol 4.2).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { PayliveSession } from '../../../client/paylive/session.js';
import { ID, SECRET, fakeServer, sleep, until } from './fake_server.js';

function session(srv, extra = {}) {
  return new PayliveSession({
    sessionId: ID, secret: SECRET, baseUrl: 'http://pay.example',
    WebSocket: srv.WebSocket, EventSource: srv.EventSource, fetch: srv.fetch,
    watchNetwork: false, window: null,
    // The defaults' proportions: a ping before the silence bound (2 * 10 + 30 = 50 ms).
    countdownInterval: 10, pingInterval: 30, firstMessageTimeout: 50,
    upgradeInterval: 150, backoffBase: 5, backoffMax: 20, ...extra,
  });
}

test('sockets held from the start: the page stays on SSE, where the payment reaches it', async (t) => {
  const srv = fakeServer({ websocket: 'held' });
  const pay = session(srv);
  t.after(() => pay.close());
  await until(() => pay.transport === 'sse' && pay.session !== null);
  await sleep(900); // six upgrade intervals: six sockets tried again
  srv.emit({ status: 'processing', attempt: 1, deadline: Date.now() + 30_000 }, 'attempt_started');
  await until(() => pay.status === 'processing', 500).catch(() => {});
  assert.deepEqual(
    { transport: pay.transport, status: pay.status },
    { transport: 'sse', status: 'processing' },
    'the page sat on a socket that delivers nothing',
  );
  assert.ok(srv.opened.filter((o) => o === 'ws').length >= 3, 'the page still tried the socket now and then');
});

test('a working socket that starts being held: after two silent sockets in a row the page moves down', async (t) => {
  const srv = fakeServer();
  const pay = session(srv);
  t.after(() => pay.close());
  await until(() => pay.transport === 'websocket' && pay.session !== null);
  srv.websocket = 'held';
  srv.sockets.at(-1).held = true; // from now on its frames are held too
  await until(() => pay.transport === 'sse', 1_000).catch(() => {});
  srv.emit({ status: 'processing', attempt: 1, deadline: Date.now() + 30_000 }, 'attempt_started');
  await until(() => pay.status === 'processing', 500).catch(() => {});
  assert.deepEqual(
    { transport: pay.transport, status: pay.status },
    { transport: 'sse', status: 'processing' },
    'the page kept opening sockets that deliver nothing',
  );
});

test('sockets that deliver and then go silent are reconnected as sockets, never given up', async (t) => {
  const srv = fakeServer();
  // Each socket answers its first ping and then falls silent: a flaky network, not a
  // middlebox (a socket that delivered something works).
  const send = srv.WebSocket.prototype.send;
  srv.WebSocket.prototype.send = function (data) {
    send.call(this, data);
    this.held = true;
  };
  const pay = session(srv);
  t.after(() => pay.close());
  await until(() => pay.session !== null);
  await until(() => srv.opened.filter((o) => o === 'ws').length >= 5, 2_000);
  assert.deepEqual(
    { transport: pay.transport, streams: srv.opened.filter((o) => o === 'sse').length },
    { transport: 'websocket', streams: 0 },
  );
});
