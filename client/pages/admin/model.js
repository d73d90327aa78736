// The dashboard's sessions as data: kept newest first, filtered by status, searched by
// order id and cut into pages, so the page renders one page of rows however many
// sessions it holds (10,000 active ones on a busy day). No DOM here: node tests it.

import { TERMINAL_STATUSES } from 'paylive-client';

export const PAGE_SIZE = 50;
// Finished sessions are dropped, oldest first, past this many (flagged ones are kept).
export const MAX_SESSIONS = 20_000;
// What the status filter offers besides each status.
export const FILTERS = ['all', 'active', 'needs_review'];

const created = (session) => session.created_at ?? 0;

/** Whether ``session`` passes the status filter (``showFinished`` only matters for 'all'). */
export function passes(session, filter, showFinished = true) {
  const finished = TERMINAL_STATUSES.has(session.status);
  if (filter === 'all') return showFinished || !finished;
  if (filter === 'active') return !finished;
  if (filter === 'needs_review') return Boolean(session.needs_review);
  return session.status === filter;
}

/** Whether ``session`` matches a search: part of its order id, or of its id. */
export function matches(session, needle) {
  if (!needle) return true;
  return (
    String(session.order_id ?? '').toLowerCase().includes(needle) ||
    String(session.id).toLowerCase().includes(needle)
  );
}

export class SessionTable {
  constructor({ maxSessions = MAX_SESSIONS } = {}) {
    this.maxSessions = maxSessions;
    /** @type {Map<string, object>} */
    this.byId = new Map();
    /** Ids, newest created first. */
    this.order = [];
  }

  get size() {
    return this.byId.size;
  }

  get(id) {
    return this.byId.get(id);
  }

  /** Insert or update one session; an older copy (lower seq) never overwrites a newer
   * one. True when something changed. */
  upsert(session) {
    if (!session?.id) return false;
    const known = this.byId.get(session.id);
    if (known) {
      if ((session.seq ?? 0) < (known.seq ?? 0)) return false;
      this.byId.set(session.id, session);
      return true;
    }
    this.byId.set(session.id, session);
    this.order.splice(this.#position(created(session)), 0, session.id);
    if (this.byId.size > this.maxSessions) this.#prune();
    return true;
  }

  replaceAll(sessions) {
    this.byId.clear();
    this.order = [];
    const sorted = [...sessions].sort((a, b) => created(b) - created(a));
    for (const session of sorted) {
      if (!session?.id || this.byId.has(session.id)) continue;
      this.byId.set(session.id, session);
      this.order.push(session.id);
    }
  }

  /** One page of the sessions that pass ``filter`` and match ``search``. */
  view({ filter = 'all', search = '', showFinished = true, page = 0, pageSize = PAGE_SIZE } = {}) {
    const needle = search.trim().toLowerCase();
    const found = [];
    let active = 0;
    let review = 0;
    for (const id of this.order) {
      const session = this.byId.get(id);
      if (!TERMINAL_STATUSES.has(session.status)) active += 1;
      if (session.needs_review) review += 1;
      if (passes(session, filter, showFinished) && matches(session, needle)) found.push(session);
    }
    const pages = Math.max(1, Math.ceil(found.length / pageSize));
    const current = Math.min(Math.max(0, page), pages - 1);
    return {
      rows: found.slice(current * pageSize, (current + 1) * pageSize),
      total: found.length,
      page: current,
      pages,
      first: found.length === 0 ? 0 : current * pageSize + 1,
      active,
      finished: this.byId.size - active,
      review,
    };
  }

  /** Where a session created at ``at`` goes: after every newer or equal one (a new
   * arrival usually lands at the front, so the search is short). */
  #position(at) {
    let lo = 0;
    let hi = this.order.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (created(this.byId.get(this.order[mid])) > at) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  #prune() {
    let excess = this.byId.size - this.maxSessions;
    for (let i = this.order.length - 1; i >= 0 && excess > 0; i -= 1) {
      const session = this.byId.get(this.order[i]);
      if (!TERMINAL_STATUSES.has(session.status) || session.needs_review) continue;
      this.byId.delete(session.id);
      this.order.splice(i, 1);
      excess -= 1;
    }
  }
}

/** The search form's dates (``YYYY-MM-DD``, days of the browser's clock) as the epoch
 * ms of ``GET /api/admin/search``: ``from`` where its day starts, ``to`` where the day
 * after it starts (exclusive); '' for a date not given. The day after is found on the
 * calendar, not 24 hours on: a day the clocks change has 23 or 25 hours. */
export function dayRange(from, to) {
  const start = (value, days = 0) => {
    const [year, month, day] = value.split('-').map(Number);
    return String(new Date(year, month - 1, day + days).getTime());
  };
  return { from: from ? start(from) : '', to: to ? start(to, 1) : '' };
}
