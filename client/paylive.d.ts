// Types of paylive.js, the browser client of paylive. The wire format they describe is
// docs/protocol.md (sections 2 and 4, and the sections after them); the names and
// payloads here follow it field for field. Epoch times are milliseconds (numbers).

// ---------------------------------------------------------------------------------
// The session (protocol section 2)

export type SessionStatus =
  | 'created'
  | 'processing'
  | 'interrupted'
  | 'succeeded'
  | 'failed'
  | 'cancelled'
  | 'expired';

export type ActiveStatus = 'created' | 'processing' | 'interrupted';
export type TerminalStatus = 'succeeded' | 'failed' | 'cancelled' | 'expired';

export type AttemptStatus =
  | 'processing'
  | 'succeeded'
  | 'declined'
  | 'timeout'
  | 'network_error'
  | 'provider_error'
  | 'voided'
  | 'refunded';

/** Why an attempt ended without success. `timeout` and `network_error` leave the outcome unknown. */
export type InterruptionReason = 'timeout' | 'network_error' | 'declined' | 'provider_error';

/** What a `state` event says happened. */
export type StateCause =
  | 'attempt_started'
  | 'timeout'
  | 'declined'
  | 'network_error'
  | 'provider_error'
  | 'succeeded'
  | 'late_success'
  | 'late_success_refunded'
  | 'duplicate_charge_refunded'
  | 'voided'
  | 'cancelled'
  | 'expired'
  | 'failed'
  | 'effect_done'
  | 'effect_overdue'
  | 'review_resolved'
  | 'requires_action'
  | 'outcome_seen'
  | 'outcome_unseen'
  | 'refund_requested';

/** A step the customer must take for the provider (3-D Secure with Stripe.js). */
export interface AttemptAction {
  type: 'authenticate';
  provider: 'stripe';
  /** The PaymentIntent's client secret, for `stripe.handleNextAction`. */
  client_secret: string;
}

export interface Attempt {
  number: number;
  status: AttemptStatus;
  started_at: number;
  ended_at: number | null;
  /** `"{session_id}:{number}"`: the provider never sees two charges under one key. */
  idempotency_key: string;
  decline_code?: string;
  provider_ref?: string;
  /** Only while the attempt is processing and the provider waits for the customer. */
  action?: AttemptAction;
}

export interface LastError {
  reason: InterruptionReason;
  attempt: number;
  message: string;
  decline_code?: string;
}

export interface Session {
  id: string;
  order_id: string;
  /** In the currency's minor unit (cents for EUR). */
  amount: number;
  currency: string;
  status: SessionStatus;
  /** The current or last attempt's number; 0 before the first. */
  attempt: number;
  max_attempts: number;
  /** Set while `processing`: when the attempt times out. */
  deadline: number | null;
  /** Set while `interrupted`: from when a retry is allowed. */
  retry_at: number | null;
  last_error: LastError | null;
  attempts: Attempt[];
  created_at: number;
  updated_at: number;
  expires_at: number;
  /** Goes up by one with every durable event. */
  seq: number;
  /** A payment made after the end was refunded, or a gateway effect is overdue: staff should look. */
  needs_review: boolean;
  metadata: Record<string, unknown>;
  /** When a checkout acknowledged drawing the outcome (`acknowledgeOutcome`); null until then. */
  outcome_seen_at?: number | null;
}

/** What the page may offer after an interruption (`retry_prompt` data, or derived from a snapshot). */
export interface RetryPrompt {
  attempt: number;
  next_attempt: number;
  max_attempts: number;
  reason: InterruptionReason | null;
  retry_at: number | null;
  /** True for `timeout` and `network_error`: say "you will not be charged twice", not "failed". */
  outcome_unknown: boolean;
}

export interface Countdown {
  attempt: number;
  remaining_ms: number;
  deadline: number;
}

/** The admin summary (`GET /api/admin/summary`, the feed's `summary` message). */
export interface Summary {
  active: number;
  by_status: Record<SessionStatus, number>;
  interruptions: Record<InterruptionReason, number>;
  /** Succeeded over finished, 0 to 1; null before any session finished. */
  success_rate: number | null;
  recovered_by_retry: number;
  /** Reviews still open. */
  needs_review: number;
  /** Gateway effects decided and not yet confirmed by the provider, by kind. */
  effects_pending: Record<EffectKind, number>;
}

/** What must still reach the provider after a decision (docs/protocol.md section 2.2). */
export type EffectKind = 'void' | 'refund' | 'capture';

/**
 * A gateway effect as a customer's channel shows it (`effect_done`, `effect_overdue` and
 * `refund_requested` events; protocol 4.1, v1.1): what concerns the payer only.
 */
export interface CustomerEffect {
  /** Its idempotency key: `"{session_id}:{attempt}:{kind}"` (a refund asked for: `...:refund.{n}`). */
  id: string;
  session: string;
  attempt: number;
  kind: EffectKind;
  /** `cancelled`: a capture never to be made (its attempt was voided, its hold released). */
  status: 'pending' | 'done' | 'cancelled';
  created_at: number;
  done_at: number | null;
  /** A refund asked for (protocol 7): its number in the session, amount and reason. */
  number?: number;
  amount?: number;
  reason?: string;
}

/** One entry of a session's outbox as staff see it (the admin API, the admin feed's events). */
export interface GatewayEffect extends CustomerEffect {
  tries: number;
  next_at: number | null;
  /** The provider's error text on its last failed try. */
  last_error: string | null;
  /** Who asked for a refund: `merchant` or a staff name. */
  requested_by?: string;
  /** Marked done by hand (protocol 8.2): the staff name and their note. */
  done_by?: string;
  note?: string;
}

// ---------------------------------------------------------------------------------
// Server messages (protocol section 4)

/** Every server message. `session` and `seq` are null in messages about no single session. */
export interface Message<Type extends string, Data> {
  type: Type;
  session: string | null;
  seq: number | null;
  ts: number;
  data: Data;
}

export type SnapshotMessage = Message<'snapshot', { session: Session }>;
/** Durable: carries the session's new `seq`. On a customer's channel its effect is the customer's view. */
export type StateMessage = Message<
  'state',
  { session: Session; previous: SessionStatus; cause: StateCause; effect?: CustomerEffect; by_hand?: boolean }
>;
/** The admin feed's `state` (and a session's channel opened by staff): the effect whole. */
export type AdminStateMessage = Message<
  'state',
  { session: Session; previous: SessionStatus; cause: StateCause; effect?: GatewayEffect; by_hand?: boolean }
>;
/** Durable: right after a `state` into `interrupted`. */
export type RetryPromptMessage = Message<'retry_prompt', RetryPrompt & { reason: InterruptionReason }>;
export type CountdownMessage = Message<'countdown', Countdown>;
export type AckMessage = Message<'ack', { ref: string | number }>;
export type ErrorMessage = Message<'error', { code: ErrorCode; message: string; ref?: string | number }>;
export type PongMessage = Message<'pong', Record<string, never>>;
export type AdminSnapshotMessage = Message<'admin.snapshot', { sessions: Session[]; summary: Summary }>;
export type AdminCreatedMessage = Message<'admin.created', { session: Session }>;
export type SummaryMessage = Message<'summary', Summary>;

/** What the customer channel `/ws/sessions/{id}` sends. */
export type CustomerMessage =
  | SnapshotMessage
  | StateMessage
  | RetryPromptMessage
  | CountdownMessage
  | AckMessage
  | ErrorMessage
  | PongMessage;

/** What the admin feed `/ws/admin` sends: every durable event of every session, and more. */
export type AdminMessage =
  | AdminSnapshotMessage
  | AdminCreatedMessage
  | AdminStateMessage
  | RetryPromptMessage
  | SummaryMessage
  | ErrorMessage
  | PongMessage;

export type ServerMessage = CustomerMessage | AdminMessage;

// ---------------------------------------------------------------------------------
// Client commands (protocol section 4)

/** `{card}` with the sandbox; `{stripe: "pm_..."}` (made by Stripe.js) with Stripe. */
export type PaymentMethod = { card: string } | { stripe: string };

/**
 * A command frame. `key` (protocol 4.1, v1.2): its Idempotency-Key, 1 to 255 printable
 * characters; the same key and fields, sent again on any socket or over HTTP, are the
 * same request, decided once. The bundled client gives every command one of its own.
 */
export type ClientCommand =
  | { type: 'pay'; payment_method: PaymentMethod; ref?: string; key?: string }
  | { type: 'retry'; payment_method?: PaymentMethod; ref?: string; key?: string }
  | { type: 'cancel'; ref?: string; key?: string }
  | { type: 'interrupt'; reason: 'network_error'; ref?: string; key?: string }
  | { type: 'check'; ref?: string; key?: string }
  | { type: 'seen'; status: TerminalStatus; ref?: string; key?: string }
  | { type: 'ping' };

export type CommandType = 'pay' | 'retry' | 'cancel' | 'interrupt' | 'check' | 'seen';

// ---------------------------------------------------------------------------------
// Errors

/** Codes the server answers with: every `error.code` of docs/openapi.json (`error`: an
 * HTTP error no route answered). */
export type ServerErrorCode =
  | 'invalid_json'
  | 'invalid_request'
  | 'invalid_signature'
  | 'unknown_command'
  | 'request_timeout'
  | 'unauthorized'
  | 'forbidden'
  | 'role_not_allowed'
  | 'origin_not_allowed'
  | 'not_found'
  | 'unknown_attempt'
  | 'unknown_effect'
  | 'method_not_allowed'
  | 'invalid_state'
  | 'retry_not_yet_allowed'
  | 'max_attempts_reached'
  | 'already_paid'
  | 'effects_pending'
  | 'delivery_pending'
  | 'webhooks_off'
  | 'not_paid'
  | 'refund_exceeds_captured'
  | 'conflict'
  | 'idempotency_key_in_use'
  | 'invalid_field'
  | 'invalid_currency'
  | 'invalid_card'
  | 'invalid_payment_method'
  | 'idempotency_key_reused'
  | 'body_too_large'
  | 'headers_too_large'
  | 'rate_limited'
  | 'too_many_sockets'
  | 'overloaded'
  | 'engine_unavailable'
  | 'gateway_unavailable'
  | 'archive_unavailable'
  | 'shutting_down'
  | 'error';

/**
 * Codes the client makes up: a fatal close, or a command it gave up on. `connection_lost`
 * and `timeout`: the command was sent and its answer never came, so the server may have
 * applied it (the session tells; after a close for good, only a reload does). Over HTTP
 * (SSE, long-polling), a 502, 503 or 504 that is not paylive's own JSON error (a proxy's
 * or load balancer's page) is `connection_lost` too: the request may have reached
 * paylive, and so is paylive's 503 `shutting_down` and any 500; a request aborted after
 * `requestTimeout` is `timeout`. A command over HTTP answered so is first sent
 * again with its `Idempotency-Key` (`resends`): these codes settle it only when every
 * request of it went unanswered, or the last found the first still running
 * (`idempotency_key_in_use`). A `pay`, `retry` or `cancel` whose answer was lost with
 * the socket is first sent again too, with its `key`, on the next connection (socket or
 * HTTP), at most `resends` times. paylive's other 503s
 * (`overloaded`, ...) are refusals, nothing started, but `engine_unavailable` to a `pay`
 * or `retry` (on any transport) leaves its outcome unknown as well. A fatal
 * close's code (`unauthorized`, `unknown_session`, ...) rejects the commands not sent
 * yet; one sent on the socket settles `connection_lost`, one sent over HTTP (SSE,
 * long-polling) by its own request's answer.
 */
export type ClientErrorCode =
  | 'connection_lost'
  | 'timeout'
  | 'queue_full'
  | 'closed'
  | 'unauthorized'
  | 'origin_not_allowed'
  | 'unknown_session'
  | 'policy_violation'
  | 'bad_url';

/** A known code, or one added by a later server. */
export type ErrorCode = ServerErrorCode | ClientErrorCode | (string & {});

/** What a command's promise rejects with. */
export class PayliveError extends Error {
  constructor(code: ErrorCode, message?: string, details?: { ref?: string | number; closeCode?: number });
  name: 'PayliveError';
  code: ErrorCode;
  /** The command's `ref`, when the server refused a command. */
  ref?: string | number;
  /** The WebSocket close code, when the server closed the connection for good. */
  closeCode?: number;
}

// ---------------------------------------------------------------------------------
// Events

/** `on` returns this: call it to stop listening. */
export type Unsubscribe = () => void;

export class Emitter<Events extends object = Record<string, unknown>> {
  on<K extends keyof Events & string>(type: K, handler: (detail: Events[K]) => void): Unsubscribe;
  off<K extends keyof Events & string>(type: K, handler: (detail: Events[K]) => void): void;
  emit<K extends keyof Events & string>(
    type: K,
    ...detail: undefined extends Events[K] ? [detail?: Events[K]] : [detail: Events[K]]
  ): void;
}

export type ConnectionStatus =
  | 'idle'
  | 'connecting'
  | 'connected'
  | 'reconnecting'
  | 'offline'
  | 'closed';

/** What carries the live channel (protocol 4.2), best first. */
export type Transport = 'websocket' | 'sse' | 'polling';

export interface ConnectionDetail {
  status: ConnectionStatus;
  /** The transport this status is about (from `LiveConnection` and `PayliveSession`). */
  transport?: Transport;
  /** Reconnect attempts since the last stable connection. */
  attempt?: number;
  /** Milliseconds until the next attempt (`reconnecting`). */
  delay?: number;
  /** The close code and reason that ended the last connection. */
  code?: number;
  reason?: string;
  /** Set when the connection was closed for good (`closed` after a fatal close code). */
  error?: string;
}

export interface CloseDetail {
  code: number;
  reason: string;
  /** False when the close is final (a fatal close code, or `close()`). */
  reconnect: boolean;
  /** An open socket given up because the server stayed silent past `silenceTimeout`. */
  silent?: boolean;
  /** With `silent`: a ping had gone out on that socket, so it owed an answer. */
  pinged?: boolean;
  /** The transport that closed (from `LiveConnection`). */
  transport?: Transport;
}

export interface FatalDetail {
  code: number;
  reason: string;
  /** `unauthorized` (4401), `origin_not_allowed` (4403), `unknown_session` (4404), `policy_violation` (1008), `bad_url`. */
  error: string;
  transport?: Transport;
}

export interface SocketEvents {
  status: ConnectionDetail;
  open: undefined;
  /** A decoded server message (types added by a later server may come too). */
  message: ServerMessage;
  close: CloseDetail;
  fatal: FatalDetail;
}

export interface SessionErrorDetail {
  code: ErrorCode;
  message: string;
  /** Set when the connection was refused for good. */
  closeCode?: number;
}

/** The events of `PayliveSession` and what each handler receives. */
export interface PayliveSessionEvents {
  /** The session after every snapshot or state change: render from this. */
  session: Session;
  snapshot: SnapshotMessage;
  state: StateMessage;
  /** Show the retry prompt (`retryPrompt`, `retryInMs()`). */
  retry_prompt: RetryPromptMessage;
  /** Every countdown interval while processing; `remainingMs()` is exact in between. */
  countdown: CountdownMessage;
  /** An error no command promise was waiting for, or a connection refused for good. */
  error: SessionErrorDetail;
  connection: ConnectionDetail;
  /** The `beforeunload` guard turned on (true) or off (false). */
  guard: boolean;
  /** Every server message (types added by a later server may come too). */
  message: CustomerMessage;
}

// ---------------------------------------------------------------------------------
// Options

/** The part of a WebSocket the client uses; the browser's own fits. */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => unknown) | null;
  onmessage: ((event: any) => unknown) | null;
  onclose: ((event: any) => unknown) | null;
  onerror: ((event: any) => unknown) | null;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** The part of `window` the client uses (network events, the unload guard); the browser's own fits. */
export interface WindowLike {
  addEventListener(type: string, listener: (event: any) => unknown): void;
  removeEventListener(type: string, listener: (event: any) => unknown): void;
  navigator?: { onLine: boolean };
}

export interface SocketOptions {
  /** Send `{"type":"ping"}` this often (ms); 0 turns app-level pings off. Default 10000. */
  pingInterval?: number;
  /** The server's `PAYLIVE_COUNTDOWN_INTERVAL_MS`; it sets how long a silence is tolerated. Default 1000. */
  countdownInterval?: number;
  /**
   * A server silent for longer than this (ms) is gone, and an attempt not open after it is given up; null: 2 * countdownInterval + pingInterval.
   * On SSE, the margin on top of the server's ping interval: a stream silent for longer than both is given up and opened again;
   * on long-polling, on top of the server's `hold_ms`: a poll unanswered for longer than both is aborted and made again.
   */
  silenceTimeout?: number | null;
  /** Reconnect delay: uniform in [0, min(backoffMax, backoffBase * 2^n)) for attempt n. Defaults 500, 15000. */
  backoffBase?: number;
  backoffMax?: number;
  /** A connection that lasted this long (ms) resets the backoff. Default 5000. */
  stableAfter?: number;
  /** Listen to the window's `offline` and `online` events (from `connect()` until closed); offline, no transport is given up; back online, the transport in use (SSE and polling too) reconnects at once. Default true. */
  watchNetwork?: boolean;
  /** Injectable for tests and non-browser hosts; the global `WebSocket` by default. */
  WebSocket?: WebSocketConstructor;
  /** Injectable; the global `window` by default (null outside a browser). */
  window?: WindowLike | null;
}

/** The part of `EventSource` the client uses; the browser's own fits. */
export interface EventSourceLike {
  close(): void;
  addEventListener(type: string, listener: (event: any) => unknown): void;
  onopen: ((event: any) => unknown) | null;
  onmessage: ((event: any) => unknown) | null;
  onerror: ((event: any) => unknown) | null;
}

export type EventSourceConstructor = new (url: string) => EventSourceLike;
export type FetchLike = (url: string, init?: any) => Promise<any>;

export interface TransportOptions extends SocketOptions {
  /** The transports to use, best first. Default `['websocket', 'sse', 'polling']`. */
  transports?: readonly Transport[];
  /**
   * A transport with no first message this long after it started is skipped (ms); a
   * socket opened with `since` (sent nothing until something happens) has worked once
   * it opens, unless two open sockets in a row are given up as silent (`silenceTimeout`)
   * with nothing, not their snapshot nor an answer to a ping, received: then sockets are
   * skipped too (a middlebox that holds their frames). Default 5000.
   */
  firstMessageTimeout?: number;
  /**
   * On a lower transport, try a higher one this often (ms); 0: never. Default 30000. A
   * socket tried moves the page up once something came through on it (it sends a ping
   * as it opens with `since`), not merely once open.
   */
  upgradeInterval?: number;
  /** Injectable; the global `EventSource` by default. */
  EventSource?: EventSourceConstructor;
  /** Injectable; the global `fetch` by default. */
  fetch?: FetchLike;
}

export interface LiveConnectionOptions extends TransportOptions {
  /** A session's channel; null or absent: the admin feed. */
  sessionId?: string | null;
  /** The client secret (a session) or the admin token: sent in Authorization headers only. */
  secret: string;
  baseUrl?: string | null;
  /** The seq to resume from (`since`); null before any. */
  since?: () => number | null;
}

export interface PayliveSessionOptions extends TransportOptions {
  /** The session id (`ps_...`). */
  sessionId: string;
  /** Its client secret, from `POST /api/sessions`. */
  secret: string;
  /** Where the paylive server is (http(s) or ws(s) URL); the page's own origin by default. */
  baseUrl?: string | null;
  /** A command sent on the WebSocket without `ack` or `error` this long (ms) is rejected with `timeout`. Default 15000. */
  commandTimeout?: number;
  /**
   * Over HTTP (on SSE or long-polling), each request of a command is aborted after this
   * long (ms) and its answer taken as lost (a connection that swallows a request would
   * hold it for ever). Default 20000: above the server's bound on a command's provider
   * calls (`PAYLIVE_PROVIDER_DEADLINE_MS`, 15 s by default). 0, a negative value, NaN
   * or Infinity is the default; at most 2^31 - 1 (a timer's longest delay).
   */
  requestTimeout?: number;
  /**
   * Over HTTP, every command carries an `Idempotency-Key` of its own, and when its
   * answer is lost (the request failed or timed out, a proxy's 502/503/504, paylive's
   * 503 `shutting_down` or `engine_unavailable`, 409 `idempotency_key_in_use`) the same
   * request with the same key is sent again at most this many times; the server answers
   * what it did, never deciding it twice (protocol 3.1). On the socket every command
   * carries its key too (`key`, protocol 4.1, v1.2), and a `pay`, `retry` or `cancel`
   * whose answer was lost with the socket is sent again, the same frame with the same
   * key, on the next connection (a socket, or HTTP with the key as its
   * Idempotency-Key) at most this many times before it settles `connection_lost`; one
   * the page `close()`d is not. Default 2; 0: never. A value
   * that is no count (NaN, Infinity, negative, not a number) is the default; a fraction
   * is rounded down.
   */
  resends?: number;
  /** How long (ms) to wait before each of those. Default 1000 (also for NaN, Infinity or a negative value). */
  resendDelay?: number;
  /** At most this many commands wait for a connection (then `queue_full`). Default 32. */
  maxQueue?: number;
  /**
   * Ask before leaving the page while a payment is in flight: processing, or a pay/retry
   * unanswered or whose answer was lost, until the session's state tells. Default true.
   */
  guardUnload?: boolean;
  /** Connect from the constructor. Default true. */
  autoConnect?: boolean;
}

export type SocketDefaults = Readonly<
  Required<Omit<SocketOptions, 'WebSocket' | 'window'>> & {
    WebSocket: WebSocketConstructor | undefined;
    window: WindowLike | null;
  }
>;

export type TransportDefaults = SocketDefaults &
  Readonly<{
    transports: readonly Transport[];
    firstMessageTimeout: number;
    upgradeInterval: number;
    EventSource: EventSourceConstructor | undefined;
    fetch: FetchLike | undefined;
  }>;

export type SessionDefaults = TransportDefaults &
  Readonly<
    Required<Omit<PayliveSessionOptions, keyof TransportOptions | 'sessionId' | 'secret' | 'baseUrl'>> & {
      sessionId: null;
      secret: null;
      baseUrl: null;
    }
  >;

// ---------------------------------------------------------------------------------
// Classes

/** A WebSocket that comes back by itself (the admin dashboard uses it directly). */
export class ReconnectingSocket extends Emitter<SocketEvents> {
  /** `makeUrl()` is called before every attempt, so the URL may change; it may return a promise. */
  constructor(makeUrl: () => string | Promise<string>, options?: SocketOptions);
  readonly status: ConnectionStatus;
  readonly connected: boolean;
  /** How long a silent server (or an attempt not yet open) is tolerated before the socket is dropped (ms). */
  readonly silenceTimeout: number;
  /** Open the socket (again); nothing when already open or connecting. */
  connect(): void;
  /** Close for good; no reconnect until `connect()`. */
  close(code?: number, reason?: string): void;
  /** Drop the connection and connect again at once, backoff reset. */
  reconnectNow(): void;
  /** Drop the connection as a network failure would; it reconnects with backoff. */
  drop(reason?: string): void;
  /** Send a map now; false when not connected. */
  send(message: ClientCommand | Record<string, unknown>): boolean;
}

/**
 * The live channel over the best transport that works: WebSocket, then Server-Sent
 * Events, then long-polling, moving back up by itself (protocol 4.2). Same face as
 * `ReconnectingSocket`; commands go over the HTTP API when no socket carries them.
 */
export class LiveConnection extends Emitter<SocketEvents> {
  constructor(options: LiveConnectionOptions);
  /** The transport in use now. */
  readonly transport: Transport;
  readonly status: ConnectionStatus;
  readonly connected: boolean;
  /** The connection in use was opened with `since` (long-polling reads it for each poll: false). */
  readonly resumed: boolean;
  connect(): void;
  close(code?: number, reason?: string): void;
  reconnectNow(): void;
  drop(reason?: string): void;
  send(message: ClientCommand | Record<string, unknown>): boolean;
}

export interface PendingCommand {
  ref: string;
  type: CommandType;
  /** False while it waits for a connection (also to be sent again, after its socket dropped). */
  sent: boolean;
}

/** One payment session, live on its customer channel. */
export class PayliveSession extends Emitter<PayliveSessionEvents> {
  constructor(options: PayliveSessionOptions);
  readonly sessionId: string;
  /** The last session seen; null before the first snapshot. */
  readonly session: Session | null;
  /** `seq` of the last durable event applied; sent as `since` on reconnect. */
  readonly lastSeq: number | null;
  /** The current retry prompt; null unless interrupted. */
  readonly retryPrompt: RetryPrompt | null;
  /** The last countdown of the current attempt; null unless processing. */
  readonly countdown: Countdown | null;
  /** Estimated server clock minus local clock (ms). */
  readonly clockOffset: number;
  readonly connection: ConnectionStatus;
  /** The transport carrying the session now (`connection` events say when it changes). */
  readonly transport: Transport;
  readonly status: SessionStatus | null;
  /**
   * True while leaving the page could strand a payment: processing, a pay/retry not yet
   * answered, or one settled `connection_lost`, `timeout`, `engine_unavailable` or
   * `idempotency_key_in_use` until a snapshot, an attempt under way or an end is heard.
   */
  readonly guardActive: boolean;
  /**
   * True from the moment a sent `pay` or `retry` is settled without its answer
   * (`connection_lost`, also for a proxy's 502/503/504 over HTTP, `timeout`,
   * `engine_unavailable`, whose save may have been made with its reply lost, or over
   * HTTP `idempotency_key_in_use`: it may have started a charge) until the session's
   * state heard after it tells (a snapshot, an attempt under way or an end). Over HTTP
   * that is only after the same request, sent again with its `Idempotency-Key`
   * (`resends`), went unanswered too. It turns
   * true as the command's promise rejects, and
   * false just before the `session` event of the state that tells. Meanwhile a page
   * says it is checking the payment and offers no Pay or Retry.
   */
  readonly outcomeUnknown: boolean;
  /** Commands sent or queued and not yet answered. */
  readonly pendingCommands: PendingCommand[];
  /** A socket URL with the client secret and `since` (for other clients: this one opens with tickets). */
  url(): string;
  connect(): void;
  /**
   * Close for good: pending commands, sent ones included, are rejected with `closed`; the
   * guard is removed. An HTTP command's request under way (the outcome receipt's too) is
   * aborted and it is sent no more.
   */
  close(): void;
  /** Drop the connection and reconnect at once, resuming with `since` (without, for a snapshot, while a lost pay/retry's fate is unknown). */
  reconnect(): void;
  /** Drop the connection as a network failure would; it comes back by itself. */
  drop(): void;
  /** Start the first attempt; resolves with the `ack`, rejects with a `PayliveError`. */
  pay(card: string | PaymentMethod): Promise<AckMessage>;
  /** Start the next attempt; without `card` the server reuses the last method. */
  retry(card?: string | PaymentMethod | null): Promise<AckMessage>;
  cancel(): Promise<AckMessage>;
  /** Report that the attempt was lost on this side. */
  interrupt(reason?: 'network_error'): Promise<AckMessage>;
  /** Ask the server to look the attempt in flight up at the provider now (after 3-D Secure). */
  check(): Promise<AckMessage>;
  /**
   * Say that the page drew the session's final outcome (the outcome receipt): over the
   * live connection when it is up, else `POST /api/sessions/{id}/seen` sent as every
   * HTTP command is (an Idempotency-Key, each request bounded by `requestTimeout`, sent
   * again up to `resends` times when its answer is lost; `close()` stops it and it
   * rejects `closed`). Once per outcome; resolves with the session, or null while the
   * session has not ended; rejects with a `PayliveError` (`timeout`, `connection_lost`,
   * the server's code), after which it may be called again.
   */
  acknowledgeOutcome(): Promise<Session | null>;
  /** The server's clock now (epoch ms), as estimated from its messages. */
  serverNow(): number;
  /** Time left in the current attempt (ms); null unless processing. */
  remainingMs(): number | null;
  /** Time until a retry is allowed (ms); 0 when allowed now; null when no retry is pending. */
  retryInMs(): number | null;
}

// ---------------------------------------------------------------------------------
// Constants and helpers

export const JSON_PROTOCOL: 'paylive.v1.json';
/** Message types that carry a new `seq` and are replayed by `since`. */
export const DURABLE_TYPES: ReadonlySet<string>;
export const TERMINAL_STATUSES: ReadonlySet<SessionStatus>;
export const ACTIVE_STATUSES: ReadonlySet<SessionStatus>;
/** Interruption reasons after which the provider may have charged. */
export const OUTCOME_UNKNOWN_REASONS: ReadonlySet<InterruptionReason | null>;
/** Close codes after which reconnecting cannot help, and the error each stands for. */
export const FATAL_CLOSE_CODES: ReadonlyMap<number, string>;
/** The sandbox gateway's test cards (protocol section 3). */
export const SANDBOX_CARDS: ReadonlyArray<{ readonly number: string; readonly label: string }>;
export const SOCKET_DEFAULTS: SocketDefaults;
export const SESSION_DEFAULTS: SessionDefaults;
export const TRANSPORTS: readonly Transport[];
export const TRANSPORT_DEFAULTS: TransportDefaults;

/** Full-jitter backoff: uniform in [0, min(max, base * 2^attempt)). */
export function backoffDelay(attempt: number, base: number, max: number, random?: () => number): number;
/** `ws(s)://host` of `base`, or of the current page. */
export function socketOrigin(base?: string | null): string;
/** `http(s)://host` of `base`, or of the current page. */
export function httpOrigin(base?: string | null): string;
/** A new `Idempotency-Key`: 32 hex digits of randomness. */
export function newIdempotencyKey(): string;

/** How `sendKeyedRequest` is bounded; each as the `PayliveSession` option of that name. */
export interface KeyedRequestOptions {
  /** Injectable; the global `fetch` by default. */
  fetch?: FetchLike;
  /** Each request is aborted after this long (ms) and its answer taken as lost. Default 20000. */
  requestTimeout?: number;
  /** A request whose answer was lost is sent again, with its key, at most this many times. Default 2. */
  resends?: number;
  /** How long (ms) to wait before each of those. Default 1000. */
  resendDelay?: number;
  /** Aborting it gives the request up: `{ok: false, code: 'closed', unknown: true}`. */
  signal?: AbortSignal | null;
}

/** What a keyed request came to; `key` is the Idempotency-Key it was sent with. */
export type KeyedResult =
  | { ok: true; key: string; body: unknown }
  | {
      ok: false;
      key: string;
      code: ErrorCode;
      message: string;
      /**
       * The last answer was lost too (or the request was given up): it may have been
       * done, and only the state on the server can tell. Sent again with `key`, it is
       * answered with what it did. False: a refusal; nothing was done.
       */
      unknown: boolean;
    };

/**
 * One state-changing request (a POST unless `init.method` says otherwise) under one
 * `Idempotency-Key` (`init.headers`' own, else a new one), sent as the HTTP commands are:
 * each request bounded by `requestTimeout`, and sent again with the same key while its
 * answer is lost, up to `resends` times (protocol 3.1). The admin dashboard's staff
 * actions go this way. Never rejects.
 */
export function sendKeyedRequest(
  url: string,
  init?: { method?: string; headers?: Record<string, string>; body?: string },
  options?: KeyedRequestOptions,
): Promise<KeyedResult>;
/** The retry prompt a session implies; null unless it is interrupted. */
export function derivePrompt(session: Session | null | undefined): RetryPrompt | null;
/** "€19.99" from (1999, "EUR"), with the currency's own minor digits. */
export function formatAmount(amount: number, currency: string, locale?: string | string[]): string;
/** "12 s" or "1.4 s"; "" for null. */
export function formatSeconds(ms: number | null | undefined): string;
