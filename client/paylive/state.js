// What a page knows of its session, from the server's messages alone. Pure: the caller
// passes the local clock, so ordering, resuming and the retry prompt are testable
// without a socket.

import { DURABLE_TYPES, OUTCOME_UNKNOWN_REASONS } from './constants.js';

/** The retry prompt a session implies, for when no `retry_prompt` message was seen (after a snapshot). */
export function derivePrompt(session) {
  if (!session || session.status !== 'interrupted') return null;
  const reason = session.last_error?.reason ?? null;
  return {
    attempt: session.attempt,
    next_attempt: session.attempt + 1,
    max_attempts: session.max_attempts,
    reason,
    retry_at: session.retry_at,
    outcome_unknown: OUTCOME_UNKNOWN_REASONS.has(reason),
  };
}

export class SessionState {
  /** The last session map seen (null before the first snapshot). */
  session = null;
  /** `seq` of the last durable event applied; `since` on reconnect. */
  lastSeq = null;
  /** The current retry prompt (from `retry_prompt`, or derived from the session). */
  retryPrompt = null;
  /** Data of the last `countdown` of the current attempt. */
  countdown = null;
  /** Estimated server clock minus local clock (ms). */
  clockOffset = 0;

  /**
   * Take in one server message, received at local time `now` (ms). Returns
   * `'applied'`; `'skipped'` for a durable event already applied (a replay that
   * overlaps) or a snapshot older than the last `seq` applied; `'gap'` when durable events are missing before this one: nothing is
   * applied, and resuming with `since = lastSeq` makes the server replay them all,
   * this one included; `'other'` for a type that changes no state (`ack`, `pong`...).
   */
  receive(message, now) {
    // Replayed durable events keep the time they happened; only the others say what
    // the server's clock reads now.
    if (!DURABLE_TYPES.has(message.type) && typeof message.ts === 'number' && message.ts > 0) {
      this.clockOffset = message.ts - now;
    }
    const data = message.data ?? {};
    switch (message.type) {
      case 'snapshot': {
        if (!data.session) return 'applied';
        const seq = data.session.seq ?? message.seq;
        // Never back in time: a snapshot older than what was applied (a late answer
        // made before a newer event) stands for less than the page knows.
        if (typeof seq === 'number' && this.lastSeq !== null && seq < this.lastSeq) return 'skipped';
        this.lastSeq = seq ?? this.lastSeq;
        this.#apply(data.session);
        return 'applied';
      }
      case 'state': {
        const order = this.#order(message.seq);
        if (order === 'applied' && data.session) this.#apply(data.session);
        return order;
      }
      case 'retry_prompt': {
        const order = this.#order(message.seq);
        if (order === 'applied') this.retryPrompt = { ...data };
        return order;
      }
      case 'countdown':
        // 0 left is clamped (the server's clock may be well past the deadline): only
        // the message's `ts` tells the time then.
        if (typeof data.deadline === 'number' && typeof data.remaining_ms === 'number' && data.remaining_ms > 0) {
          this.clockOffset = data.deadline - data.remaining_ms - now;
        }
        this.countdown = { ...data };
        return 'applied';
      default:
        return 'other';
    }
  }

  /** The server's clock at local time `now`, as estimated from message timestamps. */
  serverNow(now) {
    return now + this.clockOffset;
  }

  /** Time left in the current attempt (ms); null when not processing. */
  remainingMs(now) {
    const deadline = this.session?.status === 'processing' ? this.session.deadline : null;
    if (deadline == null) return null;
    return Math.max(0, deadline - this.serverNow(now));
  }

  /** Time until a retry is allowed (ms); 0 when allowed now; null when no retry is pending. */
  retryInMs(now) {
    const at = this.retryPrompt?.retry_at ?? null;
    if (at == null || this.session?.status !== 'interrupted') return null;
    return Math.max(0, at - this.serverNow(now));
  }

  /**
   * Durable events must come in `seq` order with no gap. An old one (a replay
   * overlapping what was seen) is skipped; a later one after a gap is not applied.
   */
  #order(seq) {
    if (typeof seq !== 'number' || this.lastSeq === null) {
      if (typeof seq === 'number') this.lastSeq = seq;
      return 'applied';
    }
    if (seq <= this.lastSeq) return 'skipped';
    if (seq > this.lastSeq + 1) return 'gap';
    this.lastSeq = seq;
    return 'applied';
  }

  #apply(session) {
    this.session = session;
    this.retryPrompt = derivePrompt(session);
    if (session.status !== 'processing') this.countdown = null;
  }
}
