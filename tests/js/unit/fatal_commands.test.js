// Commands in flight when the connection ends for good (a fatal close: 4401, 4403,
// 4404, 1008). One already sent may have been applied: its promise must not say it was
// refused. One still queued never left the page: the close's code is its answer.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { PayliveSession } from '../../../client/paylive/session.js';
import { ID, SECRET, fakeServer, sleep, until } from './fake_server.js';
import { outcome } from './page.js';

function session(srv, extra = {}) {
  return new PayliveSession({
    sessionId: ID, secret: SECRET, baseUrl: 'http://pay.example',
    WebSocket: srv.WebSocket, EventSource: srv.EventSource, fetch: srv.fetch,
    watchNetwork: false, window: null, pingInterval: 0,
    firstMessageTimeout: 5_000, upgradeInterval: 0, commandTimeout: 5_000, ...extra,
  });
}

test('a pay sent on the socket and unanswered at a fatal close settles connection_lost (outcome unknown)', async (t) => {
  const srv = fakeServer();
  srv.onSocketCommand = () => {}; // taken, maybe applied; the answer never comes
  const pay = session(srv, { transports: ['websocket'] });
  t.after(() => pay.close());
  await until(() => pay.connection === 'connected' && pay.session !== null);
  const paid = outcome(pay.pay('4242424242424242'));
  await until(() => pay.pendingCommands[0]?.sent);
  srv.sockets.at(-1).kill(4404, 'the session is gone');
  assert.deepEqual(await paid, { ok: false, code: 'connection_lost' });
});

test('a pay sent over HTTP is settled by its own answer when the stream closes for good meanwhile', async (t) => {
  const srv = fakeServer();
  let answer;
  srv.onCommand = () => new Promise((resolve) => { answer = resolve; });
  const pay = session(srv, { transports: ['sse'] });
  t.after(() => pay.close());
  await until(() => pay.connection === 'connected' && pay.session !== null);
  const paid = outcome(pay.pay('4242424242424242'));
  await until(() => answer !== undefined);
  srv.sources.at(-1).end(4404, 'the session is gone'); // protocol 4.2: close event, 4404
  await sleep(20);
  answer({ status: 202, body: {} }); // the server had taken the pay
  assert.deepEqual(await paid, { ok: true, type: 'ack' }, 'the pay was accepted, not refused');
});

test('a command still queued at a fatal close is rejected with the close code', async (t) => {
  const srv = fakeServer({ websocket: 'blocked', sse: 'blocked' });
  srv.fetch = async () => ({ ok: false, status: 401, json: async () => ({}) }); // no ticket: 4401
  const pay = session(srv, { transports: ['websocket'], autoConnect: false });
  t.after(() => pay.close());
  const paid = outcome(pay.pay('4242424242424242'));
  pay.connect();
  assert.deepEqual(await paid, { ok: false, code: 'unauthorized' });
});
