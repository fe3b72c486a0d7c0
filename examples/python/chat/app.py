"""`chat` in Python: the chat service of the Fanout "WebSockets with AWS
Lambda" article, with the behaviour of examples/chat.

Every connection joins channel `room` on open. `/nick NAME` stores `nick` in
the connection's metadata (kept by the host between events) and replies
`nickname set to [NAME]`; any other text is published to `room` as
`NICK: text` (`anonymous` until a nick is set), so every member, the sender
too, receives it."""

from wharf import Handler, Reject, WharfError, channels

ROOM = "room"


class Chat(Handler):
    def on_open(self, conn, req):
        try:
            conn.subscribe(ROOM)
        except WharfError as e:
            raise Reject(503, f"cannot join the room: {e.code}")

    def on_message(self, conn, msg):
        if not isinstance(msg, str):
            return None
        if msg.startswith("/nick "):
            nick = msg[len("/nick "):]
            try:
                conn.set_metadata("nick", nick)
                return f"nickname set to [{nick}]"
            except WharfError as e:
                return f"cannot set nickname: {e.code}"
        try:
            nick = conn.metadata("nick") or "anonymous"
        except WharfError:
            nick = "anonymous"
        try:
            channels.publish(ROOM, f"{nick}: {msg}")
        except WharfError as e:
            return f"not sent: {e.code}"
        return None
