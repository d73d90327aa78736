// A command sent on the socket carries `key`, its Idempotency-Key (protocol 4.1, v1.2).
// A pay, retry or cancel whose answer was lost with the socket (the socket dropped before
// the server answered) is sent again with the same key on the next connection, a socket
// or HTTP, at most `resends` times: the server answers what the first did and decides it
// once. Only when those are lost too is its outcome unknown. A command the page closed
// is not sent again.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { fakeServer, fakeWindow, until } from './fake_server.js';
import { CARD, connected, outcome, pageSession } from './page.js';

/** The frames the fake server's sockets took, but pings. */
function frames(srv) {
  const taken = [];
  srv.onSocketCommand = (ws, frame) => taken.push({ ws, frame });
  return taken;
}

const ack = (srv, ws, frame) =>
  ws.deliver({ type: 'ack', session: 'ps_1', seq: srv.seq, ts: Date.now(), data: { ref: frame.ref } });

test('every socket command carries a key of its own', async (t) => {
  const { srv, pay } = await connected(t, 'websocket');
  const taken = frames(srv);
  const settled = [pay.pay(CARD), pay.cancel(), pay.check(), pay.interrupt()].map(outcome);
  await until(() => taken.length === 4);
  for (const { ws, frame } of taken) ack(srv, ws, frame);
  await Promise.all(settled);
  const keys = taken.map(({ frame }) => frame.key);
  for (const key of keys) assert.match(key, /^[\x21-\x7e]{1,255}$/);
  assert.equal(new Set(keys).size, 4);
});

test('a pay lost with the socket is sent again on the next socket with the same key and ref', async (t) => {
  const { srv, pay } = await connected(t, 'websocket');
  const taken = frames(srv);
  const paid = outcome(pay.pay(CARD));
  await until(() => taken.length === 1);
  taken[0].ws.kill(1006); // the answer is lost with the socket
  await until(() => taken.length === 2);
  const [first, again] = taken.map(({ frame }) => frame);
  assert.notEqual(taken[1].ws, taken[0].ws, 'on the next connection');
  assert.ok(first.key);
  assert.deepEqual(again, first, 'the same request: same key, same fields');
  assert.equal(pay.outcomeUnknown, false, 'not unknown while it is being sent again');
  ack(srv, taken[1].ws, again);
  assert.deepEqual(await paid, { ok: true, type: 'ack' });
  assert.equal(pay.outcomeUnknown, false);
});

test('a pay lost with the socket is sent again over HTTP with its key when the page falls back', async (t) => {
  // A middlebox passes the socket's handshake and holds every frame: the pay goes out on
  // it, nothing comes back, and the page moves down to an event stream.
  const srv = fakeServer({ websocket: 'held' });
  const taken = frames(srv);
  const pay = pageSession(srv, fakeWindow(), { transports: ['websocket', 'sse'], firstMessageTimeout: 50 });
  t.after(() => pay.close());
  await until(() => srv.sockets[0]?.held && pay.connection === 'connected');
  const paid = outcome(pay.pay(CARD));
  await until(() => taken.length === 1);
  await until(() => srv.commands.length === 1);
  const [resent] = srv.commands;
  assert.ok(resent.path.endsWith('/attempts'));
  assert.equal(resent.key, taken[0].frame.key, 'the socket frame\'s key, as its Idempotency-Key');
  assert.deepEqual(resent.body, { payment_method: taken[0].frame.payment_method }, 'the body the route reads');
  assert.deepEqual(await paid, { ok: true, type: 'ack' });
  assert.equal(pay.transport, 'sse');
});

test('sent again at most `resends` times, then connection_lost with the outcome unknown', async (t) => {
  const { srv, pay } = await connected(t, 'websocket', { options: { resends: 1 } });
  const taken = frames(srv);
  const paid = outcome(pay.cancel());
  await until(() => taken.length === 1);
  taken[0].ws.kill(1006);
  await until(() => taken.length === 2);
  taken[1].ws.kill(1006);
  assert.deepEqual(await paid, { ok: false, code: 'connection_lost' });
  const payment = outcome(pay.pay(CARD));
  await until(() => taken.length === 3);
  assert.notEqual(taken[2].frame.key, taken[0].frame.key, 'a new command, a new key');
  taken[2].ws.kill(1006);
  await until(() => taken.length === 4);
  taken[3].ws.kill(1006);
  assert.deepEqual(await payment, { ok: false, code: 'connection_lost' });
  assert.equal(pay.outcomeUnknown, true);
});

test('an interrupt, check or seen lost with the socket is not sent again', async (t) => {
  const { srv, pay } = await connected(t, 'websocket');
  const taken = frames(srv);
  const interrupted = outcome(pay.interrupt());
  await until(() => taken.length === 1);
  taken[0].ws.kill(1006);
  assert.deepEqual(await interrupted, { ok: false, code: 'connection_lost' });
  await until(() => srv.sockets.at(-1).live);
  assert.equal(taken.length, 1);
});

test('a pay the page closed is not sent again', async (t) => {
  const { srv, pay } = await connected(t, 'websocket');
  const taken = frames(srv);
  const paid = outcome(pay.pay(CARD));
  await until(() => taken.length === 1);
  pay.close();
  assert.deepEqual(await paid, { ok: false, code: 'closed' });
  // Nothing is left to send again, and nothing reconnects to send it.
  assert.deepEqual(pay.pendingCommands, []);
  assert.equal(pay.connection, 'closed');
  assert.equal(taken.length, 1);
});
