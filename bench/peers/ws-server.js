// Node `ws` serving what the benchmarks drive, as a user of `ws` would
// write it (no permessage-deflate, 1 MiB messages, no Nagle):
//   /echo       answers every message with itself;
//   /broadcast  greets a new connection with
//               {"connected":true,"yourConnectionId":"<id>"} and sends every
//               message as `<id> says: <text>` to every other connection,
//               like Wharf's `broadcast` example.
// Prints `listening on 127.0.0.1:PORT` once it accepts connections.
'use strict';
const http = require('node:http');
const { WebSocketServer } = require('ws');

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 1 << 20 });
const room = new Map();
let nextId = 0;

const server = http.createServer((req, res) => {
  res.writeHead(426).end('a WebSocket server');
});

server.on('upgrade', (req, socket, head) => {
  const path = new URL(req.url, 'http://localhost').pathname;
  if (path !== '/echo' && path !== '/broadcast') {
    socket.destroy();
    return;
  }
  socket.setNoDelay(true);
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (path === '/echo') {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      return;
    }
    const id = String(++nextId);
    room.set(id, ws);
    ws.on('close', () => room.delete(id));
    ws.on('message', (data) => {
      const out = `${id} says: ${data}`;
      for (const [other, peer] of room) {
        if (other !== id) peer.send(out);
      }
    });
    ws.send(JSON.stringify({ connected: true, yourConnectionId: id }));
  });
});

server.listen(0, '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(`listening on ${address}:${port}`);
});
