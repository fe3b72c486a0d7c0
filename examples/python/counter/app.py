"""`counter` in Python: every message atomically increments key `hits` in the
plugin's key/value namespace and replies with the new value as text. Same
behaviour as examples/counter; with the embedded store the count survives a
restart of the host."""

from wharf import Handler, WharfError, kv


class Counter(Handler):
    def on_message(self, conn, msg):
        try:
            return str(kv.increment("hits", 1))
        except WharfError as e:
            return f"error: {e.code}"
