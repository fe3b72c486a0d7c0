"""`echo` in Python: every text or binary message comes back unchanged, as
the direct reply to its sender. Same behaviour as examples/echo."""

from wharf import Handler


class Echo(Handler):
    def on_message(self, conn, msg):
        return msg
