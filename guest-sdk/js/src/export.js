// The glue `wharf build` puts between a handler's default export and the
// WIT exports (`wharf:handler/handler@0.2.0` and `timer-handler`). Not part
// of the public API.
//
// An exception ends only its event: from `onOpen` the client gets 500 (a
// `Reject` gets its own status); from `onMessage` the event traps and the
// host closes the connection with 1011; from `onClose` it is logged; from
// `onTimer` the event traps and the host runs the timer again later. Its
// message and stack go to the host log, tagged with plugin and connection.

import { Connection, Reject, asBytes, log } from "./index.js";

const ACCEPT = { subprotocol: undefined, metadata: [] };

/** What `onOpen` sees of the upgrade request. */
class Request {
  constructor(r) {
    this.path = r.path;
    this.query = r.query;
    this.subprotocols = r.subprotocols;
    this.remoteAddr = r.remoteAddr;
    this.headerList = r.headers;
    this._headers = undefined;
    this._params = undefined;
  }

  /** Headers by lower-case name; repeated ones joined with ", ". */
  get headers() {
    if (this._headers === undefined) {
      const h = {};
      for (const [k, v] of this.headerList) h[k] = k in h ? `${h[k]}, ${v}` : v;
      this._headers = h;
    }
    return this._headers;
  }

  /** One header (any case), or `undefined`. */
  header(name) {
    return this.headers[name.toLowerCase()];
  }

  /** Query parameters, decoded; the first value of each name. */
  get params() {
    if (this._params === undefined) {
      const p = {};
      for (const part of this.query.split("&")) {
        if (!part) continue;
        const eq = part.indexOf("=");
        const [k, v] = eq < 0 ? [part, ""] : [part.slice(0, eq), part.slice(eq + 1)];
        const key = decode(k);
        if (!(key in p)) p[key] = decode(v);
      }
      this._params = p;
    }
    return this._params;
  }
}

function decode(s) {
  try {
    return decodeURIComponent(s.replace(/\+/g, " "));
  } catch {
    return s;
  }
}

// An Error from any realm (the bindings throw their own TypeErrors).
function isError(e) {
  return e !== null && typeof e === "object" && typeof e.message === "string" && "stack" in e;
}

function report(event, id, e) {
  const what = isError(e) ? `${e.name}: ${e.message}\n${e.stack ?? ""}` : `thrown value: ${String(e)}`;
  log.error(`uncaught exception in ${event} (connection ${id}): ${what}`.trimEnd());
}

function toAccept(out) {
  if (out === undefined || out === null || out === true) return ACCEPT;
  if (typeof out !== "object") throw new TypeError("onOpen returns nothing, or { subprotocol, metadata }");
  const md = out.metadata;
  const metadata = md === undefined ? [] : Array.isArray(md) ? md : Object.entries(md).map(([k, v]) => [k, String(v)]);
  return { subprotocol: out.subprotocol ?? undefined, metadata };
}

function toReply(out) {
  if (out === undefined || out === null) return undefined;
  if (typeof out === "string") return { tag: "text", val: out };
  const bytes = asBytes(out);
  if (bytes !== undefined) return { tag: "binary", val: bytes };
  throw new TypeError(`onMessage returned ${typeof out}: return a string, a Uint8Array or nothing`);
}

function isThenable(v) {
  return v !== null && typeof v === "object" && typeof v.then === "function";
}

/** The WIT-level `handler` and `timerHandler` exports for the handler `app`. */
export function exportHandlers(app) {
  const h = typeof app === "function" ? new app() : app;
  if (h === null || typeof h !== "object") {
    throw new TypeError("the default export of src/index is the handler: an object or a class with onOpen / onMessage / onClose / onTimer");
  }
  return { handler: exportHandler(h), timerHandler: exportTimerHandler(h) };
}

function exportTimerHandler(h) {
  const { onTimer } = h;
  const failed = (name, e) => {
    report("onTimer", `none, timer ${name}`, e);
    throw e;
  };
  return {
    onTimer(name, payload) {
      if (typeof onTimer !== "function") return;
      let out;
      try {
        out = onTimer.call(h, name, payload);
      } catch (e) {
        failed(name, e);
      }
      if (isThenable(out)) return out.then(undefined, (e) => failed(name, e));
    },
  };
}

function exportHandler(h) {
  const { onOpen, onMessage, onClose } = h;

  const openFailed = (id, e) => {
    if (e instanceof Reject) throw { payload: { status: e.status, reason: e.reason } };
    report("onOpen", id, e);
    throw { payload: { status: 500, reason: "handler error" } };
  };
  const messageFailed = (id, e) => {
    report("onMessage", id, e);
    throw e;
  };

  return {
    onOpen(id, req) {
      if (typeof onOpen !== "function") return ACCEPT;
      let out;
      try {
        out = onOpen.call(h, new Connection(id), new Request(req));
      } catch (e) {
        openFailed(id, e);
      }
      if (isThenable(out)) return out.then(toAccept, (e) => openFailed(id, e));
      return toAccept(out);
    },
    onMessage(id, msg) {
      if (typeof onMessage !== "function") return undefined;
      let out;
      try {
        out = onMessage.call(h, new Connection(id), msg.val);
        if (!isThenable(out)) return toReply(out);
      } catch (e) {
        messageFailed(id, e);
      }
      return out.then(toReply, (e) => messageFailed(id, e));
    },
    onClose(id, code, reason) {
      if (typeof onClose !== "function") return;
      try {
        const out = onClose.call(h, new Connection(id), code, reason);
        if (isThenable(out)) return out.then(undefined, (e) => report("onClose", id, e));
      } catch (e) {
        report("onClose", id, e);
      }
    },
  };
}
