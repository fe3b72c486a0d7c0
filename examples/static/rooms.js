// The rooms page's client: it remembers the position (offset and epoch) of
// the last message it showed and, whenever the socket closes, reconnects
// with backoff (1 s, doubling up to 5 s, as Socket.IO's clients do) from
// that position, so the host replays what it missed.
const params = new URLSearchParams(location.search);
const room = params.get('room') || 'lobby';
const name = params.get('name') || 'anonymous';
// The rooms route: /rooms (Rust), /ts/rooms or /py/rooms (its twins).
const route = ['/rooms', '/ts/rooms', '/py/rooms'].includes(params.get('route')) ? params.get('route') : '/rooms';
const statusEl = document.getElementById('status');
const noticeEl = document.getElementById('notice');
const list = document.getElementById('messages');
const input = document.getElementById('input');

let position = null; // { offset, epoch } of the last message shown
const FIRST_DELAY_MS = 1000;
let backoff = FIRST_DELAY_MS;
let opens = 0;
let socket = null;

function show(m) {
  const li = document.createElement('li');
  li.dataset.offset = String(m.offset);
  li.textContent = `${m.from}: ${m.text}`;
  list.appendChild(li);
  list.scrollTop = list.scrollHeight;
}

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const query = new URLSearchParams({ room, name });
  if (position) {
    query.set('since', String(position.offset));
    query.set('epoch', position.epoch);
  }
  socket = new WebSocket(`${scheme}//${location.host}${route}?${query}`);
  statusEl.textContent = position ? 'reconnecting…' : 'connecting…';
  socket.onmessage = (event) => {
    const m = JSON.parse(event.data);
    if (m.type === 'say') {
      // Never show one twice (the host does not send one twice; this
      // guards against a page bug as much as anything).
      if (position && m.epoch === position.epoch && m.offset <= position.offset) return;
      show(m);
      position = { offset: m.offset, epoch: m.epoch };
    } else if (m.type === 'welcome') {
      if (!m.recovered) {
        noticeEl.textContent = 'Some messages of this room are no longer available: the list above may have a gap.';
      }
      if (!position || position.epoch !== m.epoch || position.offset < m.offset) {
        position = { offset: m.offset, epoch: m.epoch };
      }
      backoff = FIRST_DELAY_MS;
      opens += 1;
      document.body.dataset.opens = String(opens);
      document.body.dataset.replayed = String(m.replayed);
      statusEl.textContent = 'connected';
      input.disabled = false;
    } else if (m.type === 'error') {
      noticeEl.textContent = `Not sent: ${m.error}`;
    }
  };
  socket.onclose = () => {
    input.disabled = true;
    statusEl.textContent = `disconnected; reconnecting in ${backoff} ms`;
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 5000);
  };
}

input.addEventListener('keydown', (event) => {
  if (event.key !== 'Enter' || !input.value || socket.readyState !== WebSocket.OPEN) return;
  socket.send(JSON.stringify({ text: input.value }));
  input.value = '';
});

connect();
