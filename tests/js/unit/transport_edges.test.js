// The client's transports at their edges (found in a review, 2026-12-07): a fresh socket
// closed "come back later" (1012, 1013), a fatal close on a lower transport, an idle page
// moving back up, a command answered over HTTP while the page changed transport, and the
// leave-page guard after close().

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { PayliveSession } from '../../../client/paylive/session.js';
import { ID, SECRET, fakeServer, fakeWindow, sleep, until } from './fake_server.js';
import { outcome } from './page.js';

function drainSession(srv, extra = {}) {
  return new PayliveSession({
    sessionId: ID, secret: SECRET, baseUrl: 'http://pay.example',
    WebSocket: srv.WebSocket, EventSource: srv.EventSource, fetch: srv.fetch,
    watchNetwork: false, window: null, pingInterval: 0,
    firstMessageTimeout: 5_000, upgradeInterval: 0, ...extra,
  });
}

/** Time from the socket's close to the page's next connection attempt (any transport). */
async function nextAttemptAfterClose(srv) {
  await until(() => srv.closedAt !== undefined && srv.opened.length > srv.closedIndex);
  const at = srv.at[srv.closedIndex];
  return { next: srv.opened[srv.closedIndex], after: at - srv.closedAt };
}

test('1012 with reconnect_within_ms on a fresh socket: the page waits within the hint', async (t) => {
  t.mock.method(Math, 'random', () => 0.99); // the hint's draw: 0.99 * 600 = 594 ms
  const srv = fakeServer({ websocket: { code: 1012, reason: 'restarting; reconnect_within_ms=600' } });
  const pay = drainSession(srv);
  t.after(() => pay.close());
  const { next, after } = await nextAttemptAfterClose(srv);
  assert.ok(after >= 500, `next attempt (${next}) ${after} ms after the 1012 close, expected ~594 ms`);
});

test('1013 (try later) on a fresh socket: the page backs off instead of coming straight back', async (t) => {
  t.mock.method(Math, 'random', () => 0.99); // backoff's first draw: 0.99 * 500 = 495 ms
  const srv = fakeServer({ websocket: { code: 1013, reason: 'at most 4 sockets per session' } });
  srv.sse = 'blocked'; // the stream is refused too (429 too_many_sockets)
  const pay = drainSession(srv, { backoffBase: 500, backoffMax: 15_000 });
  t.after(() => pay.close());
  const { next, after } = await nextAttemptAfterClose(srv);
  assert.ok(after >= 400, `next attempt (${next}) ${after} ms after the 1013 close, expected ~495 ms`);
});

function guardSession(srv, win, extra = {}) {
  return new PayliveSession({
    sessionId: ID, secret: SECRET, baseUrl: 'http://pay.example',
    WebSocket: srv.WebSocket, EventSource: srv.EventSource, fetch: srv.fetch,
    watchNetwork: false, window: win, pingInterval: 0,
    firstMessageTimeout: 5_000, upgradeInterval: 0, backoffBase: 5, backoffMax: 20,
    commandTimeout: 5_000, ...extra,
  });
}

test('close() removes the leave-page guard, as documented, even while processing', async () => {
  const srv = fakeServer();
  const win = fakeWindow();
  const pay = guardSession(srv, win);
  srv.emit({ status: 'processing', attempt: 1, deadline: Date.now() + 30_000 }, 'attempt_started');
  await until(() => pay.status === 'processing');
  assert.equal(win.guarded(), true);
  pay.close();
  assert.deepEqual({ guardActive: pay.guardActive, listener: win.guarded() }, { guardActive: false, listener: false });
});

function httpSession(srv, extra = {}) {
  return new PayliveSession({
    sessionId: ID, secret: SECRET, baseUrl: 'http://pay.example',
    WebSocket: srv.WebSocket, EventSource: srv.EventSource, fetch: srv.fetch,
    watchNetwork: false, window: null, pingInterval: 0,
    firstMessageTimeout: 60, upgradeInterval: 0, backoffBase: 5, backoffMax: 20,
    commandTimeout: 1_000, ...extra,
  });
}

/** A page on SSE (its sockets refused), and then sockets let through again. */
async function onSseWithSocketsBack(t) {
  const srv = fakeServer({ websocket: 'blocked' });
  const pay = httpSession(srv, { upgradeInterval: 40 });
  t.after(() => pay.close());
  await until(() => pay.transport === 'sse' && pay.connection === 'connected' && pay.session);
  srv.websocket = 'ok';
  return { srv, pay };
}

test('a pay accepted over HTTP is acknowledged even when the page moved up to the socket meanwhile', async (t) => {
  const { srv, pay } = await onSseWithSocketsBack(t);
  // The server takes the pay: the attempt starts (a durable event to every channel,
  // the probing socket included), then the POST is answered 202.
  srv.onCommand = async () => {
    await until(() => srv.sockets.some((ws) => ws.live));
    srv.emit({ status: 'processing', attempt: 1, deadline: Date.now() + 30_000 }, 'attempt_started');
    await sleep(20);
    return { status: 202, body: {} };
  };
  const result = await outcome(pay.pay('4242424242424242'));
  assert.equal(pay.transport, 'websocket');
  assert.equal(pay.status, 'processing');
  assert.deepEqual(result, { ok: true, type: 'ack' }, 'the server accepted the pay');
});

test('a pay refused over HTTP is rejected with its code even when the page moved up meanwhile', async (t) => {
  const { srv, pay } = await onSseWithSocketsBack(t);
  // The refusal's \`ref\` is in its data, as every command answer's.
  srv.onCommand = async () => {
    await until(() => pay.transport === 'websocket');
    return { status: 409, body: { error: { code: 'invalid_state', message: 'not now' } } };
  };
  const result = await outcome(pay.pay('4242424242424242'));
  assert.deepEqual(result, { ok: false, code: 'invalid_state' }, 'the refusal, not a timeout');
});

test('a stream that delivers nothing makes way for long-polling, even after a command was answered', async (t) => {
  // A proxy that passes the stream's headers but buffers its events.
  const srv = fakeServer({ websocket: 'blocked', sse: 'buffered' });
  const pay = httpSession(srv);
  t.after(() => pay.close());
  const paid = outcome(pay.pay('4242424242424242')); // queued, sent over HTTP once the stream opens
  srv.onCommand = async () => {
    srv.emit({ status: 'processing', attempt: 1, deadline: Date.now() + 30_000 }, 'attempt_started');
    return { status: 202, body: {} };
  };
  assert.deepEqual(await paid, { ok: true, type: 'ack' });
  await sleep(500); // many times firstMessageTimeout
  const seen = { transport: pay.transport, status: pay.status };
  assert.deepEqual(seen, { transport: 'polling', status: 'processing' }, 'the attempt never reached the page');
});

function upgradeSession(srv, extra = {}) {
  return new PayliveSession({
    sessionId: ID, secret: SECRET, baseUrl: 'http://pay.example',
    WebSocket: srv.WebSocket, EventSource: srv.EventSource, fetch: srv.fetch,
    watchNetwork: false, window: null,
    // The defaults' proportions: first message 5 s, ping 10 s, upgrade 30 s.
    firstMessageTimeout: 50, pingInterval: 100, upgradeInterval: 300,
    backoffBase: 5, backoffMax: 20, ...extra,
  });
}

test('an idle page on SSE moves back up to the WebSocket once sockets get through', async () => {
  const srv = fakeServer({ websocket: 'blocked' });
  const pay = upgradeSession(srv);
  await until(() => pay.transport === 'sse' && pay.session !== null);
  srv.websocket = 'ok'; // the proxy lets sockets through again
  // Reopened with \`since\` at the current seq, the socket is sent nothing: opening is
  // what tells it works (the probe was once given up for want of a message).
  await until(() => pay.transport === 'websocket', 2_000);
  pay.close();
});

test('after a fatal close on a lower transport it stops trying to connect', async () => {
  const srv = fakeServer({ websocket: 'blocked' });
  const pay = upgradeSession(srv, { upgradeInterval: 40 });
  const errors = [];
  pay.on('error', (e) => errors.push(e));
  await until(() => pay.transport === 'sse' && pay.session !== null);
  srv.websocket = { code: 4404, reason: 'unknown session' };
  srv.sources.at(-1).end(4404, 'the session is gone'); // protocol 4.2: close event, 4404
  await until(() => errors.length === 1);
  assert.equal(pay.connection, 'closed');
  const before = srv.opened.length;
  await sleep(400);
  const after = srv.opened.slice(before);
  pay.close();
  assert.deepEqual(after, [], `connection attempts after the fatal 4404: ${after.join(', ')}`);
});

test('the outcome is acknowledged through the fetch the page was given', async () => {
  const srv = fakeServer();
  const asked = [];
  const fetch = async (url, init) => {
    asked.push(String(url));
    if (String(url).endsWith('/seen')) return { ok: true, status: 200, json: async () => srv.session };
    return srv.fetch(url, init);
  };
  const pay = drainSession(srv, { fetch });
  await until(() => pay.session !== null);
  srv.emit({ status: 'succeeded' }, 'succeeded');
  await until(() => pay.status === 'succeeded');
  pay.close(); // not connected: the receipt goes over HTTP
  await pay.acknowledgeOutcome().catch(() => {});
  assert.ok(asked.some((url) => url.endsWith(`/api/sessions/${ID}/seen`)), `asked: ${asked.join(', ')}`);
});
