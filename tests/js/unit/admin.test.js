// The dashboard's pure parts: the session table (filter, search, pages, order, the
// cap) and the per-minute counts behind its chart.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { INTERRUPTION_CAUSES, MinuteCounts, points } from '../../../client/pages/admin/chart.js';
import { SessionTable, dayRange, passes } from '../../../client/pages/admin/model.js';

const T0 = 1_764_000_000_000;

function session(n, fields = {}) {
  return {
    id: `ps_${n}`,
    order_id: `order-${n}`,
    status: 'created',
    created_at: T0 + n,
    seq: 0,
    needs_review: false,
    ...fields,
  };
}

test('sessions are kept newest first, whatever order they arrive in', () => {
  const table = new SessionTable();
  for (const n of [5, 1, 9, 3]) table.upsert(session(n));
  assert.deepEqual(table.order, ['ps_9', 'ps_5', 'ps_3', 'ps_1']);
  table.replaceAll([session(2), session(7), session(4)]);
  assert.deepEqual(table.order, ['ps_7', 'ps_4', 'ps_2']);
});

test('an older copy of a session never overwrites a newer one', () => {
  const table = new SessionTable();
  assert.equal(table.upsert(session(1, { seq: 3, status: 'succeeded' })), true);
  assert.equal(table.upsert(session(1, { seq: 2, status: 'processing' })), false);
  assert.equal(table.get('ps_1').status, 'succeeded');
  assert.equal(table.upsert(session(1, { seq: 4, needs_review: true, status: 'succeeded' })), true);
  assert.equal(table.size, 1);
});

test('10,000 sessions come out one page at a time', () => {
  const table = new SessionTable();
  for (let n = 0; n < 10_000; n += 1) table.upsert(session(n));
  const first = table.view({ pageSize: 50 });
  assert.equal(first.rows.length, 50);
  assert.equal(first.rows[0].id, 'ps_9999');
  assert.deepEqual([first.total, first.pages, first.page, first.first], [10_000, 200, 0, 1]);
  const last = table.view({ pageSize: 50, page: 999 });
  assert.equal(last.page, 199, 'a page past the end shows the last');
  assert.equal(last.rows.at(-1).id, 'ps_0');
  assert.equal(table.view({ page: -3 }).page, 0);
});

test('the status filter, the finished switch and the search', () => {
  const table = new SessionTable();
  table.upsert(session(1, { status: 'succeeded' }));
  table.upsert(session(2, { status: 'cancelled', needs_review: true }));
  table.upsert(session(3, { status: 'processing', order_id: 'SHOP-42' }));
  const ids = (view) => view.rows.map((s) => s.id);
  assert.deepEqual(ids(table.view()), ['ps_3', 'ps_2', 'ps_1']);
  assert.deepEqual(ids(table.view({ showFinished: false })), ['ps_3']);
  assert.deepEqual(ids(table.view({ filter: 'active' })), ['ps_3']);
  assert.deepEqual(ids(table.view({ filter: 'needs_review', showFinished: false })), ['ps_2']);
  assert.deepEqual(ids(table.view({ filter: 'succeeded' })), ['ps_1']);
  assert.deepEqual(ids(table.view({ search: 'shop-4' })), ['ps_3'], 'order ids, any case');
  assert.deepEqual(ids(table.view({ search: ' ps_2 ' })), ['ps_2'], 'and session ids');
  assert.deepEqual(ids(table.view({ search: 'nothing' })), []);
  const counted = table.view({ filter: 'failed' });
  assert.deepEqual([counted.active, counted.finished, counted.review, counted.total], [1, 2, 1, 0]);
  assert.equal(passes(session(9, { status: 'expired' }), 'all', false), false);
});

test('past the cap the oldest finished sessions go, never active or flagged ones', () => {
  const table = new SessionTable({ maxSessions: 3 });
  table.upsert(session(1, { status: 'succeeded' }));
  table.upsert(session(2, { status: 'failed', needs_review: true }));
  table.upsert(session(3, { status: 'processing' }));
  table.upsert(session(4, { status: 'expired' }));
  table.upsert(session(5));
  assert.deepEqual(table.order, ['ps_5', 'ps_3', 'ps_2']);
  assert.equal(table.size, 3);
});

test('changes and interruptions are counted per minute over the last hour', () => {
  const counts = new MinuteCounts(60);
  const minute = 60_000;
  const now = Math.floor(T0 / minute) * minute + 30_000;
  counts.add(now, 'attempt_started');
  counts.add(now - 1_000, 'timeout');
  counts.add(now - 5 * minute, 'declined');
  counts.add(now - 61 * minute, 'succeeded'); // more than an hour ago
  const { changes, interruptions } = counts.series(now);
  assert.equal(changes.length, 60);
  assert.deepEqual([changes[59], interruptions[59]], [2, 1]);
  assert.deepEqual([changes[54], interruptions[54]], [1, 1]);
  assert.equal(changes.reduce((a, b) => a + b), 3, 'the older one is outside the window');
  assert.ok(INTERRUPTION_CAUSES.has('network_error') && !INTERRUPTION_CAUSES.has('failed'));
  // Old minutes are forgotten as time goes on: memory stays bounded.
  for (let m = 0; m < 500; m += 1) counts.add(now + m * minute, 'succeeded');
  assert.ok(counts.buckets.size <= 120, String(counts.buckets.size));
});

test("the server's counts seed the chart and replace the page's own for their minutes", () => {
  const counts = new MinuteCounts(60);
  const minute = 60_000;
  const now = Math.floor(T0 / minute) * minute + 30_000;
  counts.add(now, 'attempt_started'); // seen on the feed, and counted by the server too
  const start = Math.floor(now / minute) * minute;
  counts.seed([
    { at: start - 30 * minute, changes: 7, interruptions: 2 },
    { at: start, changes: 4, interruptions: 1 },
  ]);
  const { changes, interruptions } = counts.series(now);
  assert.deepEqual([changes[29], interruptions[29]], [7, 2]);
  assert.deepEqual([changes[59], interruptions[59]], [4, 1], 'the server counts once');
  counts.add(now + 1_000, 'timeout'); // live again after the seed
  assert.deepEqual(counts.series(now).interruptions[59], 2);
  counts.seed([]);
  counts.seed([{ at: 'nonsense', changes: 1 }]);
  assert.equal(counts.series(now).changes[59], 5);
});

test('chart points span the box, the highest value at the top', () => {
  assert.equal(points([0, 5, 10], 600, 100, 10), '0.0,100.0 300.0,50.0 600.0,0.0');
});

test("the search's dates are whole days of the browser's clock, the day clocks change too", () => {
  const zone = process.env.TZ;
  process.env.TZ = 'Europe/Berlin';
  try {
    // 2026-10-25 has 25 hours in Berlin (back from summer time), 2026-03-29 has 23.
    const autumn = dayRange('2026-10-25', '2026-10-25');
    assert.equal(autumn.from, String(Date.UTC(2026, 9, 24, 22)));
    assert.equal(autumn.to, String(Date.UTC(2026, 9, 25, 23)), 'its last hour is searched');
    const spring = dayRange('2026-03-29', '2026-03-29');
    assert.equal(spring.to, String(Date.UTC(2026, 2, 29, 22)), 'no hour of the day after');
    assert.deepEqual(dayRange('', ''), { from: '', to: '' });
  } finally {
    if (zone === undefined) delete process.env.TZ;
    else process.env.TZ = zone;
  }
});
