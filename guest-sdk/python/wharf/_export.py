"""The glue ``wharf build`` puts between a handler class and the WIT exports
(``wharf:handler/handler@0.2.0`` and ``timer-handler``). Not part of the
public API.

An exception ends only its event: from ``on_open`` the client gets 500 (a
:class:`Reject` gets its own status); from ``on_message`` the event traps and
the host closes the connection with 1011; from ``on_close`` it is logged;
from ``on_timer`` the event traps and the host runs the timer again later.
Its traceback goes to the host log, tagged with plugin and connection.
"""

from __future__ import annotations

import traceback
from types import ModuleType
from typing import Any, Optional, Tuple, Type

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

from . import Accept, Connection, Handler, Reject, Request, log

_ACCEPT = types.Accept(None, [])


def _report(event: str, conn: Any, e: BaseException) -> None:
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip()
    log.error(f"uncaught exception in {event} (connection {conn}): {text}")


def _accept(out: Any) -> types.Accept:
    if out is None or out is True:
        return _ACCEPT
    if isinstance(out, Accept):
        return types.Accept(out.subprotocol, [(k, str(v)) for k, v in out.metadata.items()])
    raise TypeError("on_open returns None or an Accept")


def _reply(out: Any) -> Optional[types.Message]:
    if out is None:
        return None
    if isinstance(out, str):
        return types.Message_Text(out)
    if isinstance(out, (bytes, bytearray, memoryview)):
        return types.Message_Binary(bytes(out))
    raise TypeError(f"on_message returned {type(out).__name__}: return a str, bytes or None")


def handler_class(module: ModuleType) -> Type[Handler]:
    """The one subclass of :class:`Handler` that ``module`` defines."""
    found = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, Handler) and v is not Handler and v.__module__ == module.__name__
    ]
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise TypeError(f"{module.__name__}.py must define exactly one subclass of wharf.Handler (found: {names})")
    return found[0]


def export_handlers(module: ModuleType) -> Tuple[type, type]:
    """The classes componentize-py exports as ``handler`` and
    ``timer-handler``, for ``module``'s handler."""
    app = handler_class(module)()
    on_timer = app.on_timer

    class TimerGlue(exports.TimerHandler):
        def on_timer(self, name: str, payload: bytes) -> None:
            try:
                on_timer(name, bytes(payload))
            except Exception as e:
                _report("on_timer", f"none, timer {name}", e)
                raise

    return _handler_glue(app), TimerGlue


def _handler_glue(app: Handler) -> type:
    on_open, on_message, on_close = app.on_open, app.on_message, app.on_close

    class Glue(exports.Handler):
        def on_open(self, conn: int, req: types.Request) -> types.Accept:
            try:
                return _accept(on_open(Connection(conn), Request(req)))
            except Reject as r:
                raise Err(types.Reject(r.status, r.reason)) from None
            except Exception as e:
                _report("on_open", conn, e)
                raise Err(types.Reject(500, "handler error")) from None

        def on_message(self, conn: int, msg: types.Message) -> Optional[types.Message]:
            try:
                return _reply(on_message(Connection(conn), msg.value))
            except Exception as e:
                _report("on_message", conn, e)
                raise

        def on_close(self, conn: int, code: int, reason: str) -> None:
            try:
                on_close(Connection(conn), code, reason)
            except Exception as e:
                _report("on_close", conn, e)

    return Glue
