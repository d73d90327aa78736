// A page on a lower transport probes for a better one now and then (protocol 4.2): a
// probe that fails must leave nothing behind, neither the window's `offline`/`online`
// listeners its socket took, nor this connection's listeners on it, nor a stream's.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Emitter } from '../../../client/paylive/emitter.js';
import { PayliveSession } from '../../../client/paylive/session.js';
import { ID, SECRET, fakeServer, fakeWindow, until } from './fake_server.js';

function probingSession(srv, extra = {}) {
  return new PayliveSession({
    sessionId: ID, secret: SECRET, baseUrl: 'http://pay.example',
    WebSocket: srv.WebSocket, EventSource: srv.EventSource, fetch: srv.fetch,
    watchNetwork: false, window: null, pingInterval: 0,
    firstMessageTimeout: 60, upgradeInterval: 20, backoffBase: 5, backoffMax: 20, ...extra,
  });
}

const count = (srv, kind) => srv.opened.filter((o) => o === kind).length;

test('failed socket probes leave no offline/online listeners on the window', async (t) => {
  const srv = fakeServer({ websocket: 'blocked' });
  const win = fakeWindow();
  const pay = probingSession(srv, { watchNetwork: true, window: win });
  t.after(() => pay.close());
  await until(() => pay.transport === 'sse' && pay.session !== null);
  await until(() => count(srv, 'ws') >= 6); // the first socket, then five probes
  // At most the probe in flight listens, and for `online` the connection itself too (it
  // brings the HTTP transport in use back at once).
  assert.ok(win.count('offline') <= 1 && win.count('online') <= 2, `offline: ${win.count('offline')}, online: ${win.count('online')}`);
  pay.close();
  assert.deepEqual([win.count('offline'), win.count('online')], [0, 0]);
});

test('the connection stops listening to a probe once it is over', async (t) => {
  // Every subscription made on an emitter, and whether it was taken back.
  const held = new Set();
  const on = Emitter.prototype.on;
  t.mock.method(Emitter.prototype, 'on', function (type, handler) {
    const entry = { emitter: this, type, handler };
    held.add(entry);
    on.call(this, type, handler);
    return () => {
      held.delete(entry);
      this.off(type, handler);
    };
  });
  const srv = fakeServer({ websocket: 'blocked', sse: 'buffered' });
  const pay = probingSession(srv);
  t.after(() => pay.close());
  await until(() => pay.transport === 'polling' && pay.session !== null);
  await until(() => count(srv, 'ws') >= 4 && count(srv, 'sse') >= 4); // probes of both
  const onRetired = [...held].filter((entry) => entry.emitter.status === 'closed');
  assert.equal(onRetired.length, 0, `listeners left on closed transports: ${onRetired.map((e) => e.type).join(', ')}`);
});

test('a stream given up takes its close listener with it', async (t) => {
  const srv = fakeServer({ websocket: 'blocked', sse: 'buffered' });
  const pay = probingSession(srv);
  t.after(() => pay.close());
  await until(() => pay.transport === 'polling' && pay.session !== null);
  await until(() => count(srv, 'sse') >= 3);
  const closed = srv.sources.filter((source) => source.closed);
  assert.ok(closed.length >= 2);
  for (const source of closed) assert.deepEqual(Object.keys(source.listeners), []);
});
