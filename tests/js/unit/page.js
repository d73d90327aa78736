// A checkout page on the fake server, for the tests of what a page does while a
// payment's outcome is unknown: the session made with the options those tests share,
// connected, its guard's turns and its snapshots counted.

import { PayliveSession } from '../../../client/paylive/session.js';
import { ID, SECRET, fakeServer, fakeWindow, until } from './fake_server.js';

export const CARD = '4242424242424242';

/** How a command's promise settled: `{ok: true, type}` or `{ok: false, code}`. */
export const outcome = (promise) => promise.then((ack) => ({ ok: true, type: ack?.type }), (err) => ({ ok: false, code: err.code }));

/** A session of `srv` on `win`, with the shared options and `extra` over them. */
export function pageSession(srv, win, extra = {}) {
  return new PayliveSession({
    sessionId: ID, secret: SECRET, baseUrl: 'http://pay.example',
    WebSocket: srv.WebSocket, EventSource: srv.EventSource, fetch: srv.fetch,
    watchNetwork: false, window: win, pingInterval: 0,
    firstMessageTimeout: 5_000, upgradeInterval: 0, backoffBase: 5, backoffMax: 20,
    commandTimeout: 5_000, resendDelay: 1, ...extra,
  });
}

/**
 * A page connected over `transport` only (the socket refused unless it is `websocket`),
 * with `options` over the shared ones; `hang`: its held polls are never answered, only
 * aborted. Its guard's turns are recorded and its snapshots counted.
 */
export async function connected(t, transport, { options = {}, hang = false } = {}) {
  const srv = fakeServer(transport === 'websocket' ? {} : { websocket: 'blocked' });
  srv.hang = hang;
  const win = fakeWindow();
  const pay = pageSession(srv, win, { transports: [transport], ...options });
  t.after(() => pay.close());
  const turns = [];
  pay.on('guard', (on) => turns.push(on));
  let snapshots = 0;
  pay.on('snapshot', () => { snapshots += 1; });
  await until(() => pay.connection === 'connected' && pay.session !== null);
  return { srv, win, pay, turns, snapshots: () => snapshots };
}
