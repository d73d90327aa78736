// A customer on a bad network: requests that hang rather than fail.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { PayliveSession } from '../../../client/paylive/session.js';
import { ID, SECRET, fakeServer, until } from './fake_server.js';

test('a reconnect whose ticket request hangs is given up and tried again', async (t) => {
  const srv = fakeServer();
  let hang = 0;
  const fetch = (url, init) => {
    if (hang > 0 && String(url).endsWith('/api/tickets')) {
      hang -= 1;
      return new Promise(() => {}); // sent on a dead connection: never answered
    }
    return srv.fetch(url, init);
  };
  const pay = new PayliveSession({
    sessionId: ID, secret: SECRET, baseUrl: 'http://pay.example',
    WebSocket: srv.WebSocket, EventSource: srv.EventSource, fetch,
    watchNetwork: false, window: null, pingInterval: 30, silenceTimeout: 150,
    firstMessageTimeout: 5_000, upgradeInterval: 0, backoffBase: 5, backoffMax: 20,
  });
  t.after(() => pay.close());
  await until(() => pay.connection === 'connected' && pay.session !== null);
  hang = 1;
  srv.sockets.at(-1).kill(1006); // the network drops the socket
  await until(() => pay.connection === 'reconnecting');
  await until(() => pay.connection === 'connected', 1_500);
  assert.equal(pay.transport, 'websocket');
  srv.emit({ status: 'processing', attempt: 1, deadline: Date.now() + 30_000 }, 'attempt_started');
  await until(() => pay.status === 'processing');
});

test('on long-polling, close() from a handler ends the delivery of the poll it came in', async (t) => {
  const srv = fakeServer({ websocket: 'blocked', sse: 'buffered' });
  const pay = new PayliveSession({
    sessionId: ID, secret: SECRET, baseUrl: 'http://pay.example',
    WebSocket: srv.WebSocket, EventSource: srv.EventSource, fetch: srv.fetch,
    watchNetwork: false, window: null, pingInterval: 0,
    firstMessageTimeout: 60, upgradeInterval: 0, backoffBase: 5, backoffMax: 20,
  });
  t.after(() => pay.close());
  await until(() => pay.transport === 'polling' && pay.connection === 'connected' && pay.session !== null);
  await new Promise((resolve) => setTimeout(resolve, 10)); // the next poll is held
  const after = [];
  let closed = false;
  pay.on('message', (message) => closed && after.push(message.type));
  pay.on('state', () => {
    closed = true;
    pay.close(); // the page is done (say, it navigates away)
  });
  // Two events answer the held poll together.
  srv.emit({ status: 'processing', attempt: 1, deadline: Date.now() + 30_000 }, 'attempt_started');
  srv.emit({ status: 'succeeded' }, 'succeeded');
  await until(() => closed);
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.deepEqual(after, [], 'messages after close()');
  assert.equal(pay.lastSeq, 1);
});

test('on SSE, a reopen whose ticket request hangs is given up and made again', async (t) => {
  const srv = fakeServer({ websocket: 'blocked' });
  let hang = 0;
  const fetch = (url, init) => {
    if (hang > 0 && String(url).endsWith('/api/tickets')) {
      hang -= 1;
      return new Promise(() => {});
    }
    return srv.fetch(url, init);
  };
  const pay = new PayliveSession({
    sessionId: ID, secret: SECRET, baseUrl: 'http://pay.example',
    WebSocket: srv.WebSocket, EventSource: srv.EventSource, fetch,
    watchNetwork: false, window: null, pingInterval: 0, silenceTimeout: 150,
    firstMessageTimeout: 60, upgradeInterval: 0, backoffBase: 5, backoffMax: 20,
  });
  t.after(() => pay.close());
  await until(() => pay.transport === 'sse' && pay.connection === 'connected' && pay.session !== null);
  hang = 1;
  srv.sources.at(-1).onerror?.({}); // the stream is lost
  await until(() => pay.connection === 'reconnecting');
  await until(() => pay.connection === 'connected', 1_500);
  assert.equal(pay.transport, 'sse');
});
