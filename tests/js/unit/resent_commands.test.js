// A pay or retry sent over HTTP (on SSE or long-polling) carries an `Idempotency-Key`,
// one per command (per intent of the customer), kept for that command. When its answer
// is lost (the request failed, a proxy's 502/503/504, paylive's 503 `shutting_down` or
// `engine_unavailable`) it is sent again, the same request with the same key, a bounded
// number of times: the server answers what it did (the kept answer, or 202 with the
// attempt that request started) and never decides it twice (protocol 3.1). Only when
// those fail too is the outcome unknown, and the page asks for the session's state as
// before. So is every other command over HTTP (cancel, interrupt, check, seen): each
// route keeps the key (protocol 3.1). A socket's frames carry their key too (protocol
// 4.1, v1.2): socket_resends.test.js.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { until } from './fake_server.js';
import { CARD, connected, outcome } from './page.js';

const PROXY_502 = '<html><body><h1>502 Bad Gateway</h1></body></html>';
const SHUTTING_DOWN = { code: 'shutting_down', message: 'this worker stopped before it answered' };
const IN_USE = { code: 'idempotency_key_in_use', message: 'a request with this Idempotency-Key is running' };

const openPage = (t, transport, options = {}) =>
  connected(t, transport, { options: { silenceTimeout: 60_000, resendDelay: 1, ...options } });

/** The command requests made to `path` (`attempts`, `cancel`, ...). */
const sentTo = (srv, path) => srv.commands.filter((c) => c.path.endsWith(`/${path}`));

/** Answer the command requests in turn with `answers` (the last one for any after them). */
function answering(srv, ...answers) {
  let n = 0;
  srv.onCommand = async (url, body, init) => {
    const answer = answers[Math.min(n, answers.length - 1)];
    n += 1;
    return typeof answer === 'function' ? answer(url, body, init) : answer;
  };
}

for (const transport of ['sse', 'polling']) {
  test(`on ${transport}, a pay whose answer a proxy lost is sent again with the same key, and its answer settles it`, async (t) => {
    const { srv, win, pay, turns } = await openPage(t, transport);
    // paylive started the attempt; the proxy in front of it lost the answer.
    answering(srv,
      () => {
        srv.emit({ status: 'processing', attempt: 1, deadline: Date.now() + 30_000 }, 'attempt_started');
        return { status: 502, text: PROXY_502 };
      },
      { status: 202, body: {} }, // the kept answer, for the same key
    );
    assert.deepEqual(await outcome(pay.pay(CARD)), { ok: true, type: 'ack' });
    const sent = sentTo(srv, 'attempts');
    assert.equal(sent.length, 2, 'sent once, then once again');
    assert.ok(sent[0].key, 'a pay over HTTP carries an Idempotency-Key');
    assert.equal(sent[1].key, sent[0].key, 'the same request again carries the same key');
    assert.deepEqual(sent[1].body, sent[0].body, 'and the same body (another one would be idempotency_key_reused)');
    assert.equal(pay.outcomeUnknown, false, 'the server said what it did: nothing is unknown');
    await until(() => pay.status === 'processing');
    assert.deepEqual({ guarded: win.guarded(), turns }, { guarded: true, turns: [true] });
  });
}

test('a key is 1 to 255 printable characters, and each pay or retry (each intent) has its own', async (t) => {
  const { srv, pay } = await openPage(t, 'sse');
  answering(srv, { status: 409, body: { error: { code: 'invalid_state', message: 'no' } } });
  await outcome(pay.pay(CARD));
  await outcome(pay.pay(CARD));
  await outcome(pay.retry());
  const keys = sentTo(srv, 'attempts').map((c) => c.key);
  assert.equal(keys.length, 3, 'a refusal is an answer: nothing sent again');
  assert.equal(new Set(keys).size, 3, 'the customer paying again is a new request, with a new key');
  for (const key of keys) assert.match(key, /^[\x21-\x7e]{1,255}$/);
});

test('a pay cut by a stopping worker (503 shutting_down) is sent again with its key, to another worker', async (t) => {
  const { srv, pay } = await openPage(t, 'polling');
  answering(srv, { status: 503, body: { error: SHUTTING_DOWN } }, { status: 202, body: {} });
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: true, type: 'ack' });
  const sent = sentTo(srv, 'attempts');
  assert.deepEqual(sent.map((c) => c.key), [sent[0].key, sent[0].key]);
});

test('a retry whose request failed is sent again; an answer of engine_unavailable too', async (t) => {
  const { srv, pay } = await openPage(t, 'sse');
  answering(srv,
    () => { throw new TypeError('Failed to fetch'); },
    { status: 503, body: { error: { code: 'engine_unavailable', message: 'the store did not answer' } } },
    { status: 202, body: {} },
  );
  assert.deepEqual(await outcome(pay.retry(CARD)), { ok: true, type: 'ack' });
  assert.equal(new Set(sentTo(srv, 'attempts').map((c) => c.key)).size, 1);
  assert.equal(sentTo(srv, 'attempts').length, 3);
});

test('the first request still running when the same key comes again (409 idempotency_key_in_use): asked again after the delay', async (t) => {
  const { srv, pay } = await openPage(t, 'sse');
  answering(srv, { status: 504, text: '<html>504</html>' }, { status: 409, body: { error: IN_USE } }, { status: 202, body: {} });
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: true, type: 'ack' });
  assert.equal(sentTo(srv, 'attempts').length, 3);
});

test('sent again a bounded number of times: when every answer is lost the outcome is unknown, and the session tells', async (t) => {
  const { srv, win, pay, snapshots } = await openPage(t, 'sse', { resends: 2 });
  answering(srv, { status: 502, text: PROXY_502 });
  const before = snapshots();
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'connection_lost' });
  const sent = sentTo(srv, 'attempts');
  assert.equal(sent.length, 3, 'once, and twice again');
  assert.equal(new Set(sent.map((c) => c.key)).size, 1);
  assert.deepEqual({ unknown: pay.outcomeUnknown, guarded: win.guarded() }, { unknown: true, guarded: true });
  await until(() => snapshots() > before && !pay.outcomeUnknown);
  assert.equal(win.guarded(), false);
});

test('key in use to the end: the first request is still running, so the outcome is unknown until the session tells', async (t) => {
  const { srv, pay, snapshots } = await openPage(t, 'sse', { resends: 1 });
  answering(srv, { status: 502, text: PROXY_502 }, { status: 409, body: { error: IN_USE } });
  const before = snapshots();
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'idempotency_key_in_use' });
  assert.equal(pay.outcomeUnknown, true, 'the pay may yet start the charge');
  await until(() => snapshots() > before && !pay.outcomeUnknown);
});

test('a cancel whose answer a proxy lost is sent again with the same key, and its kept 200 settles it', async (t) => {
  const { srv, pay } = await openPage(t, 'sse');
  // Before, the cancel was not sent again (its route kept no key): it settled
  // connection_lost though paylive had cancelled the session.
  answering(srv, { status: 502, text: PROXY_502 }, { status: 200, body: {} });
  assert.deepEqual(await outcome(pay.cancel()), { ok: true, type: 'ack' });
  const sent = sentTo(srv, 'cancel');
  assert.equal(sent.length, 2, 'sent once, then once again');
  assert.ok(sent[0].key, 'a cancel over HTTP carries an Idempotency-Key');
  assert.deepEqual(sent.map((c) => c.key), [sent[0].key, sent[0].key]);
  assert.deepEqual(sent[1].body, sent[0].body);
  assert.equal(pay.outcomeUnknown, false, 'a cancel leaves no payment unknown');
});

test('interrupt and check carry a key of their own too, and are sent again with it when their answer is lost', async (t) => {
  const { srv, pay } = await openPage(t, 'polling');
  const sent = [];
  for (const [path, send] of [
    ['interrupt', () => pay.interrupt()],
    ['check', () => pay.check()],
  ]) {
    answering(srv, { status: 504, text: '<html>504</html>' }, { status: 200, body: {} });
    assert.deepEqual(await outcome(send()), { ok: true, type: 'ack' }, path);
    const keys = sentTo(srv, path).map((c) => c.key);
    assert.equal(keys.length, 2, path);
    assert.ok(keys[0] && keys[1] === keys[0], path);
    sent.push(keys[0]);
  }
  assert.equal(new Set(sent).size, sent.length, 'each command has its own key');
});

test('on the socket a pay frame carries its key, and a pay lost with it is sent again there, not over HTTP', async (t) => {
  const { srv, pay } = await openPage(t, 'websocket');
  const frames = [];
  srv.onSocketCommand = (ws, frame) => {
    frames.push(frame);
    setTimeout(() => ws.kill(), 0); // the answer is lost with the socket, each time
  };
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'connection_lost' });
  await until(() => pay.connection === 'connected' && !pay.outcomeUnknown);
  assert.equal(frames.length, 3, 'sent, then sent again `resends` (2) times');
  assert.deepEqual(frames.map((f) => Object.keys(f).sort()), Array(3).fill(['key', 'payment_method', 'ref', 'type']));
  assert.equal(new Set(frames.map((f) => f.key)).size, 1, 'with the same key');
  assert.equal(srv.commands.length, 0);
});
