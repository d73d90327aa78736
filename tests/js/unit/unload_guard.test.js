// The leave-page warning while a payment's outcome is unknown: a `pay` or `retry` whose
// answer is lost (with the socket, with its HTTP request, or never comes in time) may
// have started a charge. The warning holds from the moment the command is sent until
// the session's state, heard after the loss, says whether it is in progress.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ID, fakeServer, fakeWindow, until } from './fake_server.js';
import { CARD, connected, outcome, pageSession } from './page.js';

/** A page connected over `transport`, `extra` over the shared options. */
const openPage = (t, transport, extra = {}, { hang = false } = {}) =>
  connected(t, transport, { options: extra, hang });

/** Where the page's last connection of `kind` ('ws', 'sse', 'poll') resumed from: null for none. */
function lastSince(srv, kind) {
  const url = kind === 'ws' ? srv.sockets.at(-1).url : kind === 'sse' ? srv.sources.at(-1).url : null;
  const since = new URL(url).searchParams.get('since');
  return since === null ? null : Number(since);
}

test('a pay the server took, its socket lost before the ack: the warning holds through the reconnect until the session says processing, then its end', async (t) => {
  const { srv, win, pay, turns } = await openPage(t, 'websocket');
  // The server starts the attempt; the socket dies before the ack or the state reach the page.
  srv.onSocketCommand = (ws, frame) => {
    if (frame.type !== 'pay') return;
    setTimeout(() => {
      ws.kill(1006);
      srv.emit({ status: 'processing', attempt: 1, deadline: Date.now() + 30_000 }, 'attempt_started');
    }, 0);
  };
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'connection_lost' });
  assert.deepEqual({ guardActive: pay.guardActive, listener: win.guarded() }, { guardActive: true, listener: true },
    'the answer was lost, the charge may have started: leaving must still ask');
  await until(() => pay.status === 'processing');
  srv.emit({ status: 'interrupted', attempt: 1, deadline: null, last_error: { reason: 'timeout' } }, 'timeout');
  await until(() => pay.status === 'interrupted');
  assert.equal(win.guarded(), false);
  assert.deepEqual(turns, [true, false], 'on from the pay, off only once the attempt ended: never off in between');
});

test('a pay that never reached the server, its socket lost: the warning holds until a snapshot after the reconnect says created', async (t) => {
  const { srv, win, pay, turns, snapshots } = await openPage(t, 'websocket');
  srv.onSocketCommand = (ws, frame) => {
    if (frame.type === 'pay') setTimeout(() => ws.kill(1006), 0);
  };
  const before = snapshots();
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'connection_lost' });
  assert.equal(win.guarded(), true, 'unknown until the session is heard from');
  // Nothing happened on the server: a resume with `since` would replay nothing, so the
  // page asks for a snapshot (no `since`), and only that tells it.
  await until(() => snapshots() > before);
  assert.equal(lastSince(srv, 'ws'), null);
  assert.deepEqual({ status: pay.status, guarded: win.guarded(), turns }, { status: 'created', guarded: false, turns: [true, false] });
});

test('a pay with no answer in time on a live socket: the warning holds, and the page asks for the session again', async (t) => {
  // No silence bound in reach: only the page's own asking can bring a snapshot.
  const { srv, win, pay, turns, snapshots } = await openPage(t, 'websocket', { commandTimeout: 40, silenceTimeout: 60_000 });
  srv.onSocketCommand = () => {}; // taken or not: no answer comes
  const before = snapshots();
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'timeout' });
  assert.equal(win.guarded(), true);
  await until(() => snapshots() > before);
  assert.equal(lastSince(srv, 'ws'), null);
  assert.deepEqual({ guarded: win.guarded(), turns }, { guarded: false, turns: [true, false] });
});

for (const [transport, kind] of [['sse', 'sse'], ['polling', 'poll']]) {
  test(`on ${transport}, a pay whose HTTP request fails after sending: the warning holds until a fresh snapshot`, async (t) => {
    // No silence bound in reach, and a held poll that is never answered: only the
    // page's own asking can bring a snapshot.
    const { srv, win, pay, turns, snapshots } = await openPage(t, transport, { silenceTimeout: 60_000 }, { hang: true });
    srv.onCommand = async () => {
      throw new TypeError('Failed to fetch'); // sent, and the answer lost on the way back
    };
    const before = snapshots();
    assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'connection_lost' });
    assert.equal(win.guarded(), true);
    // The stream or poll still up would say nothing if nothing happened: made again without `since`.
    await until(() => snapshots() > before);
    if (kind === 'sse') assert.equal(lastSince(srv, 'sse'), null);
    assert.deepEqual({ guarded: win.guarded(), turns }, { guarded: false, turns: [true, false] });
  });

  test(`on ${transport}, a pay the server took, its HTTP answer lost: the warning never drops while processing`, async (t) => {
    const { srv, win, pay, turns } = await openPage(t, transport);
    srv.onCommand = async () => {
      srv.emit({ status: 'processing', attempt: 1, deadline: Date.now() + 30_000 }, 'attempt_started');
      throw new TypeError('Failed to fetch');
    };
    assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'connection_lost' });
    assert.equal(win.guarded(), true);
    await until(() => pay.status === 'processing');
    srv.emit({ status: 'succeeded', deadline: null }, 'succeeded');
    await until(() => pay.status === 'succeeded');
    assert.deepEqual({ guarded: win.guarded(), turns }, { guarded: false, turns: [true, false] });
  });
}

test('a retry lost with the socket holds the warning as a pay does', async (t) => {
  const { srv, win, pay, turns } = await openPage(t, 'websocket');
  srv.emit({ status: 'interrupted', attempt: 1, last_error: { reason: 'timeout' }, retry_at: Date.now() }, 'timeout');
  await until(() => pay.status === 'interrupted');
  srv.onSocketCommand = (ws, frame) => {
    if (frame.type === 'retry') setTimeout(() => ws.kill(1006), 0);
  };
  assert.deepEqual(await outcome(pay.retry()), { ok: false, code: 'connection_lost' });
  assert.equal(win.guarded(), true);
  await until(() => !win.guarded());
  assert.deepEqual({ status: pay.status, turns }, { status: 'interrupted', turns: [true, false] });
});

test('a pay lost with a connection that ends for good keeps the warning (nothing can tell any more); close() removes it', async (t) => {
  const { srv, win, pay } = await openPage(t, 'websocket');
  srv.onSocketCommand = (ws, frame) => {
    if (frame.type === 'pay') setTimeout(() => ws.kill(4404, 'the session is gone'), 0);
  };
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'connection_lost' });
  await until(() => pay.connection === 'closed');
  assert.equal(win.guarded(), true);
  pay.close();
  assert.equal(win.guarded(), false);
});

test('a pay refused by the server drops the warning at once: its fate is known', async (t) => {
  const { srv, win, pay, turns } = await openPage(t, 'websocket');
  srv.onSocketCommand = (ws, frame) => {
    ws.deliver({ type: 'error', session: ID, seq: 0, ts: Date.now(), data: { code: 'invalid_state', message: 'no', ref: frame.ref } });
  };
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'invalid_state' });
  assert.deepEqual({ guarded: win.guarded(), turns, opened: srv.sockets.length }, { guarded: false, turns: [true, false], opened: 1 });
});
