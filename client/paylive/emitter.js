// The event emitter the socket and the session share, and the client's error type.

/** An error the server sent (`{code, message}`) or one the client made up (`connection_lost`). */
export class PayliveError extends Error {
  constructor(code, message, details = {}) {
    super(message || code);
    this.name = 'PayliveError';
    this.code = code;
    Object.assign(this, details);
  }
}

/** A minimal event emitter: `on` returns a function that unsubscribes. */
export class Emitter {
  #handlers = new Map();

  on(type, handler) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(handler);
    return () => this.off(type, handler);
  }

  off(type, handler) {
    this.#handlers.get(type)?.delete(handler);
  }

  emit(type, detail) {
    for (const handler of [...(this.#handlers.get(type) ?? [])]) {
      try {
        handler(detail);
      } catch (err) {
        // One broken listener must not stop the others or the socket.
        console.error(`paylive: a '${type}' listener threw`, err);
      }
    }
  }
}
