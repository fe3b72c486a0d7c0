// Cloudflare's workerd serving what the benchmarks drive, in the platform's
// own idioms:
//   /echo       a plain Worker: a WebSocketPair, each message sent back;
//   /broadcast  one Durable Object room with the hibernation API
//               (acceptWebSocket, webSocketMessage, getWebSockets): a
//               greeting {"connected":true,"yourConnectionId":"<id>"}, then
//               every message as `<id> says: <text>` to every other member,
//               like Wharf's `broadcast` example.
export default {
  async fetch(request, env) {
    if (request.headers.get('Upgrade') !== 'websocket') {
      return new Response('a WebSocket server', { status: 426 });
    }
    const path = new URL(request.url).pathname;
    if (path === '/echo') {
      const [client, server] = Object.values(new WebSocketPair());
      server.accept();
      server.addEventListener('message', (event) => server.send(event.data));
      return new Response(null, { status: 101, webSocket: client });
    }
    if (path === '/broadcast') {
      return env.ROOM.get(env.ROOM.idFromName('room')).fetch(request);
    }
    return new Response('not found', { status: 404 });
  },
};

export class Room {
  constructor(state) {
    this.state = state;
    this.nextId = 0;
  }

  async fetch() {
    const [client, server] = Object.values(new WebSocketPair());
    const id = String(++this.nextId);
    this.state.acceptWebSocket(server);
    server.serializeAttachment({ id });
    server.send(JSON.stringify({ connected: true, yourConnectionId: id }));
    return new Response(null, { status: 101, webSocket: client });
  }

  webSocketMessage(ws, message) {
    const { id } = ws.deserializeAttachment();
    const out = `${id} says: ${message}`;
    for (const peer of this.state.getWebSockets()) {
      if (peer !== ws) peer.send(out);
    }
  }

  webSocketClose(ws, code, reason) {
    ws.close(code, reason);
  }
}
