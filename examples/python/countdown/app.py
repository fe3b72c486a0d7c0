"""`countdown` in Python: a room whose countdown the host runs, whoever is
connected, with the behaviour of examples/countdown (see there).

A client opens ``?room=NAME`` and gets
``{"type":"welcome","room":…,"running":…,"left":N}``;
``{"type":"start","seconds":N}`` (1 to 3600) makes every member get
``{"type":"started","seconds":N}``, then a ``{"type":"tick","left":…}`` a
second down to 0, then ``{"type":"done"}``; ``{"type":"stop"}`` cancels it
(``{"type":"stopped"}``), ``{"type":"status"}`` answers
``{"type":"status","running":…,"left":…}``. One timer per room,
``countdown:NAME``; each firing sets the next at its own due time plus a
second, so a late firing delays none after it."""

import json
import re

from wharf import Accept, Handler, Reject, WharfError, channels, parse_json, timers

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_SECONDS = 3600


def channel(room):
    return f"countdown:{room}"


def payload(room, left, at):
    """What a room's timer carries: the seconds left after its firing's tick, and when it is due."""
    return compact({"room": room, "left": left, "at": at})


def carried(raw):
    try:
        p = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(p, dict) or not all(isinstance(p.get(k), t) for k, t in (("room", str), ("left", int), ("at", int))):
        return None
    return p


def status(room):
    """Whether the room's countdown runs, and the seconds it has left."""
    pending = timers.get(channel(room))
    c = carried(pending.payload) if pending else None
    return {"running": True, "left": c["left"] + 1} if c else {"running": False, "left": 0}


def start(room, seconds):
    name = channel(room)
    # Set it a second from now, read back when that is, and keep that in the
    # payload: each firing schedules the next from its own due time.
    timers.set(name, 1000, payload(room, seconds - 1, 0))
    due = timers.get(name).due_unix_ms
    timers.set_at(name, due, payload(room, seconds - 1, due))
    channels.publish_json(name, {"type": "started", "seconds": seconds})


def compact(value):
    return json.dumps(value, separators=(",", ":"))


def error(why):
    return compact({"type": "error", "error": why})


class Countdown(Handler):
    def on_open(self, conn, req):
        room = req.params.get("room", "lobby")
        if not NAME.fullmatch(room):
            raise Reject(400, "room: 1 to 64 ASCII letters, digits, - or _")
        try:
            conn.subscribe(channel(room))
        except WharfError as e:
            raise Reject(503, f"cannot join the room: {e.code}")
        conn.send_json({"type": "welcome", "room": room, **status(room)})
        return Accept(metadata={"room": room})

    def on_message(self, conn, msg):
        room = conn.metadata("room")
        if room is None or not isinstance(msg, str):
            return None
        request = parse_json(msg)
        kind = request.get("type") if isinstance(request, dict) else None
        if kind == "start":
            s = request.get("seconds")
            if not isinstance(s, int) or isinstance(s, bool) or not 1 <= s <= MAX_SECONDS:
                return error("seconds: 1 to 3600")
            try:
                start(room, s)
            except WharfError as e:
                return error(e.code)
            return None
        if kind == "stop":
            if timers.cancel(channel(room)):
                channels.publish_json(channel(room), {"type": "stopped"})
            return None
        if kind == "status":
            return compact({"type": "status", **status(room)})
        return error('send {"type":"start","seconds":N}, {"type":"stop"} or {"type":"status"}')

    def on_timer(self, name, raw):
        c = carried(raw)
        if c is None:
            return
        ch = channel(c["room"])
        channels.publish_json(ch, {"type": "tick", "left": c["left"]})
        if c["left"] == 0:
            channels.publish_json(ch, {"type": "done"})
        else:
            # A failure here raises, so the host runs this firing again
            # rather than losing the countdown.
            timers.set_at(ch, c["at"] + 1000, payload(c["room"], c["left"] - 1, c["at"] + 1000))
