"""`py-faulty`: a test handler for the host's own tests, not an example.

It echoes, but misbehaves on command: `throw` raises (the event ends, the
connection closes with 1011), `spin` loops forever (stopped by the event
deadline), `bomb` allocates until the memory cap stops it, `read` tries to
read /etc/passwd and `dial` to open a TCP socket (neither reaches anything).
`whoami` answers the connection id; on-close records each close's code in
key/value (`closed:<id>`), which `close-code?<id>` reads back. (Modules are
imported at the top: componentize-py bundles what the module imports when
it is built, and a handler cannot import more at run time.) An open whose
query says `throw` raises (the client gets 500); `reject=STATUS` rejects.
`publish:CH:TEXT` publishes and answers the position as JSON (`null` on a
channel without history), or `error: CODE`. `forward:HANDLER:TEXT` hands
TEXT on to another handler of the route (`forwarded`, or `error: CODE`)."""

import json
import socket

from wharf import Handler, Reject, WharfError, channels, kv, pipeline


class Faulty(Handler):
    def on_open(self, conn, req):
        if "throw" in req.params:
            raise RuntimeError("asked to throw in on_open")
        if "reject" in req.params:
            raise Reject(int(req.params["reject"]), "rejected by request")

    def on_message(self, conn, msg):
        if not isinstance(msg, str):
            return msg
        if msg == "whoami":
            return str(conn.id)
        if msg == "throw":
            raise RuntimeError("asked to throw")
        if msg == "spin":
            while True:
                pass
        if msg == "bomb":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        if msg == "read":
            try:
                with open("/etc/passwd") as f:
                    return "read: " + f.read()
            except OSError as e:
                return f"refused: {e}"
        if msg.startswith("publish:"):
            _, channel, text = msg.split(":", 2)
            try:
                at = channels.publish(channel, text)
            except WharfError as e:
                return f"error: {e.code}"
            return json.dumps(None if at is None else {"offset": at.offset, "epoch": at.epoch})
        if msg.startswith("forward:"):
            _, to, text = msg.split(":", 2)
            try:
                pipeline.forward(to, text)
            except WharfError as e:
                return f"error: {e.code}"
            return "forwarded"
        if msg == "dial":
            try:
                socket.create_connection(("127.0.0.1", 80), timeout=1)
                return "connected"
            except OSError as e:
                return f"refused: {e}"
        if msg.startswith("close-code?"):
            return kv.get("closed:" + msg[len("close-code?"):]) or ""
        return msg

    def on_close(self, conn, code, reason):
        kv.set(f"closed:{conn.id}", str(code))
