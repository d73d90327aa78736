// A staff dashboard on the admin feed through the client's reconnecting socket.

import { ReconnectingSocket, socketOrigin, type AdminMessage, type Summary } from 'paylive-client';

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
