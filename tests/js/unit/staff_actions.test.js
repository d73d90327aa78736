// The dashboard's StaffActions against a real HTTP server on loopback: the key kept for
// an action whose outcome is unknown is given up only by an answer that says what
// became of it, not by a refusal made before paylive looked at the key.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { test } from 'node:test';

import { StaffActions } from '../../../client/pages/admin/actions.js';

const FAST = { resendDelay: 1, requestTimeout: 2_000, resends: 0 };

/** A server answering its requests with `answers` in turn; what it was sent in `seen`. */
async function serve(t, answers) {
  const seen = [];
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      seen.push({ key: req.headers['idempotency-key'], auth: req.headers.authorization });
      const [status, answer] = answers[Math.min(seen.length, answers.length) - 1];
      const json = typeof answer === 'object';
      res.writeHead(status, { 'Content-Type': json ? 'application/json' : 'text/html' });
      res.end(json ? JSON.stringify(answer) : answer);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  return { url: `http://127.0.0.1:${server.address().port}/api/sessions/ps_1/refunds`, seen };
}

const LOST = [502, '<h1>502 Bad Gateway</h1>'];
const refusal = (status, code) => [status, { error: { code, message: code } }];

for (const [status, code] of [
  [401, 'unauthorized'],
  [403, 'role_not_allowed'],
  [429, 'rate_limited'],
  [503, 'overloaded'],
]) {
  test(`a refund not known to be done keeps its key through a ${status} ${code} before paylive read it`, async (t) => {
    // The refund's answer is lost (it may have been made); pressed again it is refused
    // at the door (a token run out, a busy server): that says nothing of the first.
    // Before, the kept key was dropped then, and the third press, the same refund,
    // went under a new key: paylive would make it a second time.
    const { url, seen } = await serve(t, [LOST, refusal(status, code), [201, { id: 're_1' }]]);
    const actions = new StaffActions(() => 'tok', FAST);
    const first = await actions.run('refund ps_1', url, { amount: 500 });
    assert.equal(first.unknown, true);
    const refused = await actions.run('refund ps_1', url, { amount: 500 });
    assert.deepEqual([refused.ok, refused.code], [false, code]);
    const third = await actions.run('refund ps_1', url, { amount: 500 });
    assert.equal(third.ok, true);
    assert.equal(seen.length, 3);
    assert.ok(seen[0].key && seen.every((s) => s.key === seen[0].key), JSON.stringify(seen));
  });
}

test('a refusal paylive decided under the kept key ends the intent: the next press is a new one', async (t) => {
  const { url, seen } = await serve(t, [LOST, refusal(409, 'refund_exceeds_captured'), [201, { id: 're_1' }]]);
  const actions = new StaffActions(() => 'tok', FAST);
  assert.equal((await actions.run('refund ps_1', url, { amount: 500 })).unknown, true);
  assert.equal((await actions.run('refund ps_1', url, { amount: 500 })).code, 'refund_exceeds_captured');
  assert.equal((await actions.run('refund ps_1', url, { amount: 500 })).ok, true);
  assert.equal(seen[1].key, seen[0].key);
  assert.notEqual(seen[2].key, seen[0].key);
});

test('another amount is another intent with a key of its own; the kept one stays for the first', async (t) => {
  const { url, seen } = await serve(t, [LOST, [201, { id: 're_2' }], [201, { id: 're_1' }]]);
  const actions = new StaffActions(() => 'tok', FAST);
  assert.equal((await actions.run('refund ps_1', url, { amount: 500 })).unknown, true);
  assert.equal((await actions.run('refund ps_1', url, { amount: 300 })).ok, true);
  assert.equal((await actions.run('refund ps_1', url, { amount: 500 })).ok, true);
  assert.notEqual(seen[1].key, seen[0].key);
  assert.equal(seen[2].key, seen[0].key, JSON.stringify(seen));
});
