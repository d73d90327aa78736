// Reconnect delays: full jitter under a cap that doubles, and when the count resets.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Backoff, backoffDelay, restartDelay } from '../../../client/paylive/backoff.js';

const OPTIONS = { backoffBase: 500, backoffMax: 15_000, stableAfter: 5_000 };

test('the cap doubles with each attempt up to the maximum', () => {
  // random() just below 1 draws the top of the range: cap - 1.
  const top = () => 0.999999999;
  const caps = [0, 1, 2, 3, 4, 5, 6, 10].map((n) => backoffDelay(n, 500, 15_000, top) + 1);
  assert.deepEqual(caps, [500, 1000, 2000, 4000, 8000, 15_000, 15_000, 15_000]);
});

test('the draw is uniform from zero: full jitter, no floor', () => {
  assert.equal(backoffDelay(3, 500, 15_000, () => 0), 0);
  assert.equal(backoffDelay(3, 500, 15_000, () => 0.5), 2000);
});

test('a huge attempt number neither overflows nor exceeds the maximum', () => {
  const delay = backoffDelay(10_000, 500, 15_000, () => 0.999999999);
  assert.ok(Number.isFinite(delay) && delay < 15_000, String(delay));
});

test('a crowd dropped together spreads over the whole window', () => {
  // 2,000 real draws at the cap: every one in [0, cap), and they cover it. Chance that
  // none falls in the lowest or highest tenth by luck: 0.9^2000, never.
  const draws = Array.from({ length: 2000 }, () => backoffDelay(8, 500, 15_000));
  assert.ok(draws.every((d) => Number.isInteger(d) && d >= 0 && d < 15_000));
  assert.ok(Math.min(...draws) < 1500, `lowest draw ${Math.min(...draws)}`);
  assert.ok(Math.max(...draws) >= 13_500, `highest draw ${Math.max(...draws)}`);
  assert.ok(new Set(draws).size > 1000, 'draws repeat: not a fresh draw each time');
});

test('each failed attempt raises the cap; the count goes up by one per delay', () => {
  const backoff = new Backoff(OPTIONS, () => 0.999999999);
  const delays = [backoff.next(), backoff.next(), backoff.next()];
  assert.deepEqual(delays, [499, 999, 1999]);
  assert.equal(backoff.attempt, 3);
  backoff.reset();
  assert.equal(backoff.next(), 499);
});

test('a connection that stayed up resets the count; a short one does not', () => {
  const backoff = new Backoff(OPTIONS, () => 0.5);
  backoff.next();
  backoff.next();
  backoff.opened(1_000);
  backoff.closed(1_000 + OPTIONS.stableAfter - 1); // flapping: keep backing off
  assert.equal(backoff.attempt, 2);
  backoff.opened(10_000);
  backoff.closed(10_000 + OPTIONS.stableAfter); // was healthy: start over
  assert.equal(backoff.attempt, 0);
});

test('closing a connection that never opened keeps the count', () => {
  const backoff = new Backoff(OPTIONS, () => 0.5);
  backoff.next();
  backoff.closed(1_000_000);
  assert.equal(backoff.attempt, 1);
});

test('a restarting server (1012) sets the delay: a draw within its hint', () => {
  const reason = 'restarting; reconnect_within_ms=2000';
  assert.equal(restartDelay(1012, reason, () => 0), 0);
  assert.equal(restartDelay(1012, reason, () => 0.5), 1000);
  assert.equal(restartDelay(1012, reason, () => 0.999999999), 1999);
  const draws = Array.from({ length: 1000 }, () => restartDelay(1012, reason));
  assert.ok(draws.every((d) => d >= 0 && d < 2000));
  assert.ok(Math.min(...draws) < 200 && Math.max(...draws) > 1800, 'spread over the hint');
});

test('without 1012 and a hint, the usual backoff applies', () => {
  assert.equal(restartDelay(1001, 'server shutting down: reconnect'), null);
  assert.equal(restartDelay(1013, 'reconnect_within_ms=2000'), null);
  assert.equal(restartDelay(1012, 'restarting'), null);
  assert.equal(restartDelay(1012, undefined), null);
});
