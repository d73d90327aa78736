/**
 * paylive.js: the browser side of a paylive payment session (docs/protocol.md section 4).
 *
 * Dependency-free ES modules; this file is the entry point and re-exports the public
 * API (declared in `paylive.d.ts`). A session opens the customer channel over the best
 * transport that works (WebSocket, Server-Sent Events, long-polling: `transport.js`,
 * protocol 4.2) with single-use tickets, never a secret in a URL; it keeps the last `seq` of the
 * durable events it has applied (`state`, `retry_prompt`) and resumes from it after
 * every reconnect, so nothing that happened while it was away is missed.
 *
 *     import { PayliveSession } from '/client/paylive.js';
 *     const pay = new PayliveSession({ sessionId, secret });
 *     pay.on('session', (session) => render(session));
 *     pay.on('connection', ({ status }) => showConnection(status));
 *     // The PaymentMethod id from the provider's hosted field (Stripe.js), never a
 *     // card number; the sandbox alone takes test numbers: pay.pay('4242424242424242').
 *     await pay.pay({ stripe: paymentMethod.id });
 *
 * The parts, one module each under `paylive/`: `socket.js` (a WebSocket that comes back
 * by itself: full-jitter backoff from `backoff.js`, an app-level ping, a watchdog for a
 * silent server, the browser's `offline`/`online` events; the admin dashboard uses it
 * too), `state.js` (the session as the messages tell it: `seq` order, gaps, the retry
 * prompt, the server's clock), `commands.js` (commands queued while disconnected and
 * settled by `ack`/`error`), `session.js` (the three wired together), `constants.js`,
 * `emitter.js`, `format.js`.
 */

export {
  ACTIVE_STATUSES,
  DURABLE_TYPES,
  FATAL_CLOSE_CODES,
  JSON_PROTOCOL,
  OUTCOME_UNKNOWN_REASONS,
  SANDBOX_CARDS,
  TERMINAL_STATUSES,
} from './paylive/constants.js';
export { backoffDelay } from './paylive/backoff.js';
export { Emitter, PayliveError } from './paylive/emitter.js';
export { formatAmount, formatSeconds } from './paylive/format.js';
export { PayliveSession, SESSION_DEFAULTS } from './paylive/session.js';
export { httpOrigin, newIdempotencyKey, sendKeyedRequest } from './paylive/http.js';
export { ReconnectingSocket, SOCKET_DEFAULTS, socketOrigin } from './paylive/socket.js';
export { LiveConnection, TRANSPORT_DEFAULTS, TRANSPORTS } from './paylive/transport.js';
export { derivePrompt } from './paylive/state.js';
