"""`tour` in Python: every host call of the `wharf` module, in one room
(the example of docs/handlers.md; tests in examples/tour/tests), but
channel history's and timers', which examples/python/rooms and
examples/python/countdown show."""

from wharf import Accept, Handler, Reject, WharfError, channels, connection, kv, log, parse_json


class Room(Handler):
    def on_open(self, conn, req):
        # req.path, req.query, req.params (decoded), req.headers (lower-case names),
        # req.header("X-Name"), req.header_list, req.subprotocols, req.remote_addr
        if "chat.v1" not in req.subprotocols:
            raise Reject(400, "speak chat.v1")
        conn.subscribe("room")
        conn.send("welcome")
        return Accept(subprotocol="chat.v1", metadata={"nick": req.params.get("nick", "anonymous")})

    def on_message(self, conn, msg):
        if isinstance(msg, bytes):
            return msg                                   # binary: echoed
        cmd = parse_json(msg) or {}
        op = cmd.get("op")
        if op == "say":
            channels.publish("room", f"{conn.metadata('nick')}: {cmd.get('text')}")
        elif op == "shout":
            channels.broadcast(cmd.get("text", ""), except_=conn)   # the whole route
        elif op == "nick":
            conn.set_metadata("nick", cmd.get("text", ""))
            return "ok"
        elif op == "who":
            return ",".join(c.info()["metadata"].get("nick", "?") for c in channels.members("room"))
        elif op == "poke":
            connection(channels.members("room")[0].id).send_json({"poked": conn.id})
        elif op == "count":
            n = kv.increment("hits", 1)                  # atomic, durable with the embedded store
            kv.set("last", str(n), ttl_ms=60_000)
            kv.set_json("seen", {"by": conn.id})
            return f"{kv.get('last')} {kv.get_json('seen')}"
        elif op == "claim":
            # won when "owner" was absent (None) and is now conn.id
            return "won" if kv.compare_and_swap("owner", None, str(conn.id)) else "lost"
        elif op == "keys":
            return ",".join(kv.list_keys("", limit=10))
        elif op == "leave":
            conn.unsubscribe("room")
            conn.delete_metadata("nick")
            conn.close(4000, "bye")                      # 1000 or 3000-4999, after the event
        else:
            try:
                kv.set("big", "x" * 2_000_000)
            except WharfError as e:
                return f"refused: {e.code}"              # "too-large"
        return None                                      # no direct reply

    def on_close(self, conn, code, reason):
        log.info("left", conn.id, code, reason)          # tagged with plugin and connection
