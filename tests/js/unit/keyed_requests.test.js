// sendKeyedRequest, which the dashboard's staff actions go through, against a real HTTP
// server on loopback: one key for the request and every resend of it, a lost answer
// sent again and a refusal not, and the last answer lost too reported as unknown.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { test } from 'node:test';

import { sendKeyedRequest } from '../../../client/paylive.js';

const FAST = { resendDelay: 10, requestTimeout: 2_000 };

/** A server answering its requests with `answers` in turn (the last one again after). */
async function serve(t, answers) {
  const seen = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      seen.push({ method: req.method, key: req.headers['idempotency-key'], body });
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

const PROXY_502 = [502, '<h1>502 Bad Gateway</h1>'];

test('an answer a proxy lost is sent again with the same key, and answered', async (t) => {
  const { url, seen } = await serve(t, [PROXY_502, [202, { refund: { amount: 5 } }]]);
  const result = await sendKeyedRequest(url, { body: '{"amount":5}' }, FAST);
  assert.deepEqual(result, { ok: true, key: seen[0].key, body: { refund: { amount: 5 } } });
  assert.equal(seen.length, 2);
  assert.match(seen[0].key, /^[0-9a-f]{32}$/);
  assert.deepEqual(seen[1], { method: 'POST', key: seen[0].key, body: '{"amount":5}' });
});

test("the caller's own key is kept", async (t) => {
  const { url, seen } = await serve(t, [[200, {}]]);
  const result = await sendKeyedRequest(url, { headers: { 'idempotency-key': 'k-1' } }, FAST);
  assert.equal(result.key, 'k-1');
  assert.deepEqual(seen.map((s) => s.key), ['k-1']);
});

test('a refusal is not sent again, and is known', async (t) => {
  const refusal = { error: { code: 'refund_exceeds_captured', message: 'at most 2500' } };
  const { url, seen } = await serve(t, [[409, refusal]]);
  const result = await sendKeyedRequest(url, {}, FAST);
  assert.deepEqual(result, {
    ok: false, key: seen[0].key, code: 'refund_exceeds_captured', message: 'at most 2500', unknown: false,
  });
  assert.equal(seen.length, 1);
});

test('every answer lost: sent `resends` times again, then unknown', async (t) => {
  const shutting = [503, { error: { code: 'shutting_down', message: 'stopping' } }];
  const { url, seen } = await serve(t, [shutting, PROXY_502]);
  const result = await sendKeyedRequest(url, {}, { ...FAST, resends: 2 });
  assert.equal(result.ok, false);
  assert.equal(result.unknown, true);
  assert.equal(seen.length, 3);
  assert.deepEqual(new Set(seen.map((s) => s.key)), new Set([result.key]));
});
