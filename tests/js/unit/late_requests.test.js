// A command sent over HTTP (SSE, long-polling) whose request never ends (a connection
// that swallows it) is bounded by `requestTimeout`: the request is aborted, and the
// command is then sent again with its Idempotency-Key, as after a lost answer. When no
// request of it ends, its outcome is unknown and the session's state, asked for, tells:
// the page is never left "checking" forever. The socket's commands keep
// `commandTimeout`.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { until } from './fake_server.js';
import { CARD, connected, outcome } from './page.js';

const openPage = (t, transport, options = {}) => connected(t, transport, {
  options: { backoffBase: 1, backoffMax: 2, requestTimeout: 30, resendDelay: 1, silenceTimeout: 60_000, ...options },
});

/** Requests that never end: each is only ever aborted (counted in `srv.abortedCommands`). */
function swallow(srv) {
  srv.abortedCommands = 0;
  return (url, body, init) => new Promise((resolve, reject) => {
    init.signal?.addEventListener('abort', () => {
      srv.abortedCommands += 1;
      reject(new DOMException('The operation was aborted.', 'AbortError'));
    });
  });
}

for (const transport of ['sse', 'polling']) {
  test(`on ${transport}, a pay whose request never ends is aborted in time and sent again with its key`, async (t) => {
    const { srv, pay } = await openPage(t, transport);
    const hang = swallow(srv);
    let n = 0;
    srv.onCommand = (url, body, init) => (n++ === 0 ? hang(url, body, init) : { status: 202, body: {} });
    assert.deepEqual(await outcome(pay.pay(CARD)), { ok: true, type: 'ack' });
    const sent = srv.commands.filter((c) => c.path.endsWith('/attempts'));
    assert.equal(srv.abortedCommands, 1, 'the swallowed request was aborted, not left open');
    assert.deepEqual(sent.map((c) => c.key), [sent[0].key, sent[0].key]);
    assert.equal(pay.outcomeUnknown, false);
  });

  test(`on ${transport}, a pay none of whose requests ever ends: unknown, then a snapshot saying created ends the check`, async (t) => {
    const { srv, win, pay, snapshots } = await openPage(t, transport, { resends: 1 });
    srv.onCommand = swallow(srv);
    const before = snapshots();
    assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'timeout' });
    assert.equal(srv.abortedCommands, 2, 'each request aborted after requestTimeout');
    assert.deepEqual({ unknown: pay.outcomeUnknown, guarded: win.guarded() }, { unknown: true, guarded: true });
    // Nothing of it can land unanswered any more (each request was aborted, and any that
    // reached paylive carried the key): the session's state says what became of it.
    await until(() => snapshots() > before && !pay.outcomeUnknown);
    assert.deepEqual({ status: pay.status, guarded: win.guarded() }, { status: 'created', guarded: false });
  });
}

test('a cancel whose request never ends is aborted after requestTimeout and sent again with its key, then settled timeout', async (t) => {
  const { srv, win, pay } = await openPage(t, 'sse', { resends: 1 });
  srv.onCommand = swallow(srv);
  assert.deepEqual(await outcome(pay.cancel()), { ok: false, code: 'timeout' });
  const keys = srv.commands.map((c) => c.key);
  assert.deepEqual({ aborted: srv.abortedCommands, keys }, { aborted: 2, keys: [keys[0], keys[0]] });
  assert.deepEqual({ unknown: pay.outcomeUnknown, guarded: win.guarded() }, { unknown: false, guarded: false });
});

test('a fetch that ignores the abort signal is bounded all the same', async (t) => {
  const { srv, pay, snapshots } = await openPage(t, 'sse', { resends: 0 });
  srv.onCommand = () => new Promise(() => {}); // deaf to the signal too
  const before = snapshots();
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'timeout' });
  await until(() => snapshots() > before && !pay.outcomeUnknown);
});
