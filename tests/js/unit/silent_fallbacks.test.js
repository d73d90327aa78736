// The HTTP transports on a connection that dies without a word (found in a review,
// 2026-12-07): a socket notices a silent server by its pings and countdowns, and the
// event stream and the long-poll must too (protocol 4.2), resuming with `since` so that
// nothing is missed.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { PayliveSession } from '../../../client/paylive/session.js';
import { ID, SECRET, fakeServer, fakeWindow, sleep, until } from './fake_server.js';

function session(srv, extra = {}) {
  return new PayliveSession({
    sessionId: ID, secret: SECRET, baseUrl: 'http://pay.example',
    WebSocket: srv.WebSocket, EventSource: srv.EventSource, fetch: srv.fetch,
    watchNetwork: false, window: null, pingInterval: 0,
    firstMessageTimeout: 5_000, upgradeInterval: 0, backoffBase: 5, backoffMax: 20,
    silenceTimeout: 150, ...extra,
  });
}

test('a stream silent past the server ping interval is given up and resumed with since', async (t) => {
  const srv = fakeServer({ heartbeat: 20 });
  const pay = session(srv, { transports: ['sse'] });
  t.after(() => pay.close());
  await until(() => pay.connection === 'connected' && pay.session !== null);
  // Pings alone keep a quiet stream: well past interval + silenceTimeout, still the first.
  await sleep(500);
  assert.equal(srv.sources.length, 1, 'a stream that pings is not given up');
  srv.sources[0].mute(); // its TCP connection died silently
  srv.emit({ status: 'processing' }, 'attempt_started'); // lost with it
  await until(() => srv.sources.length === 2 && pay.session?.status === 'processing');
  assert.equal(new URL(srv.sources[1].url).searchParams.get('since'), '0');
  assert.equal(pay.transport, 'sse');
});

test('a stream from a server that sends no ping is not held to an interval', async (t) => {
  const srv = fakeServer(); // an older server: comments only, which EventSource never shows
  const pay = session(srv, { transports: ['sse'] });
  t.after(() => pay.close());
  await until(() => pay.connection === 'connected' && pay.session !== null);
  await sleep(500);
  assert.equal(srv.sources.length, 1);
});

test('a held poll unanswered past the server hold is aborted and the page polls again', async (t) => {
  const srv = fakeServer();
  const pay = session(srv, { transports: ['polling'] });
  t.after(() => pay.close());
  await until(() => pay.connection === 'connected' && pay.session !== null);
  await until(() => srv.opened.filter((o) => o === 'poll').length >= 3); // held polls come and go
  srv.hang = true; // the next held poll's connection dies silently
  const polls = srv.opened.length;
  await until(() => srv.aborted >= 1); // past hold_ms 30 + silenceTimeout 150
  srv.hang = false;
  srv.emit({ status: 'processing' }, 'attempt_started');
  await until(() => pay.session?.status === 'processing');
  assert.ok(srv.opened.length > polls + 1);
});

test('a poll answer without hold_ms (an older server) sets no bound', async (t) => {
  const srv = fakeServer();
  srv.hold = null;
  const pay = session(srv, { transports: ['polling'] });
  t.after(() => pay.close());
  await until(() => pay.connection === 'connected' && pay.session !== null);
  srv.hang = true;
  await sleep(500);
  assert.equal(srv.aborted, 0);
  assert.equal(pay.connection, 'connected');
});

// A network outage: the browser says `offline`, what was open fails, and the page backs
// off (a long draw here: 0.99 * 5 s, Math.random mocked before the page draws its
// backoff's). `online` must bring the HTTP transport in use back at once, as it does a
// socket.
function outage(srv, win) {
  win.fire('offline');
  srv.down = true;
}

for (const transport of ['sse', 'polling']) {
  test(`back online, ${transport} reconnects at once, not after its backoff`, async (t) => {
    t.mock.method(Math, 'random', () => 0.99);
    const srv = fakeServer({ heartbeat: 1_000 });
    const win = fakeWindow();
    const pay = session(srv, { transports: [transport], watchNetwork: true, window: win, backoffBase: 5_000, backoffMax: 15_000, silenceTimeout: 5_000 });
    t.after(() => pay.close());
    await until(() => pay.connection === 'connected' && pay.session !== null);
    outage(srv, win);
    if (transport === 'sse') srv.sources[0].onerror?.({}); // the stream fails with the network
    await until(() => pay.connection === 'reconnecting');
    await sleep(50);
    const opened = srv.opened.length;
    srv.down = false;
    win.fire('online');
    await until(() => pay.connection === 'connected' && srv.opened.length > opened, 1_000); // its backoff: 0.99 * 5 s
    assert.equal(pay.transport, transport);
  });
}

test('online moves only the transport in use, and nothing once closed', async (t) => {
  const srv = fakeServer({ sse: 'buffered' }); // the stream never delivers: the page polls
  const win = fakeWindow();
  const pay = session(srv, { transports: ['sse', 'polling'], firstMessageTimeout: 50, watchNetwork: true, window: win });
  t.after(() => pay.close());
  await until(() => pay.transport === 'polling' && pay.session !== null);
  assert.equal(win.count('online'), 1);
  const streams = srv.sources.length;
  win.fire('online');
  await until(() => pay.connection === 'connected');
  await sleep(50);
  assert.equal(srv.sources.length, streams, 'the stream given up stays given up');
  pay.close();
  assert.equal(win.count('online'), 0);
  const opened = srv.opened.length;
  win.fire('online');
  await sleep(50);
  assert.equal(srv.opened.length, opened);
});
