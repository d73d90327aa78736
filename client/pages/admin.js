// The admin dashboard: the live feed of every session (docs/protocol.md section 4, admin
// feed), a page of them at a time, filtered by status and searched by order id; a
// row opens the session's drill-down (timeline, attempts, gateway effects, review).
//
// The token comes from the fragment (#token=...) or the form, is kept in this tab's
// sessionStorage, and is removed from the address bar at once. It goes to the server
// only in Authorization headers: the feed (a WebSocket, or Server-Sent Events where a
// socket cannot get through) is opened with a single-use ticket bought with it, so the
// token never sits in a URL or an access log (protocol 4.2).

import { LiveConnection, TERMINAL_STATUSES, formatAmount } from 'paylive-client';
import { MinuteCounts, drawChart } from './admin/chart.js';
import { Drill } from './admin/drill.js';
import { PAGE_SIZE, SessionTable } from './admin/model.js';

const TOKEN_KEY = 'paylive.adminToken';
const $ = (id) => document.getElementById(id);

const TRANSPORT_LABELS = { websocket: 'WebSocket', sse: 'SSE', polling: 'polling' };
const CONNECTION_LABELS = {
  idle: 'Not connected',
  connecting: 'Connecting…',
  connected: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  closed: 'Disconnected',
};
// Under a busy feed the table is drawn at most this often; the data is always current.
const RENDER_EVERY_MS = 200;
// Flagged sessions may have ended long ago, so the feed's snapshot (active ones) lacks
// them: the needs-review filter asks the API for them, at most this many.
const REVIEW_LIST_LIMIT = 500;
// The server's chart is read again this often (the feed adds to it in between).
const CHART_EVERY_MS = 60_000;

const table = new SessionTable();
const counts = new MinuteCounts();
const flashing = new Set();
let page = 0;
let socket = null;
let renderQueued = false;
let lastRender = 0;
let chartTimer = null;

const token = () => sessionStorage.getItem(TOKEN_KEY) ?? '';
const drill = new Drill(token, (session) => upsert(session));

function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ''));
  const fromFragment = params.get('token');
  if (fromFragment) {
    sessionStorage.setItem(TOKEN_KEY, fromFragment);
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

function rowOf(session) {
  const row = document.createElement('tr');
  const status = document.createElement('span');
  status.className = 'status-pill';
  status.dataset.status = session.status;
  status.textContent = session.status;
  if (session.outcome_seen_at) status.title = `outcome seen by the customer at ${time(session.outcome_seen_at)}`;
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

  // The id opens the drill-down: a button, so the keyboard reaches it too.
  const open = document.createElement('button');
  open.type = 'button';
  open.className = 'link-button mono';
  open.textContent = session.id;
  open.title = `Open ${session.id}`;
  open.dataset.open = session.id;
  const idCell = document.createElement('td');
  idCell.className = 'id';
  idCell.append(open);

  const attempt =
    session.attempt > 0 ? `${session.attempt} / ${session.max_attempts}` : `– / ${session.max_attempts}`;
  row.replaceChildren(
    idCell,
    cell(session.order_id ?? ''),
    cell(formatAmount(session.amount, session.currency), 'num amount'),
    statusCell,
    cell(attempt, 'attempt'),
    cell(time(session.updated_at || session.created_at), 'updated'),
    review,
  );
  row.dataset.sessionId = session.id;
  row.dataset.status = session.status;
  row.dataset.outcomeSeen = session.outcome_seen_at ? 'yes' : 'no';
  row.classList.toggle('finished', TERMINAL_STATUSES.has(session.status));
  if (flashing.has(session.id)) row.classList.add('flash');
  return row;
}

function options() {
  return {
    filter: $('filter-status').value,
    search: $('search').value,
    showFinished: $('show-finished').checked,
    page,
    pageSize: PAGE_SIZE,
  };
}

/** Draw the current page now: only its rows are in the document, whatever the total. */
function render() {
  renderQueued = false;
  lastRender = performance.now();
  const view = table.view(options());
  page = view.page;
  $('sessions-body').replaceChildren(...view.rows.map(rowOf));
  flashing.clear();
  $('session-count').textContent =
    table.size === 0
      ? 'No sessions'
      : `${view.active} active, ${view.finished} finished in this view` +
        (view.total !== table.size ? ` · ${view.total} shown by the filter` : '');
  $('empty').hidden = view.total > 0;
  $('empty').textContent =
    table.size === 0
      ? 'No active sessions yet. New ones appear here as they are created.'
      : 'No session matches the filter.';
  const last = view.first === 0 ? 0 : view.first + view.rows.length - 1;
  $('page-info').textContent =
    view.total === 0 ? 'No sessions' : `${view.first}–${last} of ${view.total} (page ${view.page + 1} of ${view.pages})`;
  $('page-prev').disabled = view.page === 0;
  $('page-next').disabled = view.page >= view.pages - 1;
}

/** Draw soon: at most once a frame, and not more often than RENDER_EVERY_MS. */
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  const wait = Math.max(0, RENDER_EVERY_MS - (performance.now() - lastRender));
  setTimeout(() => requestAnimationFrame(render), wait);
}

function upsert(session) {
  if (table.upsert(session)) {
    flashing.add(session.id);
    scheduleRender();
  }
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
  // Money still to move at the provider (refunds, voids, captures), beside the reviews.
  const effects = summary.effects_pending ?? {};
  const pending = Object.values(effects).reduce((a, b) => a + (Number(b) || 0), 0);
  const waiting = Object.entries(effects).filter(([, n]) => Number(n) > 0);
  // Shown only while something is pending, so the summary still fits a small phone.
  $('sum-effects').dataset.pending = String(pending);
  $('sum-effects').hidden = pending === 0;
  $('sum-effects').textContent = `⚠ ${waiting.map(([kind, n]) => `${n} ${kind}`).join(' · ')} pending`;
  $('sum-review-card').classList.toggle('alert', review > 0 || pending > 0);
}

function drawCounts() {
  drawChart($('chart'), counts.series(Date.now()), $('chart-desc'), $('chart-top'));
}

function receive(message) {
  const data = message.data ?? {};
  switch (message.type) {
    case 'admin.snapshot':
      table.replaceAll(data.sessions ?? []);
      renderSummary(data.summary);
      render();
      if ($('filter-status').value === 'needs_review') void loadFlagged();
      break;
    case 'state':
      counts.add(message.ts ?? Date.now(), data.cause);
      upsert(data.session);
      if (message.session) drill.notice(message.session);
      break;
    case 'admin.created':
      upsert(data.session);
      break;
    case 'summary':
      renderSummary(data.summary ?? data);
      drawCounts();
      break;
    default:
      // retry_prompt, pong and newer types: the state events already carry the session.
      break;
  }
}

/** Sessions flagged for review that this page may not hold (they ended long ago). */
async function loadFlagged() {
  try {
    const reply = await fetch(`/api/admin/sessions?status=needs_review&limit=${REVIEW_LIST_LIMIT}`, {
      headers: { Authorization: `Bearer ${token()}` },
    });
    if (!reply.ok) return;
    for (const session of (await reply.json()).sessions ?? []) table.upsert(session);
    render();
  } catch {
    // The feed still shows every session flagged from now on.
  }
}

async function api(path) {
  const reply = await fetch(path, { headers: { Authorization: `Bearer ${token()}` } });
  if (!reply.ok) throw new Error(`the server answered ${reply.status}`);
  return reply.json();
}

/** The last hour as the server counted it, on every worker. */
async function loadChart() {
  try {
    counts.seed((await api('/api/admin/chart')).minutes);
    drawCounts();
  } catch {
    // The feed's events still draw from now on.
  }
}

/** Who this token is: the page shows only what its role may do (protocol 8.1). */
async function loadRole() {
  try {
    const me = await api('/api/admin/me');
    document.body.dataset.role = me.role;
    $('whoami').textContent = `${me.name} · ${me.role}`;
    for (const node of document.querySelectorAll('[data-needs]')) {
      node.hidden = !me.may[node.dataset.needs];
    }
    window.__paylive_role = me;
    document.dispatchEvent(new CustomEvent('paylive:role', { detail: me }));
  } catch {
    // Unknown role: actions stay hidden (data-needs elements start hidden).
  }
}

function connect(adminToken) {
  socket?.close();
  showDashboard();
  void loadRole();
  void loadChart();
  clearInterval(chartTimer);
  chartTimer = setInterval(() => void loadChart(), CHART_EVERY_MS);
  // The feed sends a summary every second, so a silence of 10 s means the server is gone.
  // No long-polling for the feed: it is a stream of every session.
  socket = new LiveConnection({ secret: adminToken, silenceTimeout: 10_000, transports: ['websocket', 'sse'] });
  window.__paylive_admin = socket;
  socket.on('message', receive);
  socket.on('status', ({ status, transport }) => {
    const el = $('connection');
    el.dataset.state = status;
    el.dataset.transport = transport ?? socket.transport;
    const label = CONNECTION_LABELS[status] ?? status;
    el.querySelector('.connection-text').textContent =
      status === 'connected' ? `${label} · ${TRANSPORT_LABELS[el.dataset.transport]}` : label;
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
  const typed = $('token').value.trim();
  if (!typed) return;
  sessionStorage.setItem(TOKEN_KEY, typed);
  $('token').value = '';
  connect(typed);
});

$('forget').addEventListener('click', () => {
  socket?.close();
  socket = null;
  clearInterval(chartTimer);
  sessionStorage.removeItem(TOKEN_KEY);
  table.replaceAll([]);
  render();
  showTokenForm();
});

function refilter() {
  page = 0;
  render();
}

$('show-finished').addEventListener('change', refilter);
$('search').addEventListener('input', refilter);
$('filter-status').addEventListener('change', () => {
  refilter();
  if ($('filter-status').value === 'needs_review') void loadFlagged();
});
$('page-prev').addEventListener('click', () => {
  page -= 1;
  render();
});
$('page-next').addEventListener('click', () => {
  page += 1;
  render();
});
$('sessions-body').addEventListener('click', (event) => {
  const row = event.target.closest('tr[data-session-id]');
  if (row) void drill.open(row.dataset.sessionId);
});

window.addEventListener('hashchange', () => {
  if (!/(^#|&)token=/.test(location.hash)) return;
  const fromFragment = takeTokenFromFragment();
  if (fromFragment) connect(fromFragment);
});
// For tests and people at the console: the data behind the table.
window.__paylive_dashboard = { table, render, upsert, counts };

const stored = takeTokenFromFragment();
if (stored) connect(stored);
else showTokenForm();
