// A WebSocket-over-HTTP backend written with npm's @fanoutio/grip, the way
// its README shows: Node's HTTP server, getWebSocketContextFromNodeReq,
// the context's accept/subscribe/send, encodeWebSocketEvents and toHeaders,
// and the Publisher for channel messages.
//
//   node backend.mjs      # prints the port it listens on, then serves
//
// POST /_config {"control_uri", "key"} sets the publisher.

import http from 'node:http';
import {
  Publisher,
  WebSocketMessageFormat,
  encodeWebSocketEvents,
  getWebSocketContextFromNodeReq,
  isNodeReqWsOverHttp,
} from '@fanoutio/grip';

let publisher = null;

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function handle(req, res) {
  if (req.url === '/_config') {
    const cfg = JSON.parse((await readBody(req)).toString());
    publisher = new Publisher({ control_uri: cfg.control_uri, key: cfg.key });
    res.writeHead(200).end();
    return;
  }
  if (!isNodeReqWsOverHttp(req)) {
    res.writeHead(400, { 'Content-Type': 'text/plain' }).end('not WebSocket-over-HTTP');
    return;
  }
  const ws = await getWebSocketContextFromNodeReq(req);
  const path = req.url.split('?')[0];
  if (ws.isOpening()) {
    ws.accept();
    if (path === '/base/chat') {
      ws.subscribe('room');
      ws.send('welcome');
    }
  }
  while (ws.canRecv()) {
    const message = ws.recvRaw();
    if (message == null) {
      ws.close();
      break;
    }
    if (path === '/base/chat') {
      await publisher.publishFormats('room', new WebSocketMessageFormat(`node: ${message}`));
    } else if (typeof message === 'string') {
      ws.send(message);
    } else {
      ws.sendBinary(message);
    }
  }
  res.writeHead(200, ws.toHeaders());
  res.end(Buffer.from(encodeWebSocketEvents(ws.getOutgoingEvents())));
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((e) => {
    console.error(e);
    res.writeHead(500).end(String(e));
  });
});
server.listen(0, '127.0.0.1', () => {
  console.log(server.address().port);
});
