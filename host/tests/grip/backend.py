"""WebSocket-over-HTTP backends for the host's tests, written the way GRIP
users write them: Python's standard HTTP server and the `gripcontrol`
library (its event codec, its WebSocketContext, its publisher, its Grip-Sig
check), answering as django-grip's middleware does.

    python backend.py            # prints the port it listens on, then serves

Every path is under /base. GET /_log returns every request seen (path,
headers, events); POST /_config sets the publisher (control_uri, key, iss)
and the Grip-Sig key.
"""

import json
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pubcontrol import Item
from gripcontrol import (
    GripPubControl,
    WebSocketContext,
    WebSocketEvent,
    WebSocketMessageFormat,
    decode_websocket_events,
    encode_websocket_events,
    validate_sig,
    websocket_control_message,
)

LOG = []
LOCK = threading.Lock()
SETTINGS = {"publisher": None, "sig_key": None}


def respond(ctx):
    """The answer django-grip's middleware gives for a WebSocketContext."""
    events = []
    if ctx.accepted:
        events.append(WebSocketEvent("OPEN"))
    events.extend(ctx.out_events)
    if ctx.closed:
        events.append(WebSocketEvent("CLOSE", struct.pack(">H", ctx.out_close_code or 1000)))
    headers = {"Content-Type": "application/websocket-events"}
    if ctx.accepted:
        headers["Sec-WebSocket-Extensions"] = "grip"
    for k, v in ctx.meta.items():
        if ctx.orig_meta.get(k) != v:
            headers["Set-Meta-" + k] = v
    for k in ctx.orig_meta:
        if k not in ctx.meta:
            headers["Set-Meta-" + k] = ""
    return 200, headers, encode_websocket_events(events)


def echo(ctx, events):
    if ctx.is_opening():
        ctx.accept()
    while ctx.can_recv():
        try:
            m = ctx.recv()
        except IOError:
            break
        if m is None:
            ctx.close(ctx.close_code)
            break
        if isinstance(m, bytes):
            ctx.send_binary(m)
        else:
            ctx.send(m)
    return respond(ctx)


def chat(ctx, events):
    if ctx.is_opening():
        ctx.accept()
        ctx.subscribe("room")
        ctx.send("welcome")
    while ctx.can_recv():
        try:
            m = ctx.recv()
        except IOError:
            break
        if m is None:
            ctx.close()
            break
        if m.startswith("/nick "):
            ctx.meta["nick"] = m[6:]
            ctx.send("you are " + m[6:])
        elif m == "/whoami":
            ctx.send("nick=" + ctx.meta.get("nick", "?"))
        elif m == "/leave":
            ctx.unsubscribe("room")
            ctx.send("left")
        else:
            nick = ctx.meta.get("nick", "anon")
            SETTINGS["publisher"].publish("room", Item(WebSocketMessageFormat(nick + ": " + m)), blocking=True)
    return respond(ctx)


def slow(ctx, events):
    """Takes 300 ms per request; says how many messages each one carried."""
    time.sleep(0.3)
    if ctx.is_opening():
        ctx.accept()
    n = 0
    while ctx.can_recv():
        m = ctx.recv()
        if m is None:
            ctx.close()
            break
        n += 1
        ctx.send(m)
    if n:
        ctx.send("batch %d" % n)
    return respond(ctx)


def sig(ctx, events, headers):
    token = headers.get("Grip-Sig")
    ok = token is not None and validate_sig(token, SETTINGS["sig_key"])
    if ctx.is_opening():
        ctx.accept()
        ctx.send("sig " + ("valid" if ok else "invalid"))
    while ctx.can_recv():
        if ctx.recv() is None:
            break
    return respond(ctx)


def commands(ctx, events):
    """Each message names what the backend does: close with a code, drop
    the connection, set meta through a control message, keep alive."""
    if ctx.is_opening():
        ctx.accept()
        ctx.send("ready")
    extra = []
    while ctx.can_recv():
        m = ctx.recv()
        if m is None:
            ctx.close()
            break
        if m.startswith("close "):
            ctx.send("closing")
            ctx.close(int(m[6:]))
        elif m == "disconnect":
            _, headers, body = respond(ctx)
            return 200, headers, body + b"DISCONNECT\r\n"
        elif m.startswith("meta "):
            name, value = m[5:].split("=", 1)
            ctx.send_control(websocket_control_message("set-meta", {"name": name, "value": value}))
            ctx.send("meta set")
        elif m == "keep-alive":
            ctx.send_control(websocket_control_message("keep-alive", {"content": "ka", "timeout": 1}))
            ctx.send("keeping alive")
        elif m == "unprefixed":
            extra.append(WebSocketEvent("TEXT", b"no prefix"))
            ctx.send("after")
        elif m == "binary":
            ctx.send_binary(b"\x00\x01\xff")
    status, headers, body = respond(ctx)
    return status, headers, encode_websocket_events(extra) + body if extra else body


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: without TCP_NODELAY the second waits
    # for the delayed ACK of the first (40 ms a request).
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def send(self, status, headers, body):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/_log":
            with LOCK:
                body = json.dumps(LOG).encode()
            self.send(200, {"Content-Type": "application/json"}, body)
        else:
            self.send(404, {}, b"")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/_config":
            cfg = json.loads(body)
            pub = {"control_uri": cfg["control_uri"], "key": cfg["key"]}
            if cfg.get("iss"):
                pub["control_iss"] = cfg["iss"]
            SETTINGS["publisher"] = GripPubControl(pub)
            SETTINGS["sig_key"] = cfg.get("sig_key")
            return self.send(200, {}, b"")
        path = self.path.split("?")[0]
        try:
            events = decode_websocket_events(body)
        except Exception as e:
            return self.send(400, {"Content-Type": "text/plain"}, str(e).encode())
        record = {
            "path": self.path,
            "cid": self.headers.get("Connection-Id"),
            "meta": {k[5:].lower(): v for k, v in self.headers.items() if k.lower().startswith("meta-")},
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "events": [[e.type, (e.content or b"").decode("latin-1")] for e in events],
        }
        with LOCK:
            LOG.append(record)
        meta = {k[5:].lower(): v for k, v in self.headers.items() if k.lower().startswith("meta-")}
        ctx = WebSocketContext(self.headers.get("Connection-Id"), meta, events)
        if path == "/base/reject":
            return self.send(403, {"Content-Type": "text/plain"}, b"go away")
        if path == "/base/garbage":
            if ctx.is_opening():
                ctx.accept()
                return self.send(*respond(ctx))
            return self.send(200, {"Content-Type": "text/plain"}, b"this is not events")
        if path == "/base/bad-events":
            if ctx.is_opening():
                ctx.accept()
                return self.send(*respond(ctx))
            return self.send(200, {"Content-Type": "application/websocket-events"}, b"TEXT 99\r\nshort\r\n")
        routes = {
            "/base/echo": echo,
            "/base/grip-echo": echo,
            "/base/chat": chat,
            "/base/slow": slow,
            "/base/commands": commands,
        }
        if path == "/base/refresh":
            # Asks for an empty request after a second without one.
            status, headers, body = echo(ctx, events)
            headers["Keep-Alive-Interval"] = "1"
            return self.send(status, headers, body)
        if path == "/base/sig":
            return self.send(*sig(ctx, events, self.headers))
        if path in routes:
            return self.send(*routes[path](ctx, events))
        self.send(404, {"Content-Type": "text/plain"}, b"no such backend path")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
