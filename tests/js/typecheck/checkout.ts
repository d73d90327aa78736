// A TypeScript checkout using the installed client, as a shop's app would. `tsc --noEmit`
// must accept it; each `@ts-expect-error` line must be refused, so the types cannot
// quietly decay to `any`.

import {
  PayliveError,
  PayliveSession,
  SESSION_DEFAULTS,
  TERMINAL_STATUSES,
  formatAmount,
  formatSeconds,
  type ConnectionStatus,
  type CustomerMessage,
  type RetryPrompt,
  type Session,
  type SessionStatus,
} from 'paylive-client';

declare function show(text: string): void;

const params = new URLSearchParams(location.hash.slice(1));
const pay = new PayliveSession({
  sessionId: params.get('session') ?? '',
  secret: params.get('secret') ?? '',
  baseUrl: 'https://pay.example.com',
  commandTimeout: 10_000,
  requestTimeout: 20_000,
  resends: 1,
  resendDelay: 500,
  window,
  WebSocket,
});

const labels: Record<SessionStatus, string> = {
  created: 'Ready to pay',
  processing: 'Processing',
  interrupted: 'Interrupted',
  succeeded: 'Paid',
  failed: 'Failed',
  cancelled: 'Cancelled',
  expired: 'Expired',
};

const stop = pay.on('session', (session: Session) => {
  show(`${labels[session.status]}: ${formatAmount(session.amount, session.currency)}`);
  if (TERMINAL_STATUSES.has(session.status)) stop();
  const last = session.attempts[session.attempts.length - 1];
  if (last?.status === 'timeout') show(last.idempotency_key);
  if (session.last_error) show(session.last_error.reason);
});

pay.on('countdown', (message) => {
  show(`${formatSeconds(message.data.remaining_ms)} left of attempt ${message.data.attempt}`);
  show(formatSeconds(pay.remainingMs()));
});

pay.on('retry_prompt', ({ data, seq }) => {
  const prompt: RetryPrompt = data;
  if (prompt.outcome_unknown) show('You will not be charged twice.');
  show(`attempt ${data.next_attempt} of ${data.max_attempts} from ${data.retry_at} (seq ${seq})`);
  const wait: number | null = pay.retryInMs();
  show(String(wait));
});

pay.on('state', ({ data }) => {
  if (data.cause === 'late_success') show(`late success after ${data.previous}`);
});

pay.on('connection', ({ status, delay, transport }) => {
  const s: ConnectionStatus = status;
  show(delay === undefined ? s : `${s} in ${delay} ms`);
  // websocket, sse or polling: which one carries the page now.
  show(`${transport ?? pay.transport}`);
});

pay.on('error', ({ code, message, closeCode }) => show(`${code}: ${message} ${closeCode ?? ''}`));
pay.on('guard', (on: boolean) => show(on ? 'keep this page open' : ''));

pay.on('message', (message: CustomerMessage) => {
  switch (message.type) {
    case 'snapshot':
      show(message.data.session.id);
      break;
    case 'ack':
      show(String(message.data.ref));
      break;
    case 'error':
      show(message.data.code);
      break;
    default:
      break;
  }
});

async function checkout(card: string): Promise<void> {
  try {
    const ack = await pay.pay(card);
    show(`accepted ${ack.data.ref}`);
  } catch (err) {
    if (err instanceof PayliveError && err.code === 'connection_lost') {
      show('the status above will tell');
    }
    // A lost pay may have started a charge: no second Pay until the session tells.
    const checking: boolean = pay.outcomeUnknown;
    if (checking) show('checking your payment');
  }
  await pay.retry();
  await pay.retry({ card: '4242424242424242' });
  await pay.cancel();
  await pay.interrupt('network_error');
  show(`${pay.lastSeq ?? 'none'} ${pay.url()} ${pay.pendingCommands.map((c) => c.type).join()}`);
}
void checkout('4242 4242 4242 4242');

// The types refuse what the client would refuse or never send.
// @ts-expect-error: sessionId and secret are required
new PayliveSession({ secret: 'x' });
// @ts-expect-error: no such event
pay.on('sesion', () => {});
// @ts-expect-error: not a status
pay.on('session', (session) => session.status === 'paid');
// @ts-expect-error: outcomeUnknown is read-only
pay.outcomeUnknown = false;
// @ts-expect-error: session is read-only
pay.session = null;
// @ts-expect-error: only network_error can be reported
void pay.interrupt('timeout');
// @ts-expect-error: the countdown has no `remaining`
pay.on('countdown', (message) => message.data.remaining);
const bounds: number[] = [SESSION_DEFAULTS.requestTimeout, SESSION_DEFAULTS.resends, SESSION_DEFAULTS.resendDelay];
void bounds;
// @ts-expect-error: resends is a count
void new PayliveSession({ sessionId: 'ps_1', secret: 's', resends: true });
// The outcome receipt (`seen`) waits among the pending commands like the others.
const receiptWaits: boolean = pay.pendingCommands.some((c) => c.type === 'seen');
void receiptWaits;
