// The client on a bad network, from a second review of its transports (2027-01): a page
// closed and connected again on a lower transport, a socket adopted while the page is
// idle and dropped before its first message, the page's own close() and the commands
// in flight, reconnectNow() and the backoff, a network that goes away before the first
// message.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { PayliveSession } from '../../../client/paylive/session.js';
import { ReconnectingSocket } from '../../../client/paylive/socket.js';
import { ID, SECRET, fakeServer, fakeWindow, sleep, until } from './fake_server.js';
import { outcome } from './page.js';

function session(srv, extra = {}) {
  return new PayliveSession({
    sessionId: ID, secret: SECRET, baseUrl: 'http://pay.example',
    WebSocket: srv.WebSocket, EventSource: srv.EventSource, fetch: srv.fetch,
    watchNetwork: false, window: null, pingInterval: 0,
    firstMessageTimeout: 60, upgradeInterval: 40, backoffBase: 5, backoffMax: 20,
    commandTimeout: 5_000, ...extra,
  });
}

test('close() then connect() on SSE: the page probes for the socket again and moves back up', async (t) => {
  const srv = fakeServer({ websocket: 'blocked' });
  const pay = session(srv);
  t.after(() => pay.close());
  await until(() => pay.transport === 'sse' && pay.connection === 'connected' && pay.session !== null);
  pay.close();
  pay.connect();
  await until(() => pay.transport === 'sse' && pay.connection === 'connected');
  srv.websocket = 'ok'; // the proxy lets sockets through again
  await until(() => pay.transport === 'websocket', 1_000);
});

test('a socket adopted while idle that drops before its first message is reconnected, not given up for SSE', async (t) => {
  const srv = fakeServer({ websocket: 'blocked' });
  // No ping: the adopted socket, opened at the current seq, is sent nothing at all.
  const pay = session(srv);
  t.after(() => pay.close());
  await until(() => pay.transport === 'sse' && pay.session !== null);
  srv.websocket = 'ok';
  await until(() => pay.transport === 'websocket' && pay.connection === 'connected');
  const before = srv.opened.length;
  srv.sockets.at(-1).kill(1006); // the network drops it
  await until(() => srv.opened.length > before + 1 && pay.connection === 'connected');
  await sleep(100);
  assert.deepEqual(
    { transport: pay.transport, opened: srv.opened.slice(before, before + 2) },
    { transport: 'websocket', opened: ['ticket', 'ws'] },
    'the socket had opened with since: it worked',
  );
});

test("close() rejects a command already sent on the socket with 'closed', not 'connection_lost'", async (t) => {
  const srv = fakeServer();
  srv.onSocketCommand = () => {}; // taken, not answered yet
  const pay = session(srv, { upgradeInterval: 0 });
  t.after(() => pay.close());
  await until(() => pay.connection === 'connected' && pay.session !== null);
  const paid = outcome(pay.pay('4242424242424242'));
  await until(() => pay.pendingCommands[0]?.sent === true);
  pay.close();
  assert.deepEqual(await paid, { ok: false, code: 'closed' });
});

test('reconnectNow() counts no backoff attempt: the next failure waits the first step', async (t) => {
  t.mock.method(Math, 'random', () => 0.99); // the first step's draw: 0.99 * 500 = 495 ms
  const srv = fakeServer();
  const socket = new ReconnectingSocket(() => `ws://pay.example/ws/sessions/${ID}`, {
    WebSocket: srv.WebSocket, watchNetwork: false, window: null, pingInterval: 0,
    backoffBase: 500, backoffMax: 15_000, stableAfter: 5_000,
  });
  t.after(() => socket.close());
  const waits = [];
  socket.on('status', (detail) => detail.status === 'reconnecting' && detail.delay !== undefined && waits.push(detail.delay));
  socket.connect();
  await until(() => socket.connected);
  socket.reconnectNow();
  await until(() => socket.connected && srv.sockets.length === 2);
  srv.sockets.at(-1).kill(1006);
  await until(() => waits.length === 2);
  assert.deepEqual(waits, [0, 495]);
});

test('a network that goes away before the first message does not send the page down to SSE', async (t) => {
  const srv = fakeServer();
  const win = fakeWindow();
  let hang = true;
  const fetch = (url, init) => {
    if (hang && String(url).endsWith('/api/tickets')) return new Promise(() => {}); // lost with the network
    return srv.fetch(url, init);
  };
  const pay = session(srv, { fetch, watchNetwork: true, window: win, upgradeInterval: 0, firstMessageTimeout: 150 });
  t.after(() => pay.close());
  await sleep(10);
  win.fire('offline');
  await sleep(400); // past firstMessageTimeout
  hang = false;
  win.fire('online');
  await until(() => pay.connection === 'connected' && pay.session !== null);
  assert.deepEqual({ transport: pay.transport, sse: srv.opened.includes('sse') }, { transport: 'websocket', sse: false });
});

test('a stream lost while the network is away does not send the page down to long-polling', async (t) => {
  const srv = fakeServer({ websocket: 'blocked' });
  const win = fakeWindow();
  let tickets = 0;
  const fetch = (url, init) => {
    if (!win.navigator.onLine) return Promise.reject(new TypeError('Failed to fetch'));
    // The stream's ticket request, in flight when the network goes: never answered.
    if (String(url).endsWith('/api/tickets') && (tickets += 1) === 2) return new Promise(() => {});
    return srv.fetch(url, init);
  };
  const pay = session(srv, { fetch, watchNetwork: true, window: win, upgradeInterval: 0, firstMessageTimeout: 150, silenceTimeout: 200 });
  t.after(() => pay.close());
  await until(() => pay.transport === 'sse'); // the socket refused; the stream's ticket hangs
  win.fire('offline');
  await sleep(400); // the stream's open given up (silenceTimeout), and tried again, offline
  win.fire('online');
  await until(() => pay.connection === 'connected' && pay.session !== null);
  assert.deepEqual({ transport: pay.transport, polled: srv.opened.includes('poll') }, { transport: 'sse', polled: false });
});
