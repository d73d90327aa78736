// paylive answers a command `engine_unavailable` when its store did not answer, and that
// includes a save that was made with only its reply lost (protocol 3.1: the same
// request again finds the attempt started). A `pay` or `retry` answered so may have
// started a charge: its outcome is unknown, on the socket as over HTTP, and the page
// keeps its warning and asks for a snapshot, as after a lost answer.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { PayliveSession } from '../../../client/paylive/session.js';
import { ID, SECRET, fakeServer, fakeWindow, until } from './fake_server.js';

const CARD = '4242424242424242';
const ENGINE_DOWN = { code: 'engine_unavailable', message: 'the session store is unavailable; retry shortly' };

const outcome = (promise) => promise.then((ack) => ({ ok: true, type: ack?.type }), (err) => ({ ok: false, code: err.code }));

async function connected(t, transport) {
  const srv = fakeServer(transport === 'websocket' ? {} : { websocket: 'blocked' });
  const win = fakeWindow();
  const pay = new PayliveSession({
    sessionId: ID, secret: SECRET, baseUrl: 'http://pay.example',
    WebSocket: srv.WebSocket, EventSource: srv.EventSource, fetch: srv.fetch,
    watchNetwork: false, window: win, pingInterval: 0, transports: [transport],
    firstMessageTimeout: 5_000, upgradeInterval: 0, backoffBase: 5, backoffMax: 20,
    commandTimeout: 5_000, silenceTimeout: 60_000,
  });
  t.after(() => pay.close());
  const turns = [];
  pay.on('guard', (on) => turns.push(on));
  await until(() => pay.connection === 'connected' && pay.session !== null);
  return { srv, win, pay, turns };
}

/** The store saved the attempt; its reply was lost, and so was the live event. */
function savedUnheard(srv) {
  const live = [...srv.sockets, ...srv.sources].filter((c) => c.live);
  for (const c of live) c.live = false;
  srv.emit({ status: 'processing', attempt: 1, deadline: Date.now() + 30_000 }, 'attempt_started');
  for (const c of live) c.live = true;
}

test('on the socket, a pay answered engine_unavailable is an unknown outcome until the session tells', async (t) => {
  const { srv, win, pay, turns } = await connected(t, 'websocket');
  srv.onSocketCommand = (ws, frame) => {
    if (frame.type !== 'pay') return;
    savedUnheard(srv);
    ws.deliver({ type: 'error', session: ID, seq: srv.seq, ts: Date.now(), data: { ...ENGINE_DOWN, ref: frame.ref } });
  };
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'engine_unavailable' });
  assert.deepEqual({ unknown: pay.outcomeUnknown, guarded: win.guarded() }, { unknown: true, guarded: true },
    'the store may have saved the attempt: leaving must still ask');
  await until(() => pay.status === 'processing');
  assert.deepEqual({ unknown: pay.outcomeUnknown, guarded: win.guarded(), turns }, { unknown: false, guarded: true, turns: [true] });
});

test('over HTTP, a pay answered paylive\'s own 503 engine_unavailable is an unknown outcome until the session tells', async (t) => {
  const { srv, win, pay } = await connected(t, 'sse');
  srv.onCommand = async () => {
    savedUnheard(srv);
    return { status: 503, body: { error: ENGINE_DOWN } };
  };
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'engine_unavailable' });
  assert.deepEqual({ unknown: pay.outcomeUnknown, guarded: win.guarded() }, { unknown: true, guarded: true });
  await until(() => pay.status === 'processing');
  assert.deepEqual({ unknown: pay.outcomeUnknown, guarded: win.guarded() }, { unknown: false, guarded: true });
});

test('a cancel answered engine_unavailable leaves no payment unknown', async (t) => {
  const { srv, win, pay } = await connected(t, 'websocket');
  srv.onSocketCommand = (ws, frame) => {
    ws.deliver({ type: 'error', session: ID, seq: srv.seq, ts: Date.now(), data: { ...ENGINE_DOWN, ref: frame.ref } });
  };
  assert.deepEqual(await outcome(pay.cancel()), { ok: false, code: 'engine_unavailable' });
  assert.deepEqual({ unknown: pay.outcomeUnknown, guarded: win.guarded() }, { unknown: false, guarded: false });
});
