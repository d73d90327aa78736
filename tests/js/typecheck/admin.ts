// A staff dashboard on the admin feed through the client's reconnecting socket.

import {
  LiveConnection,
  ReconnectingSocket,
  TRANSPORTS,
  TRANSPORT_DEFAULTS,
  httpOrigin,
  socketOrigin,
  type AdminMessage,
  type Summary,
  type Transport,
} from 'paylive-client';

declare function render(rows: number, summary: Summary | null): void;

const token = 'admin-token';
const socket = new ReconnectingSocket(() => `${socketOrigin()}/ws/admin?token=${token}`, {
  silenceTimeout: 10_000,
});
socket.on('message', (message) => {
  const m = message as AdminMessage;
  switch (m.type) {
    case 'admin.snapshot':
      render(m.data.sessions.length, m.data.summary);
      break;
    case 'summary':
      render(0, m.data);
      break;
    case 'state':
    case 'admin.created':
      render(m.data.session.attempt, null);
      break;
    default:
      break;
  }
});
socket.on('fatal', ({ code, error }) => {
  if (code === 4401) render(0, null);
  void error.toUpperCase();
});
socket.on('open', () => socket.send({ type: 'ping' }));
socket.connect();

// The same feed over whichever transport gets through, opened with tickets (protocol 4.2).
const live = new LiveConnection({
  secret: token,
  transports: ['websocket', 'sse'],
  firstMessageTimeout: 4_000,
  upgradeInterval: 30_000,
  silenceTimeout: 10_000,
});
live.on('status', ({ status, transport }) => {
  const shown: Transport | undefined = transport;
  render(status === 'connected' ? 1 : 0, null);
  void shown;
});
const current: Transport = live.transport;
const all: readonly Transport[] = TRANSPORTS;
void [current, all, httpOrigin('wss://pay.example'), TRANSPORT_DEFAULTS.firstMessageTimeout];
live.connect();
