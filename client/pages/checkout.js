// The demo checkout page: renders one PayliveSession. The session id and client
// secret come from the URL fragment (#session=ps_...&secret=...), which the browser
// never sends to a server.

import {
  PayliveSession,
  SANDBOX_CARDS,
  TERMINAL_STATUSES,
  formatAmount,
  formatSeconds,
} from 'paylive-client';
import { commandMessage } from './checkout/messages.js';
import { mountStripe } from './stripe.js';

const $ = (id) => document.getElementById(id);

const STATUS_LABELS = {
  loading: 'Loading…',
  created: 'Ready to pay',
  processing: 'Processing',
  interrupted: 'Interrupted',
  succeeded: 'Succeeded',
  failed: 'Failed',
  cancelled: 'Cancelled',
  expired: 'Expired',
};

const CONNECTION_LABELS = {
  idle: 'Not connected',
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  closed: 'Disconnected',
};

const REASON_TEXT = {
  timeout: 'Your bank did not answer in time.',
  network_error: 'The connection to your bank was lost.',
  declined: 'Your card was declined.',
  provider_error: 'The payment provider had a problem.',
};

const FINAL = {
  succeeded: ['✓', 'Payment succeeded', 'Thank you! Your order is paid.'],
  failed: ['✕', 'Payment failed', 'No money was taken. Please try another card or contact the shop.'],
  cancelled: ['–', 'Payment cancelled', 'The payment was cancelled. No money was taken.'],
  expired: ['⌛', 'Payment expired', 'This checkout expired before it was paid. No money was taken.'],
};

function fragmentParams() {
  return new URLSearchParams(location.hash.replace(/^#/, ''));
}

function setText(id, text) {
  const el = $(id);
  if (el.textContent !== text) el.textContent = text;
}

// `code`: the technical code behind the words, for developers and tests (`data-code`).
function showMessage(text, kind = 'info', code = null) {
  const el = $('message');
  el.textContent = text ?? '';
  el.dataset.kind = kind;
  el.dataset.code = code ?? '';
}

// Where the focus goes, by status, when the control that had it disappears.
const FOCUS_TARGET = { created: 'pay', processing: 'processing-title', interrupted: 'prompt-title' };
const CHECKING_SENTENCE = 'Checking whether your payment went through. Please keep this page open.';
// The connection ended for good (refused, the session gone): nothing more can tell here.
const CHECKING_CLOSED = 'This page can no longer ask whether your payment went through. Reload it to see.';

function statusSentence(session, finalText) {
  switch (session.status) {
    case 'created':
      return `Ready to pay ${formatAmount(session.amount, session.currency)}.`;
    case 'processing':
      return `Processing your payment, attempt ${session.attempt} of ${session.max_attempts}. Please keep this page open.`;
    case 'interrupted':
      return 'Payment interrupted.';
    default:
      return FINAL[session.status] ? `${FINAL[session.status][1]}. ${finalText}` : STATUS_LABELS[session.status] ?? '';
  }
}

function renderTestCards() {
  const list = $('test-cards');
  for (const { number, label } of SANDBOX_CARDS) {
    const item = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'test-card';
    button.dataset.card = number;
    button.innerHTML = '<code></code><span></span>';
    button.querySelector('code').textContent = number.replace(/(\d{4})(?=\d)/g, '$1 ');
    button.querySelector('span').textContent = label;
    button.addEventListener('click', () => {
      $('card').value = number;
      $('card').focus();
    });
    item.append(button);
    list.append(item);
  }
}

// The provider decides how the card is collected: the sandbox takes a number typed
// here; Stripe's card field comes from Stripe.js and paylive only sees a PaymentMethod.
async function cardSource() {
  let config = { gateway: 'sandbox' };
  try {
    const reply = await fetch('/api/checkout/config');
    if (reply.ok) config = await reply.json();
  } catch {
    // No config: the sandbox form still works, and the server refuses what it cannot take.
  }
  if (config.gateway !== 'stripe') {
    renderTestCards();
    return { method: async () => $('card').value.trim(), authenticate: null };
  }
  $('sandbox-card').hidden = true;
  $('stripe-card-box').hidden = false;
  setText('foot', 'Demo checkout · Stripe gateway: the card is collected by Stripe.js');
  const stripe = await mountStripe(config.stripe, $('stripe-card'));
  return {
    method: async () => ({ stripe: await stripe.paymentMethod() }),
    authenticate: (clientSecret) => stripe.authenticate(clientSecret),
  };
}

async function start() {
  let source;
  try {
    source = await cardSource();
  } catch (err) {
    showMessage(err.message, 'error');
    source = { method: async () => { throw err; }, authenticate: null };
  }
  const params = fragmentParams();
  const sessionId = params.get('session');
  const secret = params.get('secret');
  if (!sessionId || !secret) {
    $('checkout').dataset.status = 'error';
    setText('status', 'No session');
    $('status').dataset.status = 'error';
    showMessage('Open this page with #session=ps_…&secret=… in the URL (or via /demo).', 'error');
    return;
  }

  const client = new PayliveSession({ sessionId, secret, autoConnect: false });
  // Debug handle for the browser console and the browser tests.
  window.__paylive = client;
  let busy = false; // a command of ours is waiting for its answer
  let shownStatus = null; // the status the live region last announced
  let shownChecking = null; // what the live region said of the payment being checked
  let retryWaiting = false; // the retry button is counting down
  let focusInCard = false; // the keyboard focus was last inside the checkout card
  document.addEventListener('focusin', (event) => {
    focusInCard = $('checkout').contains(event.target);
  });

  let authenticating = null; // the attempt whose 3-D Secure step this page is completing

  // A pay or retry lost its answer (the connection, a timeout, a proxy's 502/503/504):
  // it may have started a charge. Until the session's state tells, the page says it is
  // checking and offers no Pay or Retry (a second one would only be refused, and a
  // double click on money is what this page must never invite).
  function checking() {
    return client.outcomeUnknown && !TERMINAL_STATUSES.has(client.session?.status);
  }

  function render() {
    const session = client.session;
    const status = session?.status ?? 'loading';
    $('checkout').dataset.status = status;
    $('status').dataset.status = status;
    setText('status', STATUS_LABELS[status] ?? status);
    if (!session) return;

    setText('order', session.order_id);
    setText('amount', formatAmount(session.amount, session.currency));
    setText('attempt', session.attempt > 0 ? `Attempt ${session.attempt} of ${session.max_attempts}` : '');

    const terminal = TERMINAL_STATUSES.has(status);
    const unknown = checking();
    $('checking').hidden = !unknown;
    // The connection ended for good: no snapshot can come any more, so the page says so
    // rather than "keep this page open".
    const stranded = unknown && client.connection === 'closed';
    if (stranded) setText('checking-text', CHECKING_CLOSED);
    $('processing').hidden = status !== 'processing';
    $('prompt').hidden = status !== 'interrupted';
    $('final').hidden = !terminal;
    $('pay-form').hidden = terminal;

    $('pay').hidden = status === 'interrupted';
    $('retry').hidden = status !== 'interrupted';
    $('pay').disabled = busy || unknown || status !== 'created';
    $('cancel').disabled = terminal;
    $('card').disabled = status === 'processing';

    if (status === 'interrupted') renderPrompt();
    else setText('prompt-live', '');
    let detail = '';
    authenticate(session);
    if (terminal) {
      const [icon, title, text] = FINAL[status];
      setText('final-icon', icon);
      setText('final-title', title);
      detail = text;
      if (status === 'failed' && session.last_error?.message) detail = `${session.last_error.message}. ${text}`;
      if (session.needs_review) detail += ' A payment made after the end was refunded automatically.';
      setText('final-text', detail);
      // The outcome is on the screen: tell the shop the customer saw it (protocol 10).
      client.acknowledgeOutcome().catch(() => {});
    }
    if (unknown) {
      const sentence = stranded ? CHECKING_CLOSED : CHECKING_SENTENCE;
      if (shownChecking !== sentence) setText('announce', sentence);
      shownChecking = sentence;
      shownStatus = null; // said again once known
    } else if (status !== shownStatus) {
      shownChecking = null;
      shownStatus = status;
      setText('announce', statusSentence(session, detail));
    }
    keepFocus(status, terminal, unknown);
    tick();
  }

  // Pressing Pay disables it and a final state hides the form: the focus would fall
  // back to the top of the document, so it goes to what replaced the control instead.
  function keepFocus(status, terminal, unknown) {
    const el = document.activeElement;
    const lost = !el || el === document.body || el.disabled || el.closest('[hidden]');
    const target = terminal ? 'final-title' : unknown ? 'checking-title' : FOCUS_TARGET[status];
    if (focusInCard && lost) $(target)?.focus();
  }

  function renderPrompt() {
    const prompt = client.retryPrompt ?? {};
    const reason = prompt.reason ?? client.session?.last_error?.reason;
    const next = prompt.next_attempt ?? client.session.attempt + 1;
    const max = prompt.max_attempts ?? client.session.max_attempts;
    setText('prompt-title', prompt.outcome_unknown ? 'We could not confirm the payment' : 'The payment did not go through');
    setText('prompt-text', `${REASON_TEXT[reason] ?? 'The attempt was interrupted.'} You can try again (attempt ${next} of ${max}).`);
    $('no-double').hidden = !prompt.outcome_unknown;
    const noDouble = prompt.outcome_unknown ? ' You will not be charged twice.' : '';
    setText('prompt-live', `${$('prompt-title').textContent}. ${$('prompt-text').textContent}${noDouble}`);
  }

  // Runs every 100 ms while something counts down: both countdowns are computed
  // locally from the deadline and retry_at between server messages.
  function tick() {
    const remaining = client.remainingMs();
    const countdown = $('countdown');
    if (remaining !== null) {
      countdown.dataset.remainingMs = String(Math.round(remaining));
      setText('countdown', `${formatSeconds(remaining)} left`);
      const session = client.session;
      const attempt = session.attempts?.[session.attempts.length - 1];
      const total = attempt ? session.deadline - attempt.started_at : 0;
      $('countdown-bar').style.width = total > 0 ? `${Math.min(100, (100 * remaining) / total)}%` : '0%';
    } else {
      countdown.dataset.remainingMs = '';
    }

    const retryIn = client.retryInMs();
    const retryButton = $('retry');
    const unknown = checking();
    if (retryIn !== null) {
      retryButton.disabled = busy || unknown || retryIn > 0;
      $('retry-countdown').dataset.retryInMs = String(Math.round(retryIn));
      let wait = retryIn > 0 ? `You can try again in ${formatSeconds(retryIn)}.` : 'You can try again now.';
      if (unknown) wait = 'We are checking your last try first.';
      setText('retry-countdown', wait);
      setText('retry', retryIn > 0 ? `Retry in ${formatSeconds(retryIn)}` : 'Try again');
      if (retryWaiting && retryIn <= 0 && !unknown) setText('announce', 'You can try again now.');
      retryWaiting = retryIn > 0;
    } else if (client.session?.status === 'interrupted') {
      retryButton.disabled = busy || unknown;
    }
  }
  setInterval(tick, 100);

  async function run(action, command) {
    busy = true;
    showMessage(client.connection === 'connected' ? '' : 'Not connected: this will be sent as soon as the connection is back.', 'warn');
    render();
    try {
      await action();
      showMessage('');
    } catch (err) {
      // Plain words for the customer; the server's own text is for the developer.
      const { text, kind, code } = commandMessage(command, err);
      if (code !== null) console.warn(`paylive: ${command} settled ${code}: ${err.message}`);
      showMessage(text, kind, code);
    } finally {
      busy = false;
      render();
    }
  }

  // The provider asks the customer to confirm the attempt (3-D Secure): once the step
  // is done, paylive is asked to look the payment up rather than wait for a webhook.
  async function authenticate(session) {
    const attempt = session.attempts?.[session.attempts.length - 1];
    const action = attempt?.status === 'processing' ? attempt.action : null;
    if (!action || !source.authenticate || authenticating === attempt.idempotency_key) return;
    authenticating = attempt.idempotency_key;
    showMessage('Your bank asks you to confirm this payment.', 'info');
    try {
      await source.authenticate(action.client_secret);
      showMessage('');
    } catch (err) {
      showMessage(err.message, 'error');
    }
    client.check().catch(() => {});
  }

  $('pay-form').addEventListener('submit', (event) => {
    event.preventDefault();
    if (client.session?.status === 'interrupted') $('retry').click();
    else if (!$('pay').disabled) run(async () => client.pay(await source.method()), 'pay');
  });
  $('retry').addEventListener('click', () => run(async () => client.retry(await source.method()), 'retry'));
  $('cancel').addEventListener('click', () => run(() => client.cancel(), 'cancel'));

  client.on('session', render);
  client.on('retry_prompt', render);
  client.on('countdown', (message) => {
    $('countdown').dataset.serverRemainingMs = String(message.data.remaining_ms);
    tick();
  });
  client.on('error', ({ code, message }) => showMessage(`${message} (${code})`, 'error'));
  client.on('connection', ({ status, transport }) => {
    const el = $('connection');
    el.dataset.state = status;
    // Which transport carries the page (protocol 4.2): websocket, sse or polling.
    el.dataset.transport = transport ?? client.transport;
    el.querySelector('.connection-text').textContent = CONNECTION_LABELS[status] ?? status;
    el.title = `Live connection to the payment server (${el.dataset.transport})`;
    if (status === 'closed') render();
  });
  client.on('guard', (active) => {
    document.body.dataset.guard = active ? 'on' : 'off';
  });
  client.connect();
}

start();
