// The admin dashboard: the live feed of every session (docs/protocol.md section 4, admin feed).
//
// The token comes from the fragment (#token=...) or the form, is kept in this tab's
// sessionStorage, and is removed from the address bar at once. It goes to the server
// only in the WebSocket URL, as the protocol requires.

import {
  ReconnectingSocket,
  TERMINAL_STATUSES,
  formatAmount,
  socketOrigin,
} from './paylive.js';

const TOKEN_KEY = 'paylive.adminToken';
const $ = (id) => document.getElementById(id);

const CONNECTION_LABELS = {
  idle: 'Not connected',
  connecting: 'Connecting…',
  connected: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  closed: 'Disconnected',
};

/** session id -> {session, row} */
const rows = new Map();
// Finished sessions stay in view until there are this many rows; then the oldest go.
const MAX_ROWS = 500;
let socket = null;

function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ''));
  const token = params.get('token');
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function showTokenForm(error = '') {
  $('dashboard').hidden = true;
  $('token-form').hidden = false;
  $('token-error').textContent = error;
  $('token').focus();
}

function showDashboard() {
  $('token-form').hidden = true;
  $('dashboard').hidden = false;
}

function time(ms) {
  if (!ms) return '';
  return new Date(ms).toLocaleTimeString(undefined, { hour12: false });
}

function cell(text, className) {
  const td = document.createElement('td');
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function fillRow(row, session) {
  const status = document.createElement('span');
  status.className = 'status-pill';
  status.dataset.status = session.status;
  status.textContent = session.status;
  const statusCell = document.createElement('td');
  statusCell.className = 'status';
  statusCell.append(status);

  const review = document.createElement('td');
  review.className = 'review';
  if (session.needs_review) {
    const flag = document.createElement('span');
    flag.className = 'review-flag';
    flag.textContent = 'needs review';
    review.append(flag);
  }

  const idCell = cell(session.id, 'id mono');
  idCell.title = session.id;
  row.replaceChildren(
    idCell,
    cell(session.order_id ?? ''),
    cell(formatAmount(session.amount, session.currency), 'num amount'),
    statusCell,
    cell(session.attempt > 0 ? `${session.attempt} / ${session.max_attempts}` : `– / ${session.max_attempts}`, 'attempt'),
    cell(time(session.updated_at || session.created_at), 'updated'),
    review,
  );
  row.dataset.sessionId = session.id;
  row.dataset.status = session.status;
  row.classList.toggle('finished', TERMINAL_STATUSES.has(session.status));
}

function flash(row) {
  row.classList.remove('flash');
  void row.offsetWidth; // restart the animation
  row.classList.add('flash');
}

/** Insert or update one session's row; an older copy (lower seq) never overwrites a newer one. */
function upsert(session, highlight = true) {
  if (!session?.id) return;
  const known = rows.get(session.id);
  if (known) {
    if ((session.seq ?? 0) < (known.session.seq ?? 0)) return;
    known.session = session;
    fillRow(known.row, session);
    if (highlight) flash(known.row);
  } else {
    const row = document.createElement('tr');
    fillRow(row, session);
    rows.set(session.id, { session, row });
    // Newest first: find the first row created before this one.
    const body = $('sessions-body');
    const after = [...rows.values()]
      .filter((r) => r.row.parentNode === body && (r.session.created_at ?? 0) <= (session.created_at ?? 0))
      .sort((a, b) => (b.session.created_at ?? 0) - (a.session.created_at ?? 0))[0];
    body.insertBefore(row, after ? after.row : null);
    if (highlight) flash(row);
    prune();
  }
  refreshTable();
}

function prune() {
  if (rows.size <= MAX_ROWS) return;
  const finished = [...rows.values()]
    .filter((r) => TERMINAL_STATUSES.has(r.session.status))
    .sort((a, b) => (a.session.updated_at ?? 0) - (b.session.updated_at ?? 0));
  for (const { session, row } of finished.slice(0, rows.size - MAX_ROWS)) {
    row.remove();
    rows.delete(session.id);
  }
}

function replaceAll(sessions) {
  rows.clear();
  $('sessions-body').replaceChildren();
  const sorted = [...sessions].sort((a, b) => (b.created_at ?? 0) - (a.created_at ?? 0));
  for (const session of sorted) {
    const row = document.createElement('tr');
    fillRow(row, session);
    rows.set(session.id, { session, row });
    $('sessions-body').append(row);
  }
  refreshTable();
}

function refreshTable() {
  const showFinished = $('show-finished').checked;
  let active = 0;
  let visible = 0;
  for (const { session, row } of rows.values()) {
    const finished = TERMINAL_STATUSES.has(session.status);
    if (!finished) active += 1;
    row.hidden = finished && !showFinished;
    if (!row.hidden) visible += 1;
  }
  const finished = rows.size - active;
  $('session-count').textContent =
    rows.size === 0 ? 'No sessions' : `${active} active, ${finished} finished in this view`;
  $('empty').hidden = visible > 0;
}

function percent(rate) {
  if (rate === null || rate === undefined || Number.isNaN(rate)) return '–';
  const value = rate <= 1 ? rate * 100 : rate;
  return `${value.toFixed(1)} %`;
}

function renderSummary(summary) {
  if (!summary) return;
  const by = summary.by_status ?? {};
  const interruptions = summary.interruptions ?? {};
  $('sum-active').textContent = String(summary.active ?? 0);
  $('sum-active-detail').textContent =
    `${by.created ?? 0} created · ${by.processing ?? 0} processing · ${by.interrupted ?? 0} interrupted`;
  $('sum-succeeded').textContent = String(by.succeeded ?? 0);
  $('sum-success-rate').textContent = `success rate ${percent(summary.success_rate)}`;
  $('sum-ended').textContent = String((by.failed ?? 0) + (by.cancelled ?? 0) + (by.expired ?? 0));
  $('sum-ended-detail').textContent =
    `${by.failed ?? 0} failed · ${by.cancelled ?? 0} cancelled · ${by.expired ?? 0} expired`;
  const total = Object.values(interruptions).reduce((a, b) => a + (Number(b) || 0), 0);
  $('sum-interruptions').textContent = String(total);
  const nonzero = Object.entries(interruptions).filter(([, n]) => Number(n) > 0);
  $('sum-interruptions-detail').textContent =
    nonzero.length === 0 ? 'none so far' : nonzero.map(([reason, n]) => `${n} ${reason.replace('_', ' ')}`).join(' · ');
  $('sum-recovered').textContent = String(summary.recovered_by_retry ?? 0);
  const review = summary.needs_review ?? 0;
  $('sum-review').textContent = String(review);
  // Said in words, not only in red.
  $('sum-review-detail').textContent = review > 0 ? '⚠ check these by hand' : 'nothing to check';
  $('sum-review-card').classList.toggle('alert', review > 0);
}

function receive(message) {
  const data = message.data ?? {};
  switch (message.type) {
    case 'admin.snapshot':
      replaceAll(data.sessions ?? []);
      renderSummary(data.summary);
      break;
    case 'state':
    case 'admin.created':
      upsert(data.session);
      break;
    case 'summary':
      renderSummary(data.summary ?? data);
      break;
    default:
      // retry_prompt, pong and newer types: the state events already carry the session.
      break;
  }
}

function connect(token) {
  socket?.close();
  showDashboard();
  const url = () => `${socketOrigin()}/ws/admin?${new URLSearchParams({ token })}`;
  // The feed sends a summary every second, so a silence of 10 s means the server is gone.
  socket = new ReconnectingSocket(url, { silenceTimeout: 10_000 });
  window.__paylive_admin = socket;
  socket.on('message', receive);
  socket.on('status', ({ status }) => {
    const el = $('connection');
    el.dataset.state = status;
    el.querySelector('.connection-text').textContent = CONNECTION_LABELS[status] ?? status;
  });
  socket.on('fatal', ({ code }) => {
    if (code === 4401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showTokenForm('The server refused this token.');
    }
  });
  socket.connect();
}

$('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const token = $('token').value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('token').value = '';
  connect(token);
});

$('forget').addEventListener('click', () => {
  socket?.close();
  socket = null;
  sessionStorage.removeItem(TOKEN_KEY);
  replaceAll([]);
  showTokenForm();
});

$('show-finished').addEventListener('change', refreshTable);

window.addEventListener('hashchange', () => {
  if (!/(^#|&)token=/.test(location.hash)) return;
  const token = takeTokenFromFragment();
  if (token) connect(token);
});

const token = takeTokenFromFragment();
if (token) connect(token);
else showTokenForm();
