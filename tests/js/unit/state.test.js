// The session as the server's messages tell it: seq order, gaps, resuming with `since`,
// the retry prompt, and the server's clock.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { sessionUrl } from '../../../client/paylive/session.js';
import { SessionState, derivePrompt } from '../../../client/paylive/state.js';

const ID = 'ps_test';
const T0 = 1_764_130_000_000;

function session(fields = {}) {
  return {
    id: ID, order_id: 'order-1', amount: 1999, currency: 'EUR', status: 'created',
    attempt: 0, max_attempts: 3, deadline: null, retry_at: null, last_error: null,
    attempts: [], created_at: T0, updated_at: T0, expires_at: T0 + 900_000, seq: 0,
    needs_review: false, metadata: {}, ...fields,
  };
}

const snapshot = (s, ts = T0) => ({ type: 'snapshot', session: ID, seq: s.seq, ts, data: { session: s } });
const state = (seq, status, cause, fields = {}) => ({
  type: 'state', session: ID, seq, ts: T0 + seq,
  data: { session: session({ seq, status, ...fields }), previous: 'x', cause },
});

const interrupted = (reason, attempt = 1) =>
  session({
    status: 'interrupted', attempt, seq: 2, retry_at: T0 + 2000,
    last_error: { reason, attempt, message: 'lost' },
  });

test('the prompt an interrupted session implies says when the outcome is unknown', () => {
  for (const reason of ['timeout', 'network_error']) {
    const prompt = derivePrompt(interrupted(reason));
    assert.deepEqual(prompt, {
      attempt: 1, next_attempt: 2, max_attempts: 3, reason, retry_at: T0 + 2000, outcome_unknown: true,
    });
  }
  for (const reason of ['declined', 'provider_error']) {
    assert.equal(derivePrompt(interrupted(reason)).outcome_unknown, false, reason);
  }
});

test('no prompt unless interrupted', () => {
  for (const status of ['created', 'processing', 'succeeded', 'failed', 'cancelled', 'expired']) {
    assert.equal(derivePrompt(session({ status })), null, status);
  }
  assert.equal(derivePrompt(null), null);
});

test('a snapshot into interrupted derives the prompt; a retry_prompt message replaces it', () => {
  const st = new SessionState();
  st.receive(snapshot(interrupted('timeout')), T0);
  assert.equal(st.retryPrompt.outcome_unknown, true);
  assert.equal(st.retryPrompt.next_attempt, 2);
  const data = { attempt: 1, next_attempt: 2, max_attempts: 3, reason: 'timeout', retry_at: T0 + 5000, outcome_unknown: true };
  assert.equal(st.receive({ type: 'retry_prompt', session: ID, seq: 3, ts: T0, data }, T0), 'applied');
  assert.deepEqual(st.retryPrompt, data);
  // Leaving `interrupted` clears it.
  st.receive(state(4, 'processing', 'attempt_started', { attempt: 2, deadline: T0 + 30_000 }), T0);
  assert.equal(st.retryPrompt, null);
});

test('durable events apply in seq order; a replayed one is skipped', () => {
  const st = new SessionState();
  st.receive(snapshot(session({ seq: 3 })), T0);
  assert.equal(st.lastSeq, 3);
  assert.equal(st.receive(state(4, 'processing', 'attempt_started'), T0), 'applied');
  assert.equal(st.lastSeq, 4);
  assert.equal(st.receive(state(4, 'processing', 'attempt_started'), T0), 'skipped');
  assert.equal(st.receive(state(2, 'created', 'x'), T0), 'skipped');
  assert.equal(st.session.seq, 4);
});

test('after a gap nothing is applied and the resume asks for everything after the last seq', () => {
  const st = new SessionState();
  st.receive(snapshot(session({ seq: 5 })), T0);
  assert.equal(st.receive(state(7, 'succeeded', 'succeeded'), T0), 'gap');
  assert.equal(st.lastSeq, 5);
  assert.equal(st.session.status, 'created');
  const url = new URL(sessionUrl({ baseUrl: 'https://shop.example/checkout', sessionId: ID, secret: 's3cr3t' }, st.lastSeq));
  assert.equal(url.searchParams.get('since'), '5');
  // The replay then brings 6 and 7 in order.
  assert.equal(st.receive(state(6, 'processing', 'attempt_started'), T0), 'applied');
  assert.equal(st.receive(state(7, 'succeeded', 'succeeded'), T0), 'applied');
  assert.equal(st.session.status, 'succeeded');
});

test('the reconnect URL carries since only once a durable event was seen', () => {
  const options = { baseUrl: 'https://shop.example', sessionId: 'ps_a/b', secret: 'sec ret' };
  const st = new SessionState();
  const first = new URL(sessionUrl(options, st.lastSeq));
  assert.equal(first.protocol, 'wss:');
  assert.equal(first.host, 'shop.example');
  assert.equal(first.pathname, '/ws/sessions/ps_a%2Fb');
  assert.equal(first.searchParams.get('token'), 'sec ret');
  assert.equal(first.searchParams.has('since'), false);
  st.receive(snapshot(session({ seq: 0 })), T0);
  st.receive(state(1, 'processing', 'attempt_started'), T0);
  assert.equal(new URL(sessionUrl(options, st.lastSeq)).searchParams.get('since'), '1');
  assert.equal(new URL(sessionUrl({ ...options, baseUrl: 'http://127.0.0.1:8000' }, 0)).protocol, 'ws:');
});

test('a countdown sets the clock; replayed durable events do not', () => {
  const st = new SessionState();
  const local = T0 - 10_000; // this machine's clock is 10 s behind the server's
  st.receive(snapshot(session({ status: 'processing', attempt: 1, deadline: T0 + 20_000, seq: 1 }), T0), local);
  assert.equal(st.clockOffset, 10_000);
  // An event replayed after a reconnect carries the time it happened, long ago.
  st.receive({ ...state(2, 'processing', 'attempt_started', { attempt: 1, deadline: T0 + 20_000 }), ts: T0 - 60_000 }, local);
  assert.equal(st.clockOffset, 10_000);
  const countdown = { type: 'countdown', session: ID, seq: 2, ts: T0 + 3000, data: { attempt: 1, remaining_ms: 15_000, deadline: T0 + 20_000 } };
  st.receive(countdown, local + 1000);
  assert.equal(st.clockOffset, T0 + 5000 - (local + 1000));
  assert.equal(st.remainingMs(local + 1000), 15_000);
  assert.deepEqual(st.countdown, countdown.data);
  // The countdown goes when the attempt ends.
  st.receive(snapshot(interrupted('timeout'), T0 + 20_000), local + 20_000);
  assert.equal(st.countdown, null);
  assert.equal(st.remainingMs(local + 20_000), null);
});

test('the retry wait counts down to retry_at on the server clock', () => {
  const st = new SessionState();
  st.receive(snapshot(interrupted('network_error'), T0), T0);
  assert.equal(st.retryInMs(T0), 2000);
  assert.equal(st.retryInMs(T0 + 1500), 500);
  assert.equal(st.retryInMs(T0 + 9000), 0);
  st.receive(state(3, 'cancelled', 'cancelled'), T0);
  assert.equal(st.retryInMs(T0), null);
});

test('messages that change no state say so', () => {
  const st = new SessionState();
  for (const type of ['ack', 'error', 'pong', 'something_new']) {
    assert.equal(st.receive({ type, session: ID, seq: 0, ts: T0, data: {} }, T0), 'other');
  }
  assert.equal(st.session, null);
});

test('an older snapshot is refused: the page never goes back in time', () => {
  const st = new SessionState();
  st.receive(snapshot(session({ seq: 3 })), T0);
  assert.equal(st.receive(state(4, 'processing', 'attempt_started', { attempt: 1, deadline: T0 + 30_000 }), T0), 'applied');
  // A late answer from a slower transport, made before event 4.
  assert.equal(st.receive(snapshot(session({ seq: 3, status: 'created' })), T0), 'skipped');
  assert.deepEqual([st.lastSeq, st.session.status, st.session.seq], [4, 'processing', 4]);
  // One at the same seq or newer is taken.
  assert.equal(st.receive(snapshot(session({ seq: 4, status: 'processing', attempt: 1 })), T0), 'applied');
  assert.equal(st.receive(snapshot(session({ seq: 6, status: 'succeeded' })), T0), 'applied');
  assert.deepEqual([st.lastSeq, st.session.status], [6, 'succeeded']);
});

test('a countdown past the deadline (remaining_ms 0) does not pull the clock back to the deadline', () => {
  const st = new SessionState();
  st.receive(snapshot(session({ status: 'processing', attempt: 1, deadline: T0 + 30_000, seq: 1 }), T0), T0);
  assert.equal(st.clockOffset, 0);
  // The attempt's timer runs late: the server's clock reads 2 s past the deadline, and
  // the countdown says 0 left (clamped).
  const late = T0 + 32_000;
  st.receive({ type: 'countdown', session: ID, seq: 1, ts: late, data: { attempt: 1, remaining_ms: 0, deadline: T0 + 30_000 } }, late);
  assert.equal(st.clockOffset, 0);
  // Interrupted, with a retry allowed 3 s after that: the wait is 3 s, not 5 s.
  const s = interrupted('timeout');
  st.receive({ type: 'state', session: ID, seq: 2, ts: late, data: { session: { ...s, retry_at: late + 3000 }, previous: 'processing', cause: 'timeout' } }, late);
  assert.equal(st.retryInMs(late), 3000);
});
