// Reconnect delays: pure, no timers, so node's test runner can check them.

/**
 * Full-jitter backoff (as in centrifuge-js `utils.ts`): a fresh uniform draw in
 * [0, min(max, base * 2^attempt)) for every attempt, so a crowd of clients dropped
 * together does not come back together. `random` is injectable for tests.
 */
export function backoffDelay(attempt, base, max, random = Math.random) {
  const cap = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}

/**
 * The attempt counter behind the delays. A connection that stayed up for
 * `stableAfter` ms resets it, so a flapping network keeps backing off while a
 * connection that was healthy for a while comes back at once.
 */
export class Backoff {
  attempt = 0;
  #openedAt = 0;

  constructor({ backoffBase, backoffMax, stableAfter }, random = Math.random) {
    this.base = backoffBase;
    this.max = backoffMax;
    this.stableAfter = stableAfter;
    this.random = random;
  }

  /** The delay before the next attempt (ms); counts the attempt. */
  next() {
    const delay = backoffDelay(this.attempt, this.base, this.max, this.random);
    this.attempt += 1;
    return delay;
  }

  reset() {
    this.attempt = 0;
  }

  opened(now) {
    this.#openedAt = now;
  }

  /** The connection ended (or never opened): a long enough one resets the count. */
  closed(now) {
    if (this.#openedAt && now - this.#openedAt >= this.stableAfter) this.attempt = 0;
    this.#openedAt = 0;
  }
}

/** Close code of a worker that restarts (a drain, docs/protocol.md section 4.3). */
export const SERVICE_RESTART = 1012;

/**
 * The reconnect delay a draining server asks for: after close code 1012 with the
 * reason `restarting; reconnect_within_ms=<n>`, a uniform draw in [0, n), so that the
 * sockets closed together do not come back together; null for any other close (the
 * usual backoff applies).
 */
export function restartDelay(code, reason, random = Math.random) {
  if (code !== SERVICE_RESTART) return null;
  const hint = /reconnect_within_ms=(\d{1,7})/.exec(String(reason ?? ''));
  if (!hint) return null;
  return Math.floor(random() * Number(hint[1]));
}
