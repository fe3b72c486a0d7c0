"""`rooms` in Python: chat rooms whose clients miss nothing across
reconnects, with the behaviour of examples/rooms (see there).

A client opens ``?room=NAME&name=NICK``, and after a drop reopens it with
``&since=OFFSET&epoch=EPOCH``, the position of the last message it saw.
Every message is published stamped with its position; the host keeps each
room's history (``[[channels]] match = "room:*"``) and replays what the
client missed before the live messages, none twice. After the replay the
client gets ``{"type":"welcome","recovered":…,"replayed":…,"offset":…,"epoch":…}``.
``{"type":"history","limit":N}`` (default 20, at most 100) answers the
room's last messages:
``{"type":"history","recovered":…,"offset":…,"epoch":…,"messages":[…]}``."""

import json
import re

from wharf import Accept, Handler, Position, Reject, WharfError, channels, parse_json

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_HISTORY = 100


class Rooms(Handler):
    def on_open(self, conn, req):
        room = req.params.get("room", "lobby")
        name = req.params.get("name", "anonymous")
        if not NAME.fullmatch(room) or not NAME.fullmatch(name):
            raise Reject(400, "room and name: 1 to 64 ASCII letters, digits, - or _")
        since = None
        if "since" in req.params and "epoch" in req.params:
            if not re.fullmatch(r"[0-9]{1,19}", req.params["since"]):
                raise Reject(400, "since must be an offset")
            since = Position(int(req.params["since"]), req.params["epoch"])
        try:
            joined = conn.subscribe(f"room:{room}", since=since)
        except WharfError as e:
            raise Reject(503, f"cannot join the room: {e.code}")
        latest = joined.latest or Position(0, "")
        conn.send_json({
            "type": "welcome",
            "room": room,
            "recovered": joined.recovered,
            "replayed": joined.replayed,
            "offset": latest.offset,
            "epoch": latest.epoch,
        })
        return Accept(metadata={"room": room, "name": name})

    def on_message(self, conn, msg):
        if not isinstance(msg, str):
            return None
        room = conn.metadata("room")
        if room is None:
            return None
        parsed = parse_json(msg)
        if isinstance(parsed, dict) and parsed.get("type") == "history":
            limit = parsed.get("limit")
            limit = min(limit, MAX_HISTORY) if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0 else 20
            return json.dumps(recent(room, limit))
        if isinstance(parsed, dict):
            text = parsed.get("text") if isinstance(parsed.get("text"), str) else ""
        else:
            text = msg
        if not text:
            return None
        try:
            channels.publish_stamped(f"room:{room}", {"type": "say", "from": conn.metadata("name") or "", "text": text})
        except WharfError as e:
            return json.dumps({"type": "error", "error": e.code})
        return None


def recent(room, limit):
    """The reply to a ``history`` request: the room's last ``limit`` messages."""
    try:
        page = channels.history(f"room:{room}", limit=limit)
    except WharfError as e:
        return {"type": "error", "error": e.code}
    return {
        "type": "history",
        "recovered": page.recovered,
        "offset": page.latest.offset,
        "epoch": page.latest.epoch,
        "messages": [json.loads(p.msg) for p in page.publications if isinstance(p.msg, str)],
    }
