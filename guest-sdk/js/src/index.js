// wharf: write Wharf WebSocket handlers in JavaScript or TypeScript.
//
// A handler is the default export of `src/index.js` (or `src/index.ts`): an
// object, or a class constructed once, with any of `onOpen(conn, req)`,
// `onMessage(conn, msg)`, `onClose(conn, code, reason)` and
// `onTimer(name, payload)`. The host owns
// the sockets and all state: between two events a handler may be thrown
// away, so what must survive lives in connection metadata or `kv`.
//
// Host calls that fail throw a `WharfError` whose `code` is one of
// `unknown-connection`, `not-allowed`, `too-large`, `quota-exceeded`,
// `invalid-argument`, `conflict`, `unavailable`.

import * as wit from "wharf:handler/connections@0.2.0";
import * as witChannels from "wharf:handler/channels@0.2.0";
import * as witKv from "wharf:handler/kv@0.2.0";
import { log as witLog } from "wharf:handler/logging@0.2.0";
import * as witTimers from "wharf:handler/timers@0.2.0";
import * as witPipeline from "wharf:handler/pipeline@0.2.0";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A host call failed; `code` says why (see the WIT `error` enum). */
export class WharfError extends Error {
  constructor(code, op) {
    super(op ? `${op}: ${code}` : code);
    this.name = "WharfError";
    this.code = code;
  }
}

/** Thrown from `onOpen`: the client gets this HTTP status and reason. */
export class Reject extends Error {
  constructor(status, reason = "") {
    super(`rejected with ${status}: ${reason}`);
    this.name = "Reject";
    this.status = status;
    this.reason = reason;
  }
}

// Runs a host call, turning its `error` into a WharfError.
function call(op, f) {
  try {
    return f();
  } catch (e) {
    if (e && typeof e.payload === "string") throw new WharfError(e.payload, op);
    throw e;
  }
}

// Bytes as a Uint8Array, or `undefined` when `v` holds none. Not
// `instanceof`: the messages the host hands in are made in the bindings'
// own realm, where `Uint8Array` is another constructor.
export function asBytes(v) {
  if (ArrayBuffer.isView(v)) {
    return Object.prototype.toString.call(v) === "[object Uint8Array]" ? v : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  }
  if (Object.prototype.toString.call(v) === "[object ArrayBuffer]") return new Uint8Array(v);
  return undefined;
}

function toWire(msg) {
  if (typeof msg === "string") return { tag: "text", val: msg };
  const bytes = asBytes(msg);
  if (bytes !== undefined) return { tag: "binary", val: bytes };
  throw new TypeError("a message is a string (text) or a Uint8Array / ArrayBuffer (binary); use sendJson for values");
}

function toBytes(value) {
  if (typeof value === "string") return encoder.encode(value);
  const bytes = asBytes(value);
  if (bytes !== undefined) return bytes;
  throw new TypeError("a key/value value is a string or a Uint8Array");
}

function toId(conn) {
  if (conn instanceof Connection) return conn._id;
  if (typeof conn === "bigint") return conn;
  if (typeof conn === "string" || typeof conn === "number") return BigInt(conn);
  throw new TypeError("expected a Connection or a connection id");
}

/** One WebSocket connection of this plugin. */
export class Connection {
  constructor(id) {
    this._id = typeof id === "bigint" ? id : BigInt(id);
  }

  /** The connection id, as a decimal string (unique across hosts). */
  get id() {
    return this._id.toString();
  }

  /** Sends a message (string: text, Uint8Array: binary) after this event. */
  send(msg) {
    call("send", () => wit.emit(this._id, toWire(msg)));
  }

  /** Sends `JSON.stringify(value)` as a text message. */
  sendJson(value) {
    this.send(JSON.stringify(value));
  }

  /** Closes the connection with `code` (1000 or 3000-4999) after this event. */
  close(code = 1000, reason = "") {
    call("close", () => wit.close(this._id, code, reason));
  }

  /** One metadata value, or `undefined`. */
  metadata(key) {
    return call("metadata", () => wit.getMetadata(this._id, key));
  }

  /** Sets one metadata value (kept by the host until the connection closes). */
  setMetadata(key, value) {
    call("setMetadata", () => wit.setMetadata(this._id, key, String(value)));
  }

  /** Removes one metadata value. */
  deleteMetadata(key) {
    call("deleteMetadata", () => wit.deleteMetadata(this._id, key));
  }

  /** The connection's route, metadata and channels. */
  info() {
    const i = call("info", () => wit.info(this._id));
    return { id: i.id.toString(), route: i.route, metadata: Object.fromEntries(i.metadata), channels: i.channels };
  }

  /**
   * Joins a channel; membership ends when the connection closes. With
   * `{ since }` (the last position the client saw) on a channel that keeps
   * history, the publications after it are delivered first, in order, then
   * the live ones, none twice. Answers `{ recovered, replayed, latest }`.
   */
  subscribe(channel, options = {}) {
    const since = toPosition(options.since, "subscribe");
    const s = call("subscribe", () => witChannels.subscribe(this._id, channel, since));
    return { recovered: s.recovered, replayed: s.replayed, latest: fromPosition(s.latest) };
  }

  /** Leaves a channel (a no-op when not a member). */
  unsubscribe(channel) {
    call("unsubscribe", () => witChannels.unsubscribe(this._id, channel));
  }

  toString() {
    return `Connection(${this.id})`;
  }
}

/** The connection with id `id` (a string from `conn.id`, or a bigint). */
export function connection(id) {
  return new Connection(toId(id));
}

// A position as the WIT wants it (`undefined` stays `undefined`). The
// offset may be a number, a bigint or a decimal string (as a client sent it).
function toPosition(p, op) {
  if (p === undefined || p === null) return undefined;
  if (typeof p !== "object" || typeof p.epoch !== "string") {
    throw new TypeError(`${op}: a position is { offset, epoch } with a string epoch`);
  }
  let offset;
  try {
    offset = BigInt(p.offset);
  } catch {
    throw new TypeError(`${op}: a position's offset is a whole number, not ${String(p.offset)}`);
  }
  if (offset < 0n || offset > 0xffffffffffffffffn) throw new TypeError(`${op}: offset ${offset} is out of range`);
  return { offset, epoch: p.epoch };
}

// A position for the handler: the offset as a number (exact up to 2^53,
// which no channel reaches), as clients see it in stamped JSON.
function fromPosition(p) {
  return p === undefined || p === null ? undefined : { offset: Number(p.offset), epoch: p.epoch };
}

/** Fan-out to the route and to named channels. */
export const channels = {
  /**
   * Sends to every member of `channel` (the caller too, when a member). On a
   * channel that keeps history, answers the publication's `{ offset, epoch }`;
   * otherwise `undefined`.
   */
  publish(channel, msg) {
    return fromPosition(call("publish", () => witChannels.publish(channel, toWire(msg))));
  },
  /** Publishes `JSON.stringify(value)` as text; answers as `publish`. */
  publishJson(channel, value) {
    return channels.publish(channel, JSON.stringify(value));
  },
  /**
   * Publishes a JSON object (a value, or its JSON text) to which the host
   * adds the publication's position as the first fields, `"offset"` and
   * `"epoch"`; answers that position. Only on a channel that keeps history.
   */
  publishStamped(channel, value) {
    const json = typeof value === "string" ? value : JSON.stringify(value);
    return fromPosition(call("publishStamped", () => witChannels.publishStamped(channel, json)));
  },
  /**
   * What `channel` kept after `since` (`{ offset, epoch }`), oldest first, at
   * most `limit` (default 100, at most 1000); without `since`, the last
   * `limit`. Answers `{ publications: [{ offset, msg }], latest, recovered }`.
   */
  history(channel, options = {}) {
    const since = toPosition(options.since, "history");
    const limit = options.limit === undefined ? 100 : options.limit;
    const page = call("history", () => witChannels.history(channel, since, limit));
    return {
      publications: page.publications.map((p) => ({ offset: Number(p.offset), msg: p.msg.val })),
      latest: fromPosition(page.latest),
      recovered: page.recovered,
    };
  },
  /** Sends to every connection on the current route, but `except`. */
  broadcast(msg, options = {}) {
    const except = options.except === undefined || options.except === null ? undefined : toId(options.except);
    call("broadcast", () => witChannels.broadcast(toWire(msg), except));
  },
  /** The members of `channel`, in ascending id order. */
  members(channel) {
    // A list<u64> arrives as a BigUint64Array, whose own `map` would coerce
    // each Connection back to a BigInt.
    return Array.from(call("members", () => witChannels.members(channel)), (id) => new Connection(id));
  },
};

/** The plugin's own key/value namespace. Values are strings or bytes. */
export const kv = {
  /** The value as text (UTF-8), or `undefined` when absent. */
  get(key) {
    const v = call("kv.get", () => witKv.get(key));
    return v === undefined ? undefined : decoder.decode(v);
  },
  /** The value as bytes, or `undefined` when absent. */
  getBytes(key) {
    return call("kv.getBytes", () => witKv.get(key));
  },
  /** The value parsed as JSON, or `undefined` when absent. */
  getJson(key) {
    const v = kv.get(key);
    return v === undefined ? undefined : JSON.parse(v);
  },
  /** Writes a value; `{ ttlMs }` makes it expire. */
  set(key, value, options = {}) {
    const ttl = options.ttlMs === undefined || options.ttlMs === null ? undefined : BigInt(options.ttlMs);
    call("kv.set", () => witKv.set(key, toBytes(value), ttl));
  },
  /** Writes `JSON.stringify(value)`. */
  setJson(key, value, options = {}) {
    kv.set(key, JSON.stringify(value), options);
  },
  /** Removes a key; whether it existed. */
  delete(key) {
    return call("kv.delete", () => witKv.delete(key));
  },
  /** Atomically adds `delta` (default 1) to a counter; the new value. */
  increment(key, delta = 1) {
    return Number(call("kv.increment", () => witKv.increment(key, BigInt(delta))));
  },
  /** Replaces the value when it still equals `expected` (`undefined`: absent). */
  compareAndSwap(key, expected, value) {
    const e = expected === undefined || expected === null ? undefined : toBytes(expected);
    return call("kv.compareAndSwap", () => witKv.compareAndSwap(key, e, toBytes(value)));
  },
  /** Keys starting with `prefix`, in order, after `cursor`, at most `limit`. */
  listKeys(prefix = "", options = {}) {
    const limit = options.limit === undefined ? 100 : options.limit;
    return call("kv.listKeys", () => witKv.listKeys(prefix, options.cursor ?? undefined, limit));
  },
};

// Milliseconds as the WIT's u64: a finite number of at least 0 (rounded
// up), or a bigint.
function toMs(v, what) {
  if (typeof v === "bigint" && v >= 0n) return v;
  if (typeof v === "number" && Number.isFinite(v) && v >= 0) return BigInt(Math.ceil(v));
  throw new TypeError(`${what} is a number of milliseconds, at least 0`);
}

/**
 * Timers: work for later, kept by the host and run by the handler's
 * `onTimer(name, payload)` on exactly one host, at least once, never before
 * its time. Names are the plugin's own; setting a name again replaces the
 * pending timer. Payloads are strings (UTF-8) or bytes; `onTimer` gets a
 * Uint8Array.
 */
export const timers = {
  /** Sets timer `name` due `afterMs` milliseconds from now. */
  set(name, afterMs, payload = "") {
    const when = { tag: "after-ms", val: toMs(afterMs, "afterMs") };
    call("timers.set", () => witTimers.set(name, when, toBytes(payload)));
  },
  /** Sets timer `name` due at Unix time `unixMs` (a past time: at once). */
  setAt(name, unixMs, payload = "") {
    const when = { tag: "at-unix-ms", val: toMs(unixMs, "unixMs") };
    call("timers.setAt", () => witTimers.set(name, when, toBytes(payload)));
  },
  /** Cancels timer `name`; whether it was pending. */
  cancel(name) {
    return call("timers.cancel", () => witTimers.cancel(name));
  },
  /** Timer `name` as `{ name, dueUnixMs, payload, attempts }`, or `undefined`. */
  get(name) {
    const t = call("timers.get", () => witTimers.get(name));
    if (t === undefined) return undefined;
    return { name: t.name, dueUnixMs: Number(t.dueUnixMs), payload: t.payload, attempts: t.attempts };
  },
};

/**
 * Handing the current message on to another handler of the route (a route
 * may be a chain of handlers: the host's config).
 */
export const pipeline = {
  /**
   * Hands `msg` (a string or bytes) to `handler`, another plugin of this
   * route: its `onMessage` runs after this event and its reply goes to the
   * client. Throws `not-allowed` outside `onMessage`, for this handler
   * itself or one the route does not have.
   */
  forward(handler, msg) {
    call("pipeline.forward", () => witPipeline.forward(handler, toWire(msg)));
  },
};

function line(level, args) {
  witLog(level, args.map((a) => (typeof a === "string" ? a : a instanceof Error ? a.stack || String(a) : safeJson(a))).join(" "));
}

function safeJson(v) {
  try {
    return typeof v === "bigint" ? v.toString() : JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/** Lines in the host's log, tagged with the plugin and connection. */
export const log = {
  trace: (...args) => line("trace", args),
  debug: (...args) => line("debug", args),
  info: (...args) => line("info", args),
  warn: (...args) => line("warn", args),
  error: (...args) => line("error", args),
};

/** The UTF-8 text of bytes (a timer's payload, a binary message). */
export function text(bytes) {
  const b = asBytes(bytes);
  if (b === undefined) throw new TypeError("text() takes a Uint8Array, an ArrayBuffer or a typed array");
  return decoder.decode(b);
}

/** The text of a message parsed as JSON (`undefined` for binary or bad JSON). */
export function parseJson(msg) {
  if (typeof msg !== "string") return undefined;
  try {
    return JSON.parse(msg);
  } catch {
    return undefined;
  }
}
