// A command sent over HTTP (on SSE or long-polling) belongs to its own requests, which
// may still be sending it again with its Idempotency-Key when the page moves up to the
// WebSocket: that socket dropping must not settle it. Settled `connection_lost` so, a
// pay's outcome was taken as known from the next snapshot (still `created`), Pay came
// back, and the request still being sent could start the charge after all.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { fakeServer, fakeWindow, sleep, until } from './fake_server.js';
import { CARD, outcome, pageSession } from './page.js';

const PROXY_502 = { status: 502, text: '<html><body><h1>502 Bad Gateway</h1></body></html>' };

test('a pay sent over HTTP on SSE is settled by its own requests, not by the WebSocket it moved to dropping', async (t) => {
  // The page starts on SSE (the socket blocked), sends a pay over HTTP whose first
  // answer a proxy loses, and while the pay is being sent again with its key the socket
  // works again: the page moves up to it, and that socket drops. The pay was never on
  // the socket: its HTTP request is still on its way, and only its answer settles it.
  // Settled `connection_lost` by the socket's drop, the check ended on a snapshot still
  // `created`, Pay came back, and the request sent again then started the attempt.
  const srv = fakeServer({ websocket: 'blocked' });
  const win = fakeWindow();
  const pay = pageSession(srv, win, {
    transports: ['websocket', 'sse'], upgradeInterval: 10, backoffBase: 1, backoffMax: 2,
    silenceTimeout: 60_000, resends: 1, resendDelay: 1,
  });
  t.after(() => pay.close());
  await until(() => pay.transport === 'sse' && pay.connection === 'connected' && pay.session !== null);
  let land;
  let n = 0;
  srv.onCommand = () => {
    n += 1;
    if (n === 1) return PROXY_502;
    return new Promise((resolve) => { land = resolve; }); // sent again: held on its way
  };
  const settled = outcome(pay.pay(CARD));
  let done = false;
  settled.then(() => { done = true; });
  await until(() => land !== undefined);
  srv.websocket = 'ok';
  await until(() => pay.transport === 'websocket' && pay.connection === 'connected');
  const socket = srv.sockets.findLast((ws) => ws.live);
  socket.kill();
  await sleep(20);
  assert.deepEqual({ done, unknown: pay.outcomeUnknown, guarded: win.guarded() },
    { done: false, unknown: false, guarded: true }, 'the pay still has its request on its way');
  srv.emit({ status: 'processing', attempt: 1, deadline: Date.now() + 30_000 }, 'attempt_started');
  land({ status: 202, body: {} });
  assert.deepEqual(await settled, { ok: true, type: 'ack' });
  const keys = srv.commands.map((c) => c.key);
  assert.deepEqual(keys, [keys[0], keys[0]]);
});
