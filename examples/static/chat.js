// The chat page: connects to /chat on the same host, lists every message it
// receives, and sends the input's text on Enter.
(function () {
  const status = document.getElementById('status');
  const list = document.getElementById('messages');
  const input = document.getElementById('input');
  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  const ws = new WebSocket(scheme + location.host + '/chat');

  function show(text) {
    const li = document.createElement('li');
    li.textContent = text;
    list.appendChild(li);
    list.scrollTop = list.scrollHeight;
  }

  ws.addEventListener('open', function () {
    status.textContent = 'connected';
    input.disabled = false;
    input.focus();
  });
  ws.addEventListener('message', function (ev) {
    show(typeof ev.data === 'string' ? ev.data : '[binary message]');
  });
  ws.addEventListener('close', function (ev) {
    status.textContent = 'disconnected (' + ev.code + ')';
    input.disabled = true;
  });
  input.addEventListener('keydown', function (ev) {
    if (ev.key === 'Enter' && input.value !== '') {
      ws.send(input.value);
      input.value = '';
    }
  });
})();
