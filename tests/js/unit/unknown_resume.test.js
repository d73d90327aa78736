// A pay sent over HTTP (SSE) whose answer is lost while the stream is being made again:
// the new stream may already have read `since` (the seq before the loss) when the loss
// is settled. Opened so, it replays nothing if nothing happened, and no snapshot would
// ever say what became of the pay: the page would check its payment (and hold the
// leave-page warning) for as long as that stream lives. It is made again, once,
// without `since`.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { fakeServer, fakeWindow, until } from './fake_server.js';
import { CARD, outcome, pageSession } from './page.js';

test('on sse, a pay whose answer is lost while the stream reopens with since: a snapshot still comes, with one extra stream at most', async (t) => {
  const srv = fakeServer({ websocket: 'blocked' });
  const win = fakeWindow();
  let answerPay = null; // resolves the pay's HTTP request
  const Base = srv.EventSource;
  const made = [];
  srv.EventSource = class extends Base {
    constructor(url) {
      super(url); // since read: it opens a tick later
      made.push(url);
      // The pay's answer (a proxy's 502) is settled between the two.
      if (made.length === 2) answerPay({ status: 502, text: '<html>502 Bad Gateway</html>' });
    }
  };
  // Not sent again with its key (`resends`): the loss is settled as the stream reopens.
  const pay = pageSession(srv, win, { transports: ['sse'], backoffBase: 1, backoffMax: 2, silenceTimeout: 60_000, resends: 0 });
  t.after(() => pay.close());
  let snapshots = 0;
  pay.on('snapshot', () => { snapshots += 1; });
  await until(() => pay.connection === 'connected' && pay.session !== null);
  srv.onCommand = () => new Promise((resolve) => {
    answerPay = resolve;
    srv.sources.at(-1).onerror({}); // the stream drops while the pay is on its way
  });
  const before = snapshots;
  assert.deepEqual(await outcome(pay.pay(CARD)), { ok: false, code: 'connection_lost' });
  assert.equal(new URL(made[1]).searchParams.get('since'), '0', 'the stream reopening read since before the loss');
  await until(() => snapshots > before, 1_000);
  assert.deepEqual({ unknown: pay.outcomeUnknown, guarded: win.guarded(), status: pay.status },
    { unknown: false, guarded: false, status: 'created' });
  assert.equal(new URL(made.at(-1)).searchParams.get('since'), null);
  assert.ok(made.length <= 3, `streams opened: ${made.length}`);
});
