// What the demo checkout tells the customer when a pay, retry or cancel ends without an
// ack: plain words for every code a customer can meet, never the server's technical
// text, and the code kept beside them for developers.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { PayliveError } from '../../../client/paylive/emitter.js';
import { COMMAND_MESSAGES, commandMessage } from '../../../client/pages/checkout/messages.js';

// The codes a customer can meet on pay, retry or cancel: the client's own, and
// paylive's refusals of those routes (protocol 3.1).
const CODES = [
  'connection_lost', 'timeout', 'closed', 'queue_full', 'engine_unavailable', 'overloaded',
  'gateway_unavailable', 'idempotency_key_in_use', 'rate_limited', 'invalid_state',
  'invalid_card', 'invalid_payment_method', 'invalid_field', 'retry_not_yet_allowed',
  'max_attempts_reached', 'already_paid', 'idempotency_key_reused', 'error',
];
// What only a developer should read: the codes, HTTP, keys, milliseconds.
const TECHNICAL = /[a-z]+_[a-z_]+|HTTP|Idempotency|\d+\s*ms\b|\brefused\b/i;

const server = (code) => new PayliveError(code, 'a request with this Idempotency-Key is running (HTTP 409, 20000 ms)');

test('every code a customer can meet reads as plain words, with the code kept beside them', () => {
  for (const command of ['pay', 'retry', 'cancel']) {
    for (const code of CODES) {
      const { text, kind, code: kept } = commandMessage(command, server(code));
      assert.ok(text.length > 0 && !TECHNICAL.test(text), `${command} ${code}: ${text}`);
      assert.ok(['warn', 'error'].includes(kind), `${command} ${code}: ${kind}`);
      assert.equal(kept, code);
    }
  }
});

test('a cancel still running on the server says so', () => {
  assert.deepEqual(commandMessage('cancel', server('idempotency_key_in_use')), {
    text: 'Still cancelling — checking with the server…',
    kind: 'warn',
    code: 'idempotency_key_in_use',
  });
});

test('a pay or retry that may have started a charge is checked, never refused nor offered again', () => {
  for (const command of ['pay', 'retry']) {
    for (const code of ['connection_lost', 'timeout', 'engine_unavailable', 'idempotency_key_in_use']) {
      const { text, kind } = commandMessage(command, server(code));
      assert.equal(kind, 'warn', `${command} ${code}`);
      assert.doesNotMatch(text, /try again|not sent|refused/i, `${command} ${code}: ${text}`);
    }
  }
});

test('a code no table knows gets the command\'s own sentence; an error without a code (the card form\'s) is shown as it is', () => {
  assert.deepEqual(commandMessage('cancel', server('something_new')), {
    text: COMMAND_MESSAGES.cancel.otherwise, kind: 'error', code: 'something_new',
  });
  assert.deepEqual(commandMessage('pay', new Error('Your card number is incomplete.')), {
    text: 'Your card number is incomplete.', kind: 'error', code: null,
  });
  // A code that is an Object property is no sentence of the table.
  assert.equal(commandMessage('pay', server('constructor')).text, COMMAND_MESSAGES.pay.otherwise);
});

test('a cancel answered already_paid says the payment went through, not to cancel again', () => {
  // A cancel whose void found the money taken is answered already_paid (protocol 2.1):
  // before, it read "The payment could not be cancelled. Please try again".
  const { text, kind } = commandMessage('cancel', server('already_paid'));
  assert.doesNotMatch(text, /try again|could not be cancelled/i, text);
  assert.match(text, /paid/i, text);
  assert.equal(kind, 'error');
});
