// A command sent over HTTP (on SSE or long-polling) answered 502, 503 or 504 by
// something in front of paylive (a proxy's or a load balancer's page) is no refusal:
// the request may have reached paylive and started the charge. A `pay` or `retry`
// answered so is settled as a lost answer is (`connection_lost`, `outcomeUnknown`, the
// leave-page warning held, a fresh snapshot asked for). paylive's own 503 (a JSON
// error such as `overloaded`) is a refusal: nothing was started (protocol 3.1).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { until } from './fake_server.js';
import { CARD, connected, outcome } from './page.js';

/**
 * A page connected over `transport` (no socket). `hang` (by default): its held polls are
 * never answered, and no silence bound is in reach, so only the page's own asking can
 * bring a snapshot.
 */
const openPage = (t, transport, { hang = true } = {}) =>
  connected(t, transport, { options: { silenceTimeout: 60_000 }, hang });

const PROXY_PAGES = {
  502: '<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>',
  503: '<!DOCTYPE html><html><body><h1>503 Service Temporarily Unavailable</h1></body></html>',
  504: '<html><body><h1>504 Gateway Time-out</h1></body></html>',
};

for (const transport of ['sse', 'polling']) {
  for (const status of [502, 503, 504]) {
    test(`on ${transport}, a pay answered ${status} by a proxy's page is an unknown outcome, not a refusal`, async (t) => {
      const { srv, win, pay, turns, snapshots } = await openPage(t, transport);
      srv.onCommand = async () => ({ status, text: PROXY_PAGES[status], headers: { 'Retry-After': '5' } });
      const before = snapshots();
      assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'connection_lost' });
      assert.deepEqual({ unknown: pay.outcomeUnknown, guarded: win.guarded() }, { unknown: true, guarded: true },
        'the pay may have reached paylive and started the charge: leaving must still ask');
      // The connection still up would say nothing if nothing happened: made again without `since`.
      await until(() => snapshots() > before);
      if (transport === 'sse') assert.equal(new URL(srv.sources.at(-1).url).searchParams.get('since'), null);
      assert.deepEqual({ unknown: pay.outcomeUnknown, guarded: win.guarded(), turns }, { unknown: false, guarded: false, turns: [true, false] });
    });
  }

  test(`on ${transport}, a retry answered 504 by a proxy holds the warning as a lost answer does`, async (t) => {
    const { srv, win, pay } = await openPage(t, transport, { hang: false });
    srv.emit({ status: 'interrupted', attempt: 1, last_error: { reason: 'timeout' }, retry_at: Date.now() }, 'timeout');
    await until(() => pay.status === 'interrupted');
    // The proxy gave up waiting; paylive went on and started the attempt.
    srv.onCommand = async () => {
      srv.emit({ status: 'processing', attempt: 2, deadline: Date.now() + 30_000 }, 'attempt_started');
      return { status: 504, text: PROXY_PAGES[504] };
    };
    assert.deepEqual(await outcome(pay.retry()), { ok: false, code: 'connection_lost' });
    assert.equal(win.guarded(), true);
    // The attempt under way (its state, or the snapshot asked for) tells; the status keeps the warning.
    await until(() => !pay.outcomeUnknown);
    assert.deepEqual({ status: pay.status, guarded: win.guarded() }, { status: 'processing', guarded: true });
  });

  test(`on ${transport}, a pay answered 503 with JSON that is not paylive's error is an unknown outcome`, async (t) => {
    const { srv, win, pay } = await openPage(t, transport);
    // A load balancer's own JSON (no `error.code` of paylive's 503s).
    srv.onCommand = async () => ({ status: 503, body: { message: 'no healthy upstream' } });
    assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'connection_lost' });
    assert.deepEqual({ unknown: pay.outcomeUnknown, guarded: win.guarded() }, { unknown: true, guarded: true });
    await until(() => !pay.outcomeUnknown);
  });

  test(`on ${transport}, paylive's own 503 overloaded is a refusal: nothing was started`, async (t) => {
    const { srv, win, pay, turns, snapshots } = await openPage(t, transport);
    srv.onCommand = async () => ({
      status: 503,
      body: { error: { code: 'overloaded', message: 'the server is at capacity; retry shortly' } },
      headers: { 'Retry-After': '1' },
    });
    const opened = srv.opened.length;
    const before = snapshots();
    assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'overloaded' });
    assert.deepEqual({ unknown: pay.outcomeUnknown, guarded: win.guarded(), turns }, { unknown: false, guarded: false, turns: [true, false] });
    // Known: the page does not ask for the session again.
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.deepEqual({ opened: srv.opened.length, snapshots: snapshots() }, { opened, snapshots: before });
  });
}

test('a 502 is never paylive\'s own answer, whatever its body says', async (t) => {
  const { srv, pay } = await openPage(t, 'sse');
  srv.onCommand = async () => ({ status: 502, body: { error: { code: 'overloaded', message: 'a proxy that copies the shape' } } });
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'connection_lost' });
  assert.equal(pay.outcomeUnknown, true);
  await until(() => !pay.outcomeUnknown);
});

test('a pay answered 500 (a fault, paylive\'s or a proxy\'s) is an unknown outcome: it may have been applied', async (t) => {
  const { srv, win, pay } = await openPage(t, 'polling');
  srv.onCommand = async () => ({ status: 500, text: 'Internal Server Error' });
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'connection_lost' });
  assert.deepEqual({ unknown: pay.outcomeUnknown, guarded: win.guarded() }, { unknown: true, guarded: true });
  await until(() => !pay.outcomeUnknown);
});

test('a pay cut by a stopping worker (503 shutting_down) is an unknown outcome: it may have been applied', async (t) => {
  const { srv, win, pay } = await openPage(t, 'sse');
  srv.onCommand = async () => ({
    status: 503,
    body: { error: { code: 'shutting_down', message: 'this worker stopped before it answered' } },
  });
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'connection_lost' });
  assert.deepEqual({ unknown: pay.outcomeUnknown, guarded: win.guarded() }, { unknown: true, guarded: true });
  await until(() => !pay.outcomeUnknown);
});

test('a cancel answered 502 by a proxy settles connection_lost, and leaves no payment unknown', async (t) => {
  const { srv, win, pay } = await openPage(t, 'sse');
  srv.onCommand = async () => ({ status: 502, text: PROXY_PAGES[502] });
  assert.deepEqual(await outcome(pay.cancel()), { ok: false, code: 'connection_lost' });
  assert.deepEqual({ unknown: pay.outcomeUnknown, guarded: win.guarded() }, { unknown: false, guarded: false });
});

test('a 4xx proxy page stays a refusal (the request never got past the proxy)', async (t) => {
  const { srv, pay } = await openPage(t, 'polling');
  srv.onCommand = async () => ({ status: 413, text: '<html><body>413 Request Entity Too Large</body></html>' });
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'error' });
  assert.equal(pay.outcomeUnknown, false);
});
