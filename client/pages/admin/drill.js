// The drill-down: one session as staff see it (its timeline with who did what,
// attempts, refunds and outbox of gateway effects), and, for a role that may act, the
// forms that refund, mark an effect done by hand and resolve its review. It reads the
// admin API with the token the dashboard holds; every text goes in as text, never as
// markup.

import { formatAmount } from 'paylive-client';

import { StaffActions, clearFailure, showFailure } from './actions.js';

// While open, the session is read again this often: a failed try of an effect changes
// its outbox without a durable event on the feed.
const REFRESH_MS = 3000;
const $ = (id) => document.getElementById(id);

function clock(ms) {
  if (!ms) return '–';
  const d = new Date(ms);
  return `${d.toLocaleTimeString(undefined, { hour12: false })}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function pill(status) {
  const span = el('span', status, 'status-pill');
  span.dataset.status = status;
  return span;
}

function row(cells) {
  const tr = document.createElement('tr');
  for (const cell of cells) {
    const td = document.createElement('td');
    if (cell instanceof Node) td.append(cell);
    else td.textContent = cell ?? '–';
    tr.append(td);
  }
  return tr;
}

/** What one durable event says, in a few words. */
export function describeEvent(event) {
  const data = event.data ?? {};
  if (event.type === 'retry_prompt') {
    return `retry prompt: attempt ${data.next_attempt} of ${data.max_attempts} allowed (${data.reason})`;
  }
  const status = data.session?.status;
  const move = data.previous && data.previous !== status ? `${data.previous} → ${status}` : status;
  const effect = data.effect;
  if (effect && data.cause === 'refund_requested') {
    return `refund of ${effect.amount} asked for by ${effect.requested_by ?? 'the shop'}`;
  }
  if (effect && data.by_hand) {
    return `${effect.kind} of attempt ${effect.attempt} marked done by hand by ${effect.done_by}: ${effect.note}`;
  }
  if (effect) {
    const tries = effect.tries === 1 ? '1 try' : `${effect.tries} tries`;
    const what = `${effect.kind} of attempt ${effect.attempt}`;
    return data.cause === 'effect_done'
      ? `${what} confirmed by the provider after ${tries}`
      : `${what} still failing after ${tries}: flagged for review`;
  }
  const attempt = data.session?.attempt ? `, attempt ${data.session.attempt}` : '';
  return `${move}${attempt}`;
}

export class Drill {
  /** ``token()`` gives the admin token; ``onChange(session)`` hears of a resolved review. */
  constructor(token, onChange) {
    this.token = token;
    this.onChange = onChange;
    this.dialog = $('drill');
    this.sessionId = null;
    this.timer = null;
    this.loading = null;
    this.actions = new StaffActions(token);
    $('drill-close').addEventListener('click', () => this.dialog.close());
    this.dialog.addEventListener('close', () => this.#stop());
    $('review-form').addEventListener('submit', (event) => {
      event.preventDefault();
      void this.#resolve();
    });
    $('refund-form').addEventListener('submit', (event) => {
      event.preventDefault();
      void this.#refund();
    });
    $('drill-effects-body').addEventListener('click', (event) => {
      const button = event.target.closest('button[data-done]');
      if (button) void this.#markDone(button.dataset.done, button);
    });
  }

  get openId() {
    return this.dialog.open ? this.sessionId : null;
  }

  open(sessionId) {
    this.sessionId = sessionId;
    $('drill-id').textContent = sessionId;
    for (const id of ['review-error', 'refund-error', 'done-error']) clearFailure($(id));
    // The forms are shared by every session: pressed only while this one's action runs.
    $('review-submit').disabled = this.actions.running(`review ${sessionId}`);
    $('refund-submit').disabled = this.actions.running(`refund ${sessionId}`);
    $('drill-error').textContent = '';
    for (const id of ['drill-timeline', 'drill-attempts-body', 'drill-effects-body']) {
      $(id).replaceChildren();
    }
    if (!this.dialog.open) this.dialog.showModal();
    clearInterval(this.timer);
    this.timer = setInterval(() => void this.refresh(), REFRESH_MS);
    return this.refresh();
  }

  /** A feed event for ``sessionId`` arrived: read it again if it is the one open. */
  notice(sessionId) {
    if (this.openId === sessionId) void this.refresh();
  }

  async refresh() {
    const sessionId = this.sessionId;
    if (!sessionId || !this.dialog.open) return;
    // One read at a time; a notice during a read is answered by the next timer tick.
    if (this.loading) return this.loading;
    this.loading = this.#load(sessionId).finally(() => {
      this.loading = null;
    });
    return this.loading;
  }

  async #load(sessionId) {
    try {
      const reply = await this.#api(`/api/admin/sessions/${encodeURIComponent(sessionId)}/events`);
      const body = await reply.json();
      if (sessionId !== this.sessionId) return;
      if (!reply.ok) {
        $('drill-error').textContent = body?.error?.message ?? `the server answered ${reply.status}`;
        return;
      }
      $('drill-error').textContent = '';
      this.#render(body.session, body.events ?? [], body.complete !== false);
    } catch (error) {
      $('drill-error').textContent = `Could not read the session: ${error.message}`;
    }
  }

  #api(path, init = {}) {
    const headers = { Authorization: `Bearer ${this.token()}`, ...(init.headers ?? {}) };
    return fetch(path, { ...init, headers });
  }

  #render(session, events, complete) {
    $('drill-title').textContent = `Order ${session.order_id}`;
    const facts = $('drill-facts');
    facts.replaceChildren(
      el('span', formatAmount(session.amount, session.currency), 'drill-amount'),
      pill(session.status),
    );
    if (session.needs_review) facts.append(el('span', 'needs review', 'review-flag'));
    if (['succeeded', 'failed', 'cancelled', 'expired'].includes(session.status)) {
      // The outcome receipt (protocol 10): did a checkout show the customer the outcome?
      const seen = session.outcome_seen_at;
      const receipt = el('span', seen ? `outcome seen ${clock(seen)}` : 'outcome not seen', 'seen-flag');
      receipt.id = 'drill-seen';
      receipt.dataset.seen = seen ? 'yes' : 'no';
      facts.append(receipt);
    }

    const act = Boolean(window.__paylive_role?.may?.act);
    const refunds = session.refunds ?? [];
    $('drill-refunded').textContent = refunds.length
      ? `${formatAmount(session.amount_refunded ?? 0, session.currency)} of ` +
        `${formatAmount(session.amount, session.currency)} refunded; ` +
        refunds.map((r) => `${formatAmount(r.amount, session.currency)} ${r.status}`).join(', ')
      : session.status === 'succeeded'
        ? 'Nothing refunded.'
        : 'Only a paid session can be refunded.';
    $('refund-form').hidden = !act || session.status !== 'succeeded';

    const effects = session.effects ?? [];
    const pending = effects.filter((e) => e.status === 'pending');
    $('done-by-hand').hidden = !act || pending.length === 0;
    $('drill-effects-body').replaceChildren(
      ...effects.map((e) => {
        let action = '';
        if (act && e.status === 'pending') {
          action = el('button', 'Done by hand', 'button ghost small');
          action.type = 'button';
          action.dataset.done = e.id;
        }
        const what = e.amount ? `${e.kind} ${formatAmount(e.amount, session.currency)}` : e.kind;
        const tr = row([
          what,
          String(e.attempt),
          pill(e.status),
          String(e.tries),
          e.status === 'pending'
            ? clock(e.next_at)
            : `${e.status} ${clock(e.done_at)}${e.done_by ? ` by hand (${e.done_by})` : ''}`,
          e.last_error ?? '–',
          action,
        ]);
        tr.dataset.effect = e.id;
        tr.dataset.status = e.status;
        return tr;
      }),
    );
    $('drill-effects-empty').hidden = effects.length > 0;

    $('drill-attempts-body').replaceChildren(
      ...(session.attempts ?? []).map((a) =>
        row([
          String(a.number),
          pill(a.status),
          a.decline_code ?? '–',
          a.provider_ref ?? '–',
          clock(a.started_at),
          clock(a.ended_at),
        ]),
      ),
    );
    $('drill-attempts-empty').hidden = (session.attempts ?? []).length > 0;

    // The session's events and who did what to it (the audit trail), in time order.
    const items = [
      ...events.map((event) => {
        const li = el('li');
        li.dataset.seq = String(event.seq);
        li.dataset.cause = event.data?.cause ?? event.type;
        li.append(
          el('time', clock(event.ts), 'mono'),
          el('span', event.data?.cause ?? event.type, 'cause'),
          el('span', describeEvent(event), 'what'),
        );
        return [event.ts ?? 0, li];
      }),
      ...(session.audit ?? []).map((entry) => {
        const li = el('li');
        li.dataset.audit = entry.action;
        const details = Object.entries(entry.details ?? {})
          .filter(([, v]) => v !== null && v !== undefined)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ');
        li.append(
          el('time', clock(entry.at), 'mono'),
          el('span', entry.action.replaceAll('_', ' '), 'cause'),
          el('span', `by ${entry.staff} (${entry.role}) from ${entry.address ?? '?'}${details ? `: ${details}` : ''}`, 'what'),
        );
        return [entry.at ?? 0, li];
      }),
    ];
    items.sort((a, b) => a[0] - b[0]);
    $('drill-timeline').replaceChildren(...items.map(([, li]) => li));
    $('drill-timeline-note').textContent = complete
      ? ''
      : 'The oldest events are no longer kept; the timeline starts later.';

    const review = session.review;
    $('drill-review-done').textContent = review
      ? `Last review resolved by ${review.by} at ${clock(review.at)}: ${review.note}`
      : '';
    $('review-form').hidden = !session.needs_review || !act;
    const many = pending.length > 1;
    $('review-pending').textContent = pending.length
      ? `${pending.length} gateway effect${many ? 's are' : ' is'} still pending: the review ` +
        `can be resolved once the provider has confirmed ${many ? 'them' : 'it'}.`
      : '';
  }

  async #resolve() {
    const sessionId = this.sessionId;
    const by = $('review-by').value.trim();
    const note = $('review-note').value.trim();
    if (!by || !note) {
      clearFailure($('review-error'));
      $('review-error').textContent = 'Say who you are and what was done.';
      return;
    }
    const name = `review ${sessionId}`;
    if (this.actions.running(name)) return; // pressed again while it runs: the same intent
    $('review-submit').disabled = true;
    try {
      const path = `/api/admin/sessions/${encodeURIComponent(sessionId)}/review`;
      const result = await this.actions.run(name, path, { by, note });
      // The drill-down may show another session by now: this one's answer is not for it.
      if (this.sessionId !== sessionId) return;
      if (!result.ok) {
        showFailure($('review-error'), result);
        // Lost: the session as it stands says whether it was done.
        if (result.unknown) await this.refresh();
        return;
      }
      clearFailure($('review-error'));
      $('review-note').value = '';
      this.onChange(result.body);
      await this.refresh();
    } finally {
      // Another session's form by now: its own action says when it may be pressed.
      if (this.sessionId === sessionId) $('review-submit').disabled = false;
    }
  }

  async #refund() {
    const sessionId = this.sessionId;
    const raw = $('refund-amount').value.trim();
    const reason = $('refund-reason').value.trim();
    if (raw && !/^[0-9]+$/.test(raw)) {
      clearFailure($('refund-error'));
      $('refund-error').textContent = 'The amount is a whole number of minor units (cents).';
      return;
    }
    const body = {};
    if (raw) body.amount = Number(raw);
    if (reason) body.reason = reason;
    const name = `refund ${sessionId}`;
    if (this.actions.running(name)) return; // pressed again while it runs: the same intent
    $('refund-submit').disabled = true;
    try {
      const path = `/api/sessions/${encodeURIComponent(sessionId)}/refunds`;
      const result = await this.actions.run(name, path, body);
      // The drill-down may show another session by now: this one's answer is not for it.
      if (this.sessionId !== sessionId) return;
      if (!result.ok) {
        showFailure($('refund-error'), result);
        // Lost: the session as it stands says whether it was done.
        if (result.unknown) await this.refresh();
        return;
      }
      clearFailure($('refund-error'));
      $('refund-amount').value = '';
      $('refund-reason').value = '';
      await this.refresh();
    } finally {
      // Another session's form by now: its own action says when it may be pressed.
      if (this.sessionId === sessionId) $('refund-submit').disabled = false;
    }
  }

  async #markDone(effectId, button) {
    const sessionId = this.sessionId;
    const note = $('done-note').value.trim();
    if (!note) {
      clearFailure($('done-error'));
      $('done-error').textContent = 'Say what was done outside paylive first.';
      $('done-note').focus();
      return;
    }
    const name = `done ${effectId}`;
    if (this.actions.running(name)) return; // pressed again while it runs: the same intent
    button.disabled = true;
    try {
      const path = `/api/admin/effects/${encodeURIComponent(effectId)}/done`;
      const result = await this.actions.run(name, path, { note });
      // The drill-down may show another session by now: this one's answer is not for it.
      if (this.sessionId !== sessionId) return;
      if (!result.ok) {
        showFailure($('done-error'), result);
        // Lost: the session as it stands says whether it was done.
        if (result.unknown) await this.refresh();
        return;
      }
      clearFailure($('done-error'));
      $('done-note').value = '';
      this.onChange(result.body);
      await this.refresh();
    } finally {
      button.disabled = false;
    }
  }

  #stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.sessionId = null;
  }
}
