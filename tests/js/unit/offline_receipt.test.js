// The outcome receipt (protocol 10) sent while the page is not connected goes over HTTP
// (`POST .../seen`) as every other HTTP command does: with an Idempotency-Key, each
// request bounded by `requestTimeout`, sent again with that key when its answer is
// lost, and stopped by close(). It once went out bare: no key, no bound (a connection
// that swallowed it left the promise pending for ever), no resend, and close() did not
// stop it.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { sleep, until } from './fake_server.js';
import { connected } from './page.js';

const PROXY_502 = { status: 502, text: '<html><body><h1>502 Bad Gateway</h1></body></html>' };

/** How a receipt's promise settled: `{ok: true, seenAt}` or `{ok: false, code}`. */
const settled = (promise) =>
  promise.then((session) => ({ ok: true, seenAt: session?.outcome_seen_at }), (err) => ({ ok: false, code: err.code }));

/**
 * A page whose session succeeded, then lost its stream for good (the server no longer
 * lets one open): not connected, so the receipt goes over HTTP.
 */
async function endedOffline(t, options = {}) {
  const page = await connected(t, 'sse', {
    options: { silenceTimeout: 60_000, requestTimeout: 30, resendDelay: 1, backoffBase: 50, backoffMax: 100, ...options },
  });
  const { srv, pay } = page;
  srv.emit({ status: 'succeeded' }, 'succeeded');
  await until(() => pay.status === 'succeeded');
  srv.sse = 'blocked';
  pay.drop();
  await until(() => pay.connection !== 'connected');
  return page;
}

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

const seenRequests = (srv) => srv.commands.filter((c) => c.path.endsWith('/seen'));

test('a receipt whose requests are swallowed is aborted after requestTimeout, sent again with its key, then rejected timeout', { timeout: 3_000 }, async (t) => {
  const { srv, pay } = await endedOffline(t, { resends: 1 });
  srv.onCommand = swallow(srv);
  assert.deepEqual(await settled(pay.acknowledgeOutcome()), { ok: false, code: 'timeout' });
  const keys = seenRequests(srv).map((c) => c.key);
  assert.equal(keys.length, 2);
  assert.ok(typeof keys[0] === 'string' && keys[0].length > 0, 'the receipt carries an Idempotency-Key');
  assert.deepEqual({ keys, aborted: srv.abortedCommands }, { keys: [keys[0], keys[0]], aborted: 2 });
  assert.deepEqual(seenRequests(srv)[0].body, { status: 'succeeded' });
});

test('a receipt whose first answer a proxy lost is sent again with the same key and resolves with the session', { timeout: 3_000 }, async (t) => {
  const { srv, pay } = await endedOffline(t);
  let n = 0;
  srv.onCommand = async () => {
    n += 1;
    return n === 1 ? PROXY_502 : { status: 200, body: { ...srv.session, outcome_seen_at: 1234 } };
  };
  assert.deepEqual(await settled(pay.acknowledgeOutcome()), { ok: true, seenAt: 1234 });
  const keys = seenRequests(srv).map((c) => c.key);
  assert.ok(keys[0], 'the receipt carries an Idempotency-Key');
  assert.deepEqual(keys, [keys[0], keys[0]]);
});

test('a receipt refused is rejected with the code, once, and may be made again', { timeout: 3_000 }, async (t) => {
  const { srv, pay } = await endedOffline(t);
  srv.onCommand = async () => ({ status: 409, body: { error: { code: 'invalid_state', message: 'not this outcome' } } });
  assert.deepEqual(await settled(pay.acknowledgeOutcome()), { ok: false, code: 'invalid_state' });
  assert.equal(seenRequests(srv).length, 1, 'a refusal is not sent again');
  srv.onCommand = async () => ({ status: 200, body: { ...srv.session, outcome_seen_at: 99 } });
  assert.deepEqual(await settled(pay.acknowledgeOutcome()), { ok: true, seenAt: 99 });
});

test('close() while a receipt request is held: it is aborted and rejected closed, and nothing more is sent', { timeout: 3_000 }, async (t) => {
  const { srv, pay } = await endedOffline(t, { requestTimeout: 60_000, resends: 3, resendDelay: 20 });
  srv.onCommand = swallow(srv);
  const receipt = settled(pay.acknowledgeOutcome());
  await until(() => seenRequests(srv).length === 1);
  pay.close();
  assert.deepEqual(await receipt, { ok: false, code: 'closed' });
  // Longer than every resend the loop had left (3 x 20 ms) would take.
  await sleep(150);
  assert.deepEqual({ sent: seenRequests(srv).length, aborted: srv.abortedCommands }, { sent: 1, aborted: 1 });
});

test('close() while a receipt waits to be sent again: nothing more is sent', { timeout: 3_000 }, async (t) => {
  const { srv, pay } = await endedOffline(t, { resends: 3, resendDelay: 40 });
  srv.onCommand = async () => PROXY_502;
  const receipt = settled(pay.acknowledgeOutcome());
  await until(() => seenRequests(srv).length === 1);
  pay.close();
  assert.deepEqual(await receipt, { ok: false, code: 'closed' });
  await sleep(150);
  assert.equal(seenRequests(srv).length, 1);
});
