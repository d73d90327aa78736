// A pay sent over HTTP (SSE, long-polling) that times out is not lost: its request is
// still on its way and may yet start the charge. A snapshot taken meanwhile saying
// `created` tells nothing of it; the outcome stays unknown (the warning on, Pay off)
// until the request ends or the session says an attempt is under way, and the state is
// asked for again once it ends.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { until } from './fake_server.js';
import { connected } from './page.js';

const openPage = (t) => connected(t, 'sse', {
  options: { backoffBase: 1, backoffMax: 2, commandTimeout: 30, silenceTimeout: 60_000 },
});

/** A pay whose request is held until `land(answer)`. */
function holdPay(srv) {
  const held = {};
  srv.onCommand = () => new Promise((resolve) => { held.land = resolve; });
  return held;
}

test('on sse, a pay timed out with its request on its way: a snapshot saying created does not end the check', async (t) => {
  const { srv, win, pay, snapshots } = await openPage(t);
  const held = holdPay(srv);
  const before = snapshots();
  assert.equal(await pay.pay('4242424242424242').catch((err) => err.code), 'timeout');
  await until(() => snapshots() > before);
  assert.deepEqual({ status: pay.status, unknown: pay.outcomeUnknown, guarded: win.guarded() },
    { status: 'created', unknown: true, guarded: true }, 'the pay may still land: leaving must still ask');
  // It lands: the attempt starts, and its answer comes late.
  srv.emit({ status: 'processing', attempt: 1, deadline: Date.now() + 30_000 }, 'attempt_started');
  held.land({ status: 202, body: {} });
  await until(() => pay.status === 'processing' && !pay.outcomeUnknown);
  assert.equal(win.guarded(), true);
});

test('on sse, a timed-out pay whose late request was refused: the state is asked for again, and then it is known', async (t) => {
  const { srv, win, pay, snapshots } = await openPage(t);
  const held = holdPay(srv);
  assert.equal(await pay.pay('4242424242424242').catch((err) => err.code), 'timeout');
  await until(() => snapshots() >= 2);
  assert.equal(pay.outcomeUnknown, true);
  const errors = [];
  pay.on('error', (e) => errors.push(e.code));
  const asked = snapshots();
  held.land({ status: 409, body: { error: { code: 'invalid_state', message: 'no' } } });
  await until(() => snapshots() > asked && !pay.outcomeUnknown);
  assert.deepEqual({ status: pay.status, guarded: win.guarded(), errors }, { status: 'created', guarded: false, errors: [] });
});
