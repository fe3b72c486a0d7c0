"""wharf: write Wharf WebSocket handlers in Python.

A handler is a subclass of :class:`Handler` in ``app.py``, with any of
``on_open(conn, req)``, ``on_message(conn, msg)``,
``on_close(conn, code, reason)`` and ``on_timer(name, payload)``. The host owns the sockets and all state:
between two events a handler may be thrown away, so what must survive lives
in connection metadata or :data:`kv`.

Host calls that fail raise :class:`WharfError`, whose ``code`` is one of
``unknown-connection``, ``not-allowed``, ``too-large``, ``quota-exceeded``,
``invalid-argument``, ``conflict``, ``unavailable``.
"""

from __future__ import annotations

import json as _json
from urllib.parse import parse_qsl as _parse_qsl
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union

from componentize_py_types import Err as _Err
from wit_world.imports import channels as _channels
from wit_world.imports import connections as _connections
from wit_world.imports import kv as _kv
from wit_world.imports import logging as _logging
from wit_world.imports import pipeline as _pipeline
from wit_world.imports import timers as _timers
from wit_world.imports import types as _types

__all__ = [
    "Accept",
    "Connection",
    "Handler",
    "HistoryPage",
    "Message",
    "Position",
    "Publication",
    "Reject",
    "Request",
    "Subscribed",
    "Timer",
    "WharfError",
    "channels",
    "connection",
    "kv",
    "log",
    "parse_json",
    "pipeline",
    "timers",
]

Message = Union[str, bytes]
"""A WebSocket message: text as ``str``, binary as ``bytes``."""

Outgoing = Union[str, bytes, bytearray, memoryview]
"""What a handler may send: text, or bytes."""

_CODES = {
    _types.Error.UNKNOWN_CONNECTION: "unknown-connection",
    _types.Error.NOT_ALLOWED: "not-allowed",
    _types.Error.TOO_LARGE: "too-large",
    _types.Error.QUOTA_EXCEEDED: "quota-exceeded",
    _types.Error.INVALID_ARGUMENT: "invalid-argument",
    _types.Error.CONFLICT: "conflict",
    _types.Error.UNAVAILABLE: "unavailable",
}


class WharfError(Exception):
    """A host call failed; ``code`` says why (see the WIT ``error`` enum)."""

    def __init__(self, code: str, op: str = "") -> None:
        super().__init__(f"{op}: {code}" if op else code)
        self.code = code


class Reject(Exception):
    """Raised from ``on_open``: the client gets this HTTP status and reason."""

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(f"rejected with {status}: {reason}")
        self.status = status
        self.reason = reason


class Accept:
    """Returned from ``on_open`` to accept with a subprotocol or metadata."""

    def __init__(self, subprotocol: Optional[str] = None, metadata: Optional[Dict[str, str]] = None) -> None:
        self.subprotocol = subprotocol
        self.metadata = dict(metadata or {})


T = TypeVar("T")


def _call(op: str, f: Callable[[], T]) -> T:
    try:
        return f()
    except _Err as e:
        raise WharfError(_CODES.get(e.value, str(e.value)), op) from None


def _wire(msg: Outgoing) -> _types.Message:
    if isinstance(msg, str):
        return _types.Message_Text(msg)
    if isinstance(msg, (bytes, bytearray, memoryview)):
        return _types.Message_Binary(bytes(msg))
    raise TypeError("a message is a str (text) or bytes (binary); use send_json for values")


def _bytes(value: Union[str, bytes, bytearray]) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError("a key/value value is a str or bytes")


def _id(conn: Union["Connection", int]) -> int:
    return conn.id if isinstance(conn, Connection) else int(conn)


class Position:
    """Where a publication sits in its channel's history.

    ``offset`` grows by one per publication (0 is "before the first");
    ``epoch`` names one unbroken run of the history, and offsets of another
    epoch mean nothing in this one."""

    __slots__ = ("offset", "epoch")

    def __init__(self, offset: int, epoch: str) -> None:
        self.offset = int(offset)
        self.epoch = str(epoch)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Position) and (other.offset, other.epoch) == (self.offset, self.epoch)

    def __hash__(self) -> int:
        return hash((self.offset, self.epoch))

    def __repr__(self) -> str:
        return f"Position({self.offset}, {self.epoch!r})"


class Subscribed:
    """What :meth:`Connection.subscribe` did: ``recovered`` (with ``since``:
    whether every publication after it was delivered), ``replayed`` (how many
    were delivered first) and ``latest`` (the channel's position when the
    connection joined; ``None`` without history)."""

    __slots__ = ("recovered", "replayed", "latest")

    def __init__(self, recovered: bool, replayed: int, latest: Optional[Position]) -> None:
        self.recovered = recovered
        self.replayed = replayed
        self.latest = latest

    def __repr__(self) -> str:
        return f"Subscribed(recovered={self.recovered}, replayed={self.replayed}, latest={self.latest!r})"


class Publication:
    """One publication a channel kept: its ``offset`` and ``msg``."""

    __slots__ = ("offset", "msg")

    def __init__(self, offset: int, msg: "Message") -> None:
        self.offset = offset
        self.msg = msg

    def __repr__(self) -> str:
        return f"Publication({self.offset}, {self.msg!r})"


class HistoryPage:
    """What :meth:`channels.history <_Channels.history>` answers:
    ``publications`` (oldest first), ``latest`` (the channel's position now)
    and ``recovered`` (whether ``since`` could be served)."""

    __slots__ = ("publications", "latest", "recovered")

    def __init__(self, publications: List[Publication], latest: Position, recovered: bool) -> None:
        self.publications = publications
        self.latest = latest
        self.recovered = recovered

    def __repr__(self) -> str:
        return f"HistoryPage({self.publications!r}, latest={self.latest!r}, recovered={self.recovered})"


def _to_wit(p: Optional[Position], op: str) -> Optional[_types.Position]:
    if p is None:
        return None
    if not isinstance(p, Position):
        raise TypeError(f"{op}: since is a wharf.Position, not {type(p).__name__}")
    if not 0 <= p.offset < 2**64:
        raise ValueError(f"{op}: offset {p.offset} is out of range")
    return _types.Position(p.offset, p.epoch)


def _position(p: _types.Position) -> Position:
    return Position(p.offset, p.epoch)


def _from_wit(p: Optional[_types.Position]) -> Optional[Position]:
    return None if p is None else _position(p)


class Connection:
    """One WebSocket connection of this plugin."""

    __slots__ = ("id",)

    def __init__(self, id: int) -> None:
        self.id = id
        """The connection id (unique across hosts)."""

    def send(self, msg: Outgoing) -> None:
        """Sends a message (str: text, bytes: binary) after this event."""
        _call("send", lambda: _connections.emit(self.id, _wire(msg)))

    def send_json(self, value: Any) -> None:
        """Sends ``json.dumps(value)`` as a text message."""
        self.send(_json.dumps(value))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Closes the connection with ``code`` (1000 or 3000-4999) after this event."""
        _call("close", lambda: _connections.close(self.id, code, reason))

    def metadata(self, key: str) -> Optional[str]:
        """One metadata value, or ``None``."""
        return _call("metadata", lambda: _connections.get_metadata(self.id, key))

    def set_metadata(self, key: str, value: str) -> None:
        """Sets one metadata value (kept by the host until the connection closes)."""
        _call("set_metadata", lambda: _connections.set_metadata(self.id, key, str(value)))

    def delete_metadata(self, key: str) -> None:
        """Removes one metadata value."""
        _call("delete_metadata", lambda: _connections.delete_metadata(self.id, key))

    def info(self) -> Dict[str, Any]:
        """The connection's ``id``, ``route``, ``metadata`` and ``channels``."""
        i = _call("info", lambda: _connections.info(self.id))
        return {"id": i.id, "route": i.route, "metadata": dict(i.metadata), "channels": list(i.channels)}

    def subscribe(self, channel: str, since: Optional[Position] = None) -> Subscribed:
        """Joins a channel; membership ends when the connection closes.

        With ``since`` (the last position the client saw) on a channel that
        keeps history, the publications after it are delivered first, in
        order, then the live ones, none twice."""
        s = _call("subscribe", lambda: _channels.subscribe(self.id, channel, _to_wit(since, "subscribe")))
        return Subscribed(s.recovered, s.replayed, _from_wit(s.latest))

    def unsubscribe(self, channel: str) -> None:
        """Leaves a channel (a no-op when not a member)."""
        _call("unsubscribe", lambda: _channels.unsubscribe(self.id, channel))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Connection) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"Connection({self.id})"


def connection(id: int) -> Connection:
    """The connection with id ``id`` (from ``conn.id`` or ``channels.members``)."""
    return Connection(int(id))


class Request:
    """What ``on_open`` sees of the upgrade request."""

    __slots__ = ("path", "query", "header_list", "subprotocols", "remote_addr", "_headers", "_params")

    def __init__(self, r: _types.Request) -> None:
        self.path: str = r.path
        self.query: str = r.query
        self.header_list: List[Tuple[str, str]] = r.headers
        self.subprotocols: List[str] = r.subprotocols
        self.remote_addr: str = r.remote_addr
        self._headers: Optional[Dict[str, str]] = None
        self._params: Optional[Dict[str, str]] = None

    @property
    def headers(self) -> Dict[str, str]:
        """Headers by lower-case name; repeated ones joined with ", "."""
        if self._headers is None:
            h: Dict[str, str] = {}
            for k, v in self.header_list:
                h[k] = f"{h[k]}, {v}" if k in h else v
            self._headers = h
        return self._headers

    def header(self, name: str) -> Optional[str]:
        """One header (any case), or ``None``."""
        return self.headers.get(name.lower())

    @property
    def params(self) -> Dict[str, str]:
        """Query parameters, decoded; the first value of each name."""
        if self._params is None:
            p: Dict[str, str] = {}
            for k, v in _parse_qsl(self.query, keep_blank_values=True):
                p.setdefault(k, v)
            self._params = p
        return self._params


class Handler:
    """Subclass this in ``app.py``; override the events you need."""

    def on_open(self, conn: Connection, req: Request) -> Optional[Accept]:
        """Accept (return ``None`` or an :class:`Accept`) or raise :class:`Reject`."""
        return None

    def on_message(self, conn: Connection, msg: Message) -> Optional[Outgoing]:
        """A returned message is the direct reply to the sender."""
        return None

    def on_close(self, conn: Connection, code: int, reason: str) -> None:
        """Runs exactly once for every accepted connection."""
        return None

    def on_timer(self, name: str, payload: bytes) -> None:
        """Timer ``name`` (see :data:`timers`) is due; an exception runs it
        again later, a bounded number of times."""
        return None


class Timer:
    """A pending timer."""

    name: str
    due_unix_ms: int
    """When it is due (after a failed run: its next attempt), Unix ms."""
    payload: bytes
    attempts: int
    """How many times its ``on_timer`` failed so far."""

    def __init__(self, name: str, due_unix_ms: int, payload: bytes, attempts: int) -> None:
        self.name, self.due_unix_ms, self.payload, self.attempts = name, due_unix_ms, payload, attempts

    def __repr__(self) -> str:
        return f"Timer({self.name!r}, due_unix_ms={self.due_unix_ms}, attempts={self.attempts})"


def _ms(v: Union[int, float], what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v < 0 or v == float("inf"):
        raise ValueError(f"{what} is a number of milliseconds, at least 0")
    return int(-(-v // 1))


class _Pipeline:
    """Handing the current message on to another handler of the route (a
    route may be a chain of handlers: the host's config)."""

    def forward(self, handler: str, msg: Outgoing) -> None:
        """Hands ``msg`` to ``handler``, another plugin of this route: its
        ``on_message`` runs after this event and its reply goes to the
        client. Raises ``not-allowed`` outside ``on_message``, for this
        handler itself or one the route does not have."""
        _call("pipeline.forward", lambda: _pipeline.forward(handler, _wire(msg)))


class _Timers:
    """Timers: work for later, kept by the host and run by the handler's
    ``on_timer(name, payload)`` on exactly one host, at least once, never
    before its time. Names are the plugin's own; setting a name again
    replaces the pending timer. Payloads are ``str`` (UTF-8) or ``bytes``."""

    def set(self, name: str, after_ms: Union[int, float], payload: Union[str, bytes] = b"") -> None:
        """Sets timer ``name`` due ``after_ms`` milliseconds from now."""
        when = _timers.When_AfterMs(_ms(after_ms, "after_ms"))
        _call("timers.set", lambda: _timers.set(name, when, _bytes(payload)))

    def set_at(self, name: str, unix_ms: Union[int, float], payload: Union[str, bytes] = b"") -> None:
        """Sets timer ``name`` due at Unix time ``unix_ms`` (a past time: at once)."""
        when = _timers.When_AtUnixMs(_ms(unix_ms, "unix_ms"))
        _call("timers.set_at", lambda: _timers.set(name, when, _bytes(payload)))

    def cancel(self, name: str) -> bool:
        """Cancels timer ``name``; whether it was pending."""
        return _call("timers.cancel", lambda: _timers.cancel(name))

    def get(self, name: str) -> Optional[Timer]:
        """Timer ``name``, or ``None`` when none is pending."""
        t = _call("timers.get", lambda: _timers.get(name))
        return None if t is None else Timer(t.name, t.due_unix_ms, bytes(t.payload), t.attempts)


class _Channels:
    """Fan-out to the route and to named channels (the plugin's own names)."""

    def publish(self, channel: str, msg: Outgoing) -> Optional[Position]:
        """Sends to every member of ``channel`` (the caller too, when a member).
        On a channel that keeps history, answers the publication's position;
        otherwise ``None``."""
        return _from_wit(_call("publish", lambda: _channels.publish(channel, _wire(msg))))

    def publish_json(self, channel: str, value: Any) -> Optional[Position]:
        """Publishes ``json.dumps(value)`` as text; answers as :meth:`publish`."""
        return self.publish(channel, _json.dumps(value))

    def publish_stamped(self, channel: str, value: Union[Dict[str, Any], str]) -> Position:
        """Publishes a JSON object (a dict, or its JSON text) to which the host
        adds the publication's position as the first fields, ``"offset"`` and
        ``"epoch"``; answers that position. Only on a channel that keeps
        history (else ``not-allowed``)."""
        text = value if isinstance(value, str) else _json.dumps(value)
        return _position(_call("publish_stamped", lambda: _channels.publish_stamped(channel, text)))

    def history(self, channel: str, since: Optional[Position] = None, limit: int = 100) -> HistoryPage:
        """What ``channel`` kept after ``since``, oldest first, at most ``limit``
        (at most 1000); without ``since``, the last ``limit``. Counts as one
        store operation."""
        page = _call("history", lambda: _channels.history(channel, _to_wit(since, "history"), limit))
        return HistoryPage(
            [Publication(p.offset, p.msg.value) for p in page.publications],
            _position(page.latest),
            page.recovered,
        )

    def broadcast(self, msg: Outgoing, except_: Optional[Union[Connection, int]] = None) -> None:
        """Sends to every connection on the current route, but ``except_``."""
        ex = None if except_ is None else _id(except_)
        _call("broadcast", lambda: _channels.broadcast(_wire(msg), ex))

    def members(self, channel: str) -> List[Connection]:
        """The members of ``channel``, in ascending id order."""
        return [Connection(i) for i in _call("members", lambda: _channels.members(channel))]


class _Kv:
    """The plugin's own key/value namespace. Values are str or bytes."""

    def get(self, key: str) -> Optional[str]:
        """The value as text (UTF-8), or ``None`` when absent."""
        v = self.get_bytes(key)
        return None if v is None else v.decode()

    def get_bytes(self, key: str) -> Optional[bytes]:
        """The value as bytes, or ``None`` when absent."""
        return _call("kv.get", lambda: _kv.get(key))

    def get_json(self, key: str) -> Any:
        """The value parsed as JSON, or ``None`` when absent."""
        v = self.get(key)
        return None if v is None else _json.loads(v)

    def set(self, key: str, value: Union[str, bytes], ttl_ms: Optional[int] = None) -> None:
        """Writes a value, expiring after ``ttl_ms`` when given."""
        _call("kv.set", lambda: _kv.set(key, _bytes(value), ttl_ms))

    def set_json(self, key: str, value: Any, ttl_ms: Optional[int] = None) -> None:
        """Writes ``json.dumps(value)``."""
        self.set(key, _json.dumps(value), ttl_ms)

    def delete(self, key: str) -> bool:
        """Removes a key; whether it existed."""
        return _call("kv.delete", lambda: _kv.delete(key))

    def increment(self, key: str, delta: int = 1) -> int:
        """Atomically adds ``delta`` to a counter; the new value."""
        return _call("kv.increment", lambda: _kv.increment(key, delta))

    def compare_and_swap(self, key: str, expected: Optional[Union[str, bytes]], value: Union[str, bytes]) -> bool:
        """Replaces the value when it still equals ``expected`` (``None``: absent)."""
        e = None if expected is None else _bytes(expected)
        return _call("kv.compare_and_swap", lambda: _kv.compare_and_swap(key, e, _bytes(value)))

    def list_keys(self, prefix: str = "", cursor: Optional[str] = None, limit: int = 100) -> List[str]:
        """Keys starting with ``prefix``, in order, after ``cursor``, at most ``limit``."""
        return _call("kv.list_keys", lambda: _kv.list_keys(prefix, cursor, limit))


class _Log:
    """Lines in the host's log, tagged with the plugin and connection."""

    def trace(self, *args: Any) -> None:
        _line(_types.LogLevel.TRACE, args)

    def debug(self, *args: Any) -> None:
        _line(_types.LogLevel.DEBUG, args)

    def info(self, *args: Any) -> None:
        _line(_types.LogLevel.INFO, args)

    def warn(self, *args: Any) -> None:
        _line(_types.LogLevel.WARN, args)

    def error(self, *args: Any) -> None:
        _line(_types.LogLevel.ERROR, args)


def _line(level: _types.LogLevel, args: Tuple[Any, ...]) -> None:
    _logging.log(level, " ".join(a if isinstance(a, str) else repr(a) for a in args))


def parse_json(msg: Message) -> Any:
    """The text of a message parsed as JSON (``None`` for binary or bad JSON)."""
    if not isinstance(msg, str):
        return None
    try:
        return _json.loads(msg)
    except ValueError:
        return None


channels = _Channels()
kv = _Kv()
log = _Log()
pipeline = _Pipeline()
timers = _Timers()
