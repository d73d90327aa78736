// The edges of sending an HTTP command again with its Idempotency-Key: a page closed
// while a command is being sent again, and the bounds given bad values.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { sleep, until } from './fake_server.js';
import { CARD, connected, outcome } from './page.js';

const PROXY_502 = { status: 502, text: '<html><body><h1>502 Bad Gateway</h1></body></html>' };

/** Errors unhandled while `t` runs, and promises rejected with no handler. */
function watchUnhandled(t) {
  const seen = [];
  const onRejection = (reason) => seen.push(reason);
  process.on('unhandledRejection', onRejection);
  t.after(() => process.off('unhandledRejection', onRejection));
  return seen;
}

test('close() while a pay is being sent again: nothing more is sent, nothing more is said', async (t) => {
  const unhandled = watchUnhandled(t);
  const { srv, pay } = await openAnswering(t, { resends: 3, resendDelay: 20 }, () => PROXY_502);
  const errors = [];
  pay.on('error', (e) => errors.push(e.code));
  const settled = outcome(pay.pay(CARD));
  await until(() => srv.commands.length === 1);
  pay.close();
  assert.deepEqual(await settled, { ok: false, code: 'closed' });
  // Longer than every resend the loop had left (3 x 20 ms) would take.
  await sleep(150);
  assert.deepEqual({ sent: srv.commands.length, errors, unhandled }, { sent: 1, errors: [], unhandled: [] });
});

test('close() while a command request is held: its late answer says nothing to the page', async (t) => {
  const { srv, pay } = await openAnswering(t, { resends: 0 });
  let land;
  srv.onCommand = () => new Promise((resolve) => { land = resolve; });
  const errors = [];
  pay.on('error', (e) => errors.push(e.code));
  const settled = outcome(pay.cancel());
  await until(() => land !== undefined);
  pay.close();
  assert.deepEqual(await settled, { ok: false, code: 'closed' });
  land({ status: 409, body: { error: { code: 'invalid_state', message: 'the session is over' } } });
  await sleep(20);
  assert.deepEqual(errors, [], 'the page closed the session: its own command is no stray error');
});

test('requestTimeout that is no bound (NaN, 0, negative) is the default, and one past the longest timer is that, not an abort at once', async (t) => {
  for (const requestTimeout of [Number.NaN, 0, -1, 2 ** 31]) {
    const { srv, pay } = await openAnswering(t, { requestTimeout, resends: 0 });
    srv.onCommand = async () => {
      await sleep(15);
      return { status: 202, body: {} };
    };
    assert.deepEqual(await outcome(pay.pay(CARD)), { ok: true, type: 'ack' }, `requestTimeout ${requestTimeout}`);
    pay.close();
  }
});

test('resends that is no count (NaN, negative, Infinity, a string) is the default; 0 sends once', async (t) => {
  for (const [resends, requests] of [[Number.NaN, 3], [-1, 3], [Infinity, 3], ['5', 3], [1.7, 2], [0, 1]]) {
    const { srv, pay } = await openAnswering(t, { resends }, () => PROXY_502);
    assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'connection_lost' }, `resends ${resends}`);
    assert.equal(srv.commands.length, requests, `resends ${resends}`);
    pay.close();
  }
});

test('resendDelay that is no delay (NaN, negative) is the default, not a resend at once', async (t) => {
  for (const resendDelay of [Number.NaN, -5]) {
    const { srv, pay } = await openAnswering(t, { resends: 1, resendDelay }, () => PROXY_502);
    const at = [];
    const answer = srv.onCommand;
    srv.onCommand = (...args) => {
      at.push(Date.now());
      return answer(...args);
    };
    await outcome(pay.pay(CARD));
    assert.equal(at.length, 2);
    assert.ok(at[1] - at[0] >= 900, `resendDelay ${resendDelay}: sent again after ${at[1] - at[0]} ms`);
    pay.close();
  }
});

test('a pay refused idempotency_key_reused is settled with it, once: no loop, and nothing is left unknown', async (t) => {
  const { srv, pay } = await openAnswering(t, { resends: 3 }, () => PROXY_502);
  let n = 0;
  srv.onCommand = () => {
    n += 1;
    return n === 1
      ? PROXY_502
      : { status: 422, body: { error: { code: 'idempotency_key_reused', message: 'another body' } } };
  };
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'idempotency_key_reused' });
  assert.equal(srv.commands.length, 2);
});

/** A page on SSE whose commands `answer` answers (each call, one request). */
async function openAnswering(t, options, answer = () => ({ status: 202, body: {} })) {
  const page = await connected(t, 'sse', { options: { silenceTimeout: 60_000, resendDelay: 1, ...options } });
  page.srv.onCommand = async () => answer();
  return page;
}
