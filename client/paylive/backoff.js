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
