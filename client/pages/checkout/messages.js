// What the demo checkout tells the customer when a pay, retry or cancel does not end in
// an `ack`: short sentences in plain words, never the server's technical text (that
// and the code stay for the developer: the console and `data-code` on the message).
// No DOM here: node tests it (tests/js/unit/checkout_messages.test.js).

// `kind` is the message's look: `warn` while what happened is not known yet (the page
// then checks, or the status above tells), `error` for a refusal that changed nothing.
const CLOSED = {
  text: 'This page lost its link to the payment server. Reload it to continue.',
  kind: 'error',
};
const BUSY = 'The payment server is busy right now.';
const TOO_MANY = 'Too many tries in a short time.';

// A pay or retry. The codes that leave its outcome unknown (it may have started a
// charge: `connection_lost`, `timeout`, `engine_unavailable`, `idempotency_key_in_use`)
// never say "refused" nor invite paying again: the page is checking.
const PAYMENT = {
  connection_lost: { text: 'The connection dropped while sending; the status above shows what happened.', kind: 'warn' },
  timeout: { text: 'No answer came in time; the status above shows what happened.', kind: 'warn' },
  engine_unavailable: { text: 'The payment server could not confirm it; the status above shows what happened.', kind: 'warn' },
  idempotency_key_in_use: { text: 'Your payment is still being processed — checking with the server…', kind: 'warn' },
  // paylive's refusals that changed nothing (protocol 3.1): this try started nothing
  // (an earlier attempt in doubt is the retry prompt's to speak of, not this).
  overloaded: { text: `${BUSY} This try was not sent; please try again in a moment.`, kind: 'error' },
  rate_limited: { text: `${TOO_MANY} This try was not sent; please wait a moment, then try again.`, kind: 'error' },
  gateway_unavailable: { text: 'The payment provider cannot be reached right now. This try was not sent; please try again in a moment.', kind: 'error' },
  invalid_card: { text: 'That card number is not valid. Please check it and try again.', kind: 'error' },
  invalid_payment_method: { text: 'These card details were not accepted. Please check them and try again.', kind: 'error' },
  invalid_field: { text: 'These card details were not accepted. Please check them and try again.', kind: 'error' },
  retry_not_yet_allowed: { text: 'Please wait a moment before you try again.', kind: 'error' },
  max_attempts_reached: { text: 'No more tries are allowed for this payment. Please contact the shop.', kind: 'error' },
  already_paid: { text: 'This order is already paid.', kind: 'error' },
  invalid_state: { text: 'This payment has already moved on; the status above shows where it stands.', kind: 'error' },
  queue_full: { text: 'Too many requests are waiting for the connection. Please wait a moment.', kind: 'error' },
  closed: CLOSED,
};

// A cancel: sent again with its key when its answer was lost, so one that still ends
// without an answer may have been made; the session's state tells.
const CANCEL = {
  connection_lost: { text: 'The connection dropped while cancelling; the status above shows whether it went through.', kind: 'warn' },
  timeout: { text: 'We could not confirm the cancellation yet; the status above shows whether it went through.', kind: 'warn' },
  engine_unavailable: { text: 'We could not confirm the cancellation yet; the status above shows whether it went through.', kind: 'warn' },
  idempotency_key_in_use: { text: 'Still cancelling — checking with the server…', kind: 'warn' },
  overloaded: { text: `${BUSY} Please try cancelling again in a moment.`, kind: 'error' },
  rate_limited: { text: `${TOO_MANY} Please wait a moment, then cancel again.`, kind: 'error' },
  gateway_unavailable: { text: 'The payment provider cannot be reached right now. Please try cancelling again in a moment.', kind: 'error' },
  invalid_state: { text: 'This payment can no longer be cancelled; the status above shows where it stands.', kind: 'error' },
  // Its void found the money taken (protocol 2.1): the order is paid, not cancelled.
  already_paid: { text: 'Too late to cancel: this order is already paid.', kind: 'error' },
  queue_full: { text: 'Too many requests are waiting for the connection. Please wait a moment.', kind: 'error' },
  closed: CLOSED,
};

/** The sentences of each command, and the one for a code none of them knows. */
export const COMMAND_MESSAGES = Object.freeze({
  pay: { codes: PAYMENT, otherwise: 'Your payment could not be started. Please try again, or contact the shop.' },
  retry: { codes: PAYMENT, otherwise: 'Your payment could not be started. Please try again, or contact the shop.' },
  cancel: { codes: CANCEL, otherwise: 'The payment could not be cancelled. Please try again, or contact the shop.' },
});

/**
 * What to tell the customer of `command` (`pay`, `retry`, `cancel`) settled with `err`:
 * `{text, kind, code}`; `code` is the technical one (null for an error without one).
 * An error without a code is the card form's own (Stripe.js says what is wrong with the
 * card in words meant for the customer): its message is shown as it is.
 */
export function commandMessage(command, err) {
  const code = typeof err?.code === 'string' ? err.code : null;
  if (code === null) return { text: String(err?.message ?? err ?? ''), kind: 'error', code };
  const messages = COMMAND_MESSAGES[command] ?? COMMAND_MESSAGES.pay;
  const known = Object.hasOwn(messages.codes, code) ? messages.codes[code] : null;
  return known ? { ...known, code } : { text: messages.otherwise, kind: 'error', code };
}
