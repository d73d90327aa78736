// Commands while the connection is down: queued in order, sent when it is back, and
// never sent twice after a drop.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { CommandQueue } from '../../../client/paylive/commands.js';

function queue(options = {}) {
  let changes = 0;
  const commands = new CommandQueue({ maxQueue: 3, commandTimeout: 5_000, ...options }, () => {
    changes += 1;
  });
  return { commands, changes: () => changes };
}

/** A stand-in for the socket's `send`: records what went out, accepts while `up`. */
function link(up = true) {
  const sent = [];
  const send = (message) => {
    if (!send.up) return false;
    sent.push(message);
    return true;
  };
  send.up = up;
  send.sent = sent;
  return send;
}

const settled = (promise) =>
  promise.then(
    (value) => ({ ok: true, value }),
    (error) => ({ ok: false, code: error.code, name: error.name }),
  );

test('commands made offline wait, then go out in order with their refs', async () => {
  const { commands } = queue();
  const offline = link(false);
  const paid = settled(commands.add({ type: 'pay', payment_method: { card: '4242' } }));
  const cancelled = settled(commands.add({ type: 'cancel' }));
  commands.flush(offline);
  assert.deepEqual(offline.sent, []);
  assert.deepEqual(commands.pending, [
    { ref: 'c1', type: 'pay', sent: false },
    { ref: 'c2', type: 'cancel', sent: false },
  ]);

  const online = link(true);
  commands.flush(online);
  // Each with a key of its own (protocol 4.1, v1.2).
  const keys = online.sent.map((m) => m.key);
  assert.ok(keys.every((key) => typeof key === 'string' && key.length >= 1) && keys[0] !== keys[1], keys);
  assert.deepEqual(online.sent.map(({ key, ...m }) => m), [
    { type: 'pay', payment_method: { card: '4242' }, ref: 'c1' },
    { type: 'cancel', ref: 'c2' },
  ]);
  assert.deepEqual(commands.pending.map((c) => c.sent), [true, true]);

  const ack = { type: 'ack', data: { ref: 'c1' } };
  assert.equal(commands.settle('c1', null, ack), true);
  assert.deepEqual(await paid, { ok: true, value: ack });
  assert.equal(commands.settle('c2', Object.assign(new Error('no'), { code: 'invalid_state' })), true);
  assert.deepEqual(await cancelled, { ok: false, code: 'invalid_state', name: 'Error' });
  assert.deepEqual(commands.pending, []);
  assert.equal(commands.settle('c1', null, ack), false, 'a second answer finds nothing');
});

test('a send that fails midway keeps the rest queued, in order', () => {
  const { commands } = queue();
  for (const type of ['pay', 'cancel', 'interrupt']) commands.add({ type }).catch(() => {});
  const flaky = link(true);
  const send = (message) => {
    const ok = flaky(message);
    flaky.up = false; // the socket went down right after the first frame
    return ok;
  };
  commands.flush(send);
  assert.deepEqual(flaky.sent.map((m) => m.ref), ['c1']);
  const again = link(true);
  commands.flush(again);
  assert.deepEqual(again.sent.map((m) => m.ref), ['c2', 'c3']);
  commands.rejectAll(new Error('done'));
});

test('a drop rejects what was sent with connection_lost and keeps what was queued (resends 0)', async () => {
  const { commands } = queue({ resends: 0 });
  const sent = settled(commands.add({ type: 'pay', payment_method: { card: '4242' } }));
  commands.flush(link(true));
  const queued = settled(commands.add({ type: 'cancel' }));
  commands.connectionLost();
  assert.deepEqual(await sent, { ok: false, code: 'connection_lost', name: 'PayliveError' });
  assert.deepEqual(commands.pending, [{ ref: 'c2', type: 'cancel', sent: false }]);
  // Back online: only the queued command goes out; the pay is not sent twice.
  const online = link(true);
  commands.flush(online);
  assert.deepEqual(online.sent.map((m) => m.ref), ['c2']);
  commands.settle('c2', null, {});
  assert.equal((await queued).ok, true);
});

test('a drop queues a sent pay, retry or cancel again first, the same frame, and rejects the others', async () => {
  const { commands } = queue({ maxQueue: 8, resends: 1 });
  const paid = settled(commands.add({ type: 'pay', payment_method: { card: '4242' } }));
  const interrupted = settled(commands.add({ type: 'interrupt', reason: 'network_error' }));
  const first = link(true);
  commands.flush(first);
  const queued = settled(commands.add({ type: 'cancel' }));
  commands.connectionLost();
  assert.deepEqual(await interrupted, { ok: false, code: 'connection_lost', name: 'PayliveError' });
  assert.equal(commands.outcomeUnknown, false, 'the pay is not lost yet');
  assert.deepEqual(commands.pending, [
    { ref: 'c1', type: 'pay', sent: false },
    { ref: 'c3', type: 'cancel', sent: false },
  ]);
  const again = link(true);
  commands.flush(again);
  assert.deepEqual(again.sent.map((m) => m.ref), ['c1', 'c3']);
  assert.deepEqual(again.sent[0], first.sent[0], 'the same key, ref and fields');
  // Lost again: `resends` (1) is spent; the pay's outcome is unknown, the cancel goes again.
  commands.connectionLost();
  assert.deepEqual(await paid, { ok: false, code: 'connection_lost', name: 'PayliveError' });
  assert.equal(commands.outcomeUnknown, true);
  assert.deepEqual(commands.pending, [{ ref: 'c3', type: 'cancel', sent: false }]);
  commands.rejectAll(new Error('done'));
  assert.equal((await queued).ok, false);
});

test('a full queue refuses more, and a settled queued command frees its place', async () => {
  const { commands } = queue({ maxQueue: 2 });
  const first = settled(commands.add({ type: 'pay' }));
  commands.add({ type: 'cancel' }).catch(() => {});
  assert.deepEqual(await settled(commands.add({ type: 'cancel' })), {
    ok: false, code: 'queue_full', name: 'PayliveError',
  });
  commands.settle('c1', new Error('gave up'));
  assert.equal((await first).ok, false);
  const third = commands.add({ type: 'interrupt' });
  const online = link(true);
  commands.flush(online);
  assert.deepEqual(online.sent.map((m) => m.ref), ['c2', 'c3']);
  commands.rejectAll(new Error('done'));
  await assert.rejects(third);
});

test('a sent command with no answer in time is rejected with timeout', async () => {
  const { commands } = queue({ commandTimeout: 20 });
  const pay = settled(commands.add({ type: 'pay' }));
  const queuedOnly = commands.add({ type: 'cancel' });
  const once = link(true);
  commands.flush((message) => message.type === 'pay' && once(message));
  assert.deepEqual(await pay, { ok: false, code: 'timeout', name: 'PayliveError' });
  // The timeout runs from sending: a command still queued waits as long as it must.
  assert.deepEqual(commands.pending, [{ ref: 'c2', type: 'cancel', sent: false }]);
  commands.rejectAll(new Error('done'));
  await assert.rejects(queuedOnly);
});

test('an unanswered pay or retry is what keeps the unload guard up', () => {
  const { commands, changes } = queue();
  assert.equal(commands.paymentPending, false);
  commands.add({ type: 'cancel' }).catch(() => {});
  assert.equal(commands.paymentPending, false);
  commands.add({ type: 'retry' }).catch(() => {});
  assert.equal(commands.paymentPending, true);
  assert.equal(changes(), 2);
  commands.settle('c2', null, {});
  assert.equal(commands.paymentPending, false);
  assert.equal(changes(), 3);
  commands.rejectAll(new Error('done'));
  assert.deepEqual(commands.pending, []);
});

test('a sent pay or retry settled without its answer keeps the guard up until its fate is known', async () => {
  const unknowns = [];
  const commands = new CommandQueue({ maxQueue: 3, commandTimeout: 5_000, resends: 0 }, (unknown) => unknowns.push(unknown));
  const paid = settled(commands.add({ type: 'pay' }));
  const cancelled = settled(commands.add({ type: 'cancel' }));
  commands.flush(link(true));
  commands.connectionLost();
  assert.deepEqual([(await paid).code, (await cancelled).code], ['connection_lost', 'connection_lost']);
  // The pay may have started a charge: still pending for the guard; the cancel is not.
  assert.deepEqual({ pending: commands.pending, paymentPending: commands.paymentPending, outcomeUnknown: commands.outcomeUnknown },
    { pending: [], paymentPending: true, outcomeUnknown: true });
  assert.deepEqual(unknowns, [false, false, true, false]);
  commands.outcomeKnown();
  assert.deepEqual({ paymentPending: commands.paymentPending, outcomeUnknown: commands.outcomeUnknown, last: unknowns.at(-1) },
    { paymentPending: false, outcomeUnknown: false, last: false });
  // Answered, refused, or rejected by the page itself: the fate is known.
  for (const error of [null, Object.assign(new Error('no'), { code: 'invalid_state' }), Object.assign(new Error('bye'), { code: 'closed' })]) {
    const retried = settled(commands.add({ type: 'retry' }));
    commands.flush(link(true));
    commands.settle(commands.pending[0].ref, error, {});
    await retried;
    assert.equal(commands.paymentPending, false, `settled with ${error?.code ?? 'an ack'}`);
  }
});
