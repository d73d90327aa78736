// The protocol's names and numbers as the client needs them (docs/protocol.md).

/** The one subprotocol this client speaks (section 4). */
export const JSON_PROTOCOL = 'paylive.v1.json';

/** Message types that carry a new `seq` and are replayed by `since`. */
export const DURABLE_TYPES = new Set(['state', 'retry_prompt']);

export const TERMINAL_STATUSES = new Set(['succeeded', 'failed', 'cancelled', 'expired']);
export const ACTIVE_STATUSES = new Set(['created', 'processing', 'interrupted']);

/** Interruption reasons after which the provider may have charged: it is voided first. */
export const OUTCOME_UNKNOWN_REASONS = new Set(['timeout', 'network_error']);

/** Close codes after which reconnecting cannot help (section 4). */
export const FATAL_CLOSE_CODES = new Map([
  [4401, 'unauthorized'],
  [4403, 'origin_not_allowed'],
  [4404, 'unknown_session'],
  [1008, 'policy_violation'],
]);

/** The card numbers of the sandbox gateway (section 3). */
export const SANDBOX_CARDS = [
  { number: '4242424242424242', label: 'Succeeds' },
  { number: '4000000000000002', label: 'Declined: card_declined (retryable)' },
  { number: '4000000000009995', label: 'Declined: insufficient_funds (retryable)' },
  { number: '4000000000009979', label: 'Declined: stolen_card (fails the session)' },
  { number: '4000000000000119', label: 'Provider error (retryable)' },
  { number: '4000000000000408', label: 'Never answers: the attempt times out' },
  { number: '4000000000000507', label: 'Gateway unreachable: network error' },
  { number: '4000000000000523', label: 'Charged, answer lost: network error, then succeeds' },
  { number: '4000000000000770', label: 'Charged, webhook arrives late: late success' },
];
