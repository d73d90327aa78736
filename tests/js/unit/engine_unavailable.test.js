// paylive answers a command `engine_unavailable` when its store did not answer, and that
// includes a save that was made with only its reply lost (protocol 3.1: the same
// request again finds the attempt started). A `pay` or `retry` answered so may have
// started a charge: its outcome is unknown, on the socket as over HTTP, and the page
// keeps its warning and asks for a snapshot, as after a lost answer.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ID, until } from './fake_server.js';
import { CARD, connected, outcome } from './page.js';

const ENGINE_DOWN = { code: 'engine_unavailable', message: 'the session store is unavailable; retry shortly' };

const openPage = (t, transport) => connected(t, transport, { options: { silenceTimeout: 60_000 } });

/** The store saved the attempt; its reply was lost, and so was the live event. */
function savedUnheard(srv) {
  const live = [...srv.sockets, ...srv.sources].filter((c) => c.live);
  for (const c of live) c.live = false;
  srv.emit({ status: 'processing', attempt: 1, deadline: Date.now() + 30_000 }, 'attempt_started');
  for (const c of live) c.live = true;
}

test('on the socket, a pay answered engine_unavailable is an unknown outcome until the session tells', async (t) => {
  const { srv, win, pay, turns } = await openPage(t, 'websocket');
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
  const { srv, win, pay } = await openPage(t, 'sse');
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
  const { srv, win, pay } = await openPage(t, 'websocket');
  srv.onSocketCommand = (ws, frame) => {
    ws.deliver({ type: 'error', session: ID, seq: srv.seq, ts: Date.now(), data: { ...ENGINE_DOWN, ref: frame.ref } });
  };
  assert.deepEqual(await outcome(pay.cancel()), { ok: false, code: 'engine_unavailable' });
  assert.deepEqual({ unknown: pay.outcomeUnknown, guarded: win.guarded() }, { unknown: false, guarded: false });
});
