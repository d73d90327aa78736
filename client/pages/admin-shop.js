// The dashboard's shop panels: search live and archived sessions, and the webhooks
// sent to the shop with "Send again" (docs/protocol.md section 6). Both use the
// admin HTTP API with the token admin.js keeps in this tab.

import { formatAmount } from 'paylive-client';
import { NOT_KNOWN, StaffActions } from './admin/actions.js';
import { dayRange } from './admin/model.js';

const TOKEN_KEY = 'paylive.adminToken';
const REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);
const actions = new StaffActions(() => sessionStorage.getItem(TOKEN_KEY));

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return null;
  const reply = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${token}` },
  });
  const body = await reply.json().catch(() => ({}));
  if (!reply.ok) throw new Error(body.error ? body.error.message : `HTTP ${reply.status}`);
  return body;
}

function when(ms) {
  return ms ? new Date(ms).toLocaleString(undefined, { hour12: false }) : '';
}

function cell(text, className) {
  const td = document.createElement('td');
  if (className) td.className = className;
  td.textContent = text ?? '';
  return td;
}

function pill(status) {
  const td = document.createElement('td');
  const span = document.createElement('span');
  span.className = 'status-pill';
  span.dataset.status = status === 'delivered' ? 'succeeded' : status === 'pending' ? 'interrupted' : status;
  span.textContent = status;
  td.append(span);
  return td;
}

// Search ----------------------------------------------------------------------

async function search(event) {
  event.preventDefault();
  const query = new URLSearchParams({ limit: '100' });
  const ref = $('q-ref').value.trim();
  if (ref) query.set(ref.startsWith('ps_') ? 'id' : 'order_id', ref);
  if ($('q-status').value) query.set('status', $('q-status').value);
  const days = dayRange($('q-from').value, $('q-to').value);
  if (days.from) query.set('from', days.from);
  if (days.to) query.set('to', days.to);
  const note = $('search-note');
  try {
    const { sessions } = await api(`/api/admin/search?${query}`);
    const body = $('search-body');
    body.replaceChildren(...sessions.map((s) => {
      const row = document.createElement('tr');
      row.append(
        cell(s.id, 'mono'),
        cell(s.order_id),
        cell(formatAmount(s.amount, s.currency), 'num'),
        pill(s.status),
        cell(when(s.created_at)),
        cell(s.needs_review ? 'needs review' : ''),
      );
      return row;
    }));
    $('search-scroll').hidden = sessions.length === 0;
    note.hidden = sessions.length > 0;
    note.textContent = 'Nothing found.';
  } catch (error) {
    $('search-scroll').hidden = true;
    note.hidden = false;
    note.textContent = `Search failed: ${error.message}`;
  }
}

// Deliveries -------------------------------------------------------------------

// What the last "Send again" of a delivery came to when it was not done, by its id:
// the list is drawn anew every few seconds, its buttons with it.
const failures = new Map();

async function sendAgain(id, button) {
  const name = `send again ${id}`;
  if (actions.running(name)) return; // pressed again while it runs: the same intent
  button.disabled = true;
  const result = await actions.run(name, `/api/admin/deliveries/${encodeURIComponent(id)}/retry`);
  if (result.ok) failures.delete(id);
  else failures.set(id, result.unknown ? NOT_KNOWN : result.message);
  await refreshDeliveries();
  // A webhook sent again usually lands within a second: show how it went by then.
  setTimeout(refreshDeliveries, 1000);
}

async function refreshDeliveries() {
  if ($('dashboard').hidden) return;
  const which = $('deliveries-open').checked ? 'open' : 'all';
  let listed;
  try {
    listed = await api(`/api/admin/deliveries?status=${which}&limit=100`);
  } catch {
    return; // the feed's connection state already tells the story
  }
  if (!listed) return;
  const rows = listed.deliveries.map((d) => {
    const row = document.createElement('tr');
    row.dataset.event = d.id;
    const action = document.createElement('td');
    const button = document.createElement('button');
    button.className = 'button ghost small';
    button.type = 'button';
    button.textContent = 'Send again';
    button.disabled = actions.running(`send again ${d.id}`);
    button.title = failures.get(d.id) ?? '';
    button.addEventListener('click', () => sendAgain(d.id, button));
    // Only a role that may act sees it (protocol 8.1).
    if (window.__paylive_role?.may?.act) action.append(button);
    row.append(
      cell(d.type, 'mono'),
      cell(d.session, 'mono'),
      pill(d.status),
      cell(String(d.attempts), 'num'),
      cell(d.last_error || (d.last_status ? `HTTP ${d.last_status}` : '')),
      cell(when(d.next_at)),
      action,
    );
    return row;
  });
  $('deliveries-body').replaceChildren(...rows);
  $('deliveries-empty').hidden = rows.length > 0;
}

// The audit trail ------------------------------------------------------------

function details(entry) {
  const d = entry.details ?? {};
  return Object.entries(d)
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k} ${v}`)
    .join(' · ');
}

// The trail is read a page at a time, newest first (protocol 8.2). The newest page is
// asked again on every refresh, so new actions come in on top; any other page is asked
// by a place in the trail, so the refresh keeps it where it is. "Older" reads past the
// last entry shown (`before=<next>`), "Newer" past the first (`after=<prev>`, the
// oldest entries newer than it): neither skips an entry, even when new actions came in
// meanwhile, which going back to a page read before would.
const audit = {
  filters: new URLSearchParams(), // the staff and session filters "Show" applied
  // The page on screen unless it is the newest: { way: 'before' | 'after', at, page,
  // offset } (its number and the entries above it, null once new actions made them
  // unknown); read forwards, offset is that of the page it was read from.
  place: null,
  next: null, // the page on screen's `next`, null when nothing is older
  prev: null, // its `prev`, null when nothing is newer; undefined once used
  shown: 0, // entries on the page on screen
  asked: 0, // the latest question: an answer to an earlier one is stale
  drawn: null, // the question the rows on screen answer
};
const auditButtons = ['audit-newest', 'audit-newer', 'audit-older'];

function auditQuery(way, at, limit = '100') {
  const params = new URLSearchParams({ limit });
  for (const [name, value] of audit.filters) params.set(name, value);
  if (way) params.set(way, at);
  return params;
}

/** Where the page on screen stands: { page, offset }, or null when it is not known. */
function auditWhere() {
  const place = audit.place;
  if (!place) return { page: 1, offset: 0 };
  if (place.page === null || place.offset === null) return null;
  if (place.way === 'before') return { page: place.page, offset: place.offset };
  // A page read forwards that is not the newest: entries above it, or new actions came.
  const offset = place.offset - audit.shown;
  return place.page > 1 && offset > 0 ? { page: place.page, offset } : null;
}

async function refreshAudit() {
  if ($('dashboard').hidden) return;
  const place = audit.place;
  let params = auditQuery(place?.way, place?.at);
  const asked = ++audit.asked;
  let found;
  try {
    found = await api(`/api/admin/audit?${params}`);
    if (found && place?.way === 'after' && asked === audit.asked) {
      // Read forwards, a page that is not full holds everything newer, and so does the
      // newest page, which takes its place; a full one is the newest when nothing
      // stands past it.
      let newest = found.prev === null;
      if (!newest) {
        const past = await api(`/api/admin/audit?${auditQuery('after', found.prev, '1')}`);
        newest = past.entries.length === 0;
      }
      if (asked !== audit.asked) return;
      if (newest) {
        audit.place = null;
        params = auditQuery();
        if (found.prev === null) found = await api(`/api/admin/audit?${params}`);
      }
    }
  } catch (error) {
    if (asked !== audit.asked) return;
    if (audit.drawn !== String(params)) {
      // The rows on screen are of another page: they go, not to be read as this one.
      $('audit-body').replaceChildren();
      audit.shown = 0;
      audit.drawn = null;
    }
    $('audit-empty').hidden = false;
    $('audit-empty').textContent = `Could not read the audit trail: ${error.message}`;
    showAuditPager(true);
    return;
  }
  if (!found || asked !== audit.asked) return;
  const rows = found.entries.map((entry) => {
    const row = document.createElement('tr');
    row.dataset.audit = entry.id;
    row.append(
      cell(when(entry.at)),
      cell(`${entry.staff} (${entry.role})`),
      cell(entry.action.replaceAll('_', ' ')),
      cell(entry.session ?? '–', 'mono'),
      cell(details(entry)),
      cell(entry.address ?? ''),
    );
    return row;
  });
  $('audit-body').replaceChildren(...rows);
  audit.drawn = String(params);
  audit.next = found.next ?? null;
  audit.prev = found.prev ?? null;
  audit.shown = rows.length;
  $('audit-empty').hidden = rows.length > 0;
  $('audit-empty').textContent = audit.place ? 'No older action.' : 'No action recorded yet.';
  showAuditPager();
}

/** The pager's buttons and where the page is; the focus stays on a button it can press. */
function showAuditPager(failed = false) {
  const focused = document.activeElement;
  const where = auditWhere();
  $('audit-newest').disabled = audit.place === null;
  $('audit-newer').disabled = audit.place === null;
  $('audit-older').disabled = audit.next === null;
  const entries = audit.shown === 1 ? 'entry' : 'entries';
  // Past new actions the pages above are not counted: the page says which way it went.
  const way = audit.place?.way === 'after' ? 'Newer' : 'Older';
  const page = where ? `Page ${where.page}` : `${way} actions`;
  let text = `${page} · no entries`;
  if (where && audit.shown === 1) text = `${page} · entry ${where.offset + 1}`;
  if (where && audit.shown > 1) text = `${page} · entries ${where.offset + 1}–${where.offset + audit.shown}`;
  if (!where && audit.shown > 0) text = `${page} · ${audit.shown} ${entries}`;
  if (audit.next === null && audit.place) text += ' · nothing older';
  if (failed && audit.drawn === null) text = `${page} · not read`;
  // Written only when it changes: the live region announces a new page, not each refresh.
  if ($('audit-page').textContent !== text) $('audit-page').textContent = text;
  if (auditButtons.includes(focused?.id) && focused.disabled) {
    const other = [...auditButtons].reverse().map($).find((button) => !button.disabled);
    (other ?? $('audit-form').querySelector('button[type=submit]')).focus();
  }
}

$('audit-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const filters = new URLSearchParams();
  const staff = $('audit-staff').value.trim();
  const session = $('audit-session').value.trim();
  if (staff) filters.set('staff', staff);
  if (session) filters.set('session', session);
  audit.filters = filters;
  audit.place = null;
  void refreshAudit();
});
$('audit-older').addEventListener('click', () => {
  if (audit.next === null) return;
  const where = auditWhere();
  // Once: a second press before the answer would open the same page twice.
  const at = audit.next;
  audit.next = null;
  const [page, offset] = where ? [where.page + 1, where.offset + audit.shown] : [null, null];
  audit.place = { way: 'before', at, page, offset };
  void refreshAudit();
});
$('audit-newer').addEventListener('click', () => {
  if (audit.place === null || audit.prev === undefined) return;
  const where = auditWhere();
  const at = audit.prev;
  audit.prev = undefined; // once, as Older
  const [page, offset] = where ? [where.page - 1, where.offset] : [null, null];
  // Nothing to read on from (the page on screen is empty): the newest page.
  audit.place = at === null ? null : { way: 'after', at, page, offset };
  void refreshAudit();
});
$('audit-newest').addEventListener('click', () => {
  audit.place = null;
  void refreshAudit();
});
document.addEventListener('paylive:role', () => void refreshDeliveries());
$('search-form').addEventListener('submit', search);
$('deliveries-open').addEventListener('change', refreshDeliveries);
setInterval(refreshDeliveries, REFRESH_MS);
setInterval(refreshAudit, REFRESH_MS);
new MutationObserver(() => void refreshAudit()).observe($('dashboard'), {
  attributes: true,
  attributeFilter: ['hidden'],
});
new MutationObserver(refreshDeliveries).observe($('dashboard'), { attributes: true, attributeFilter: ['hidden'] });
refreshDeliveries();
