// Types of the `wharf` module: Wharf WebSocket handlers in TypeScript.

/** Why a host call failed (the WIT `error` enum). */
export type ErrorCode =
  | "unknown-connection"
  | "not-allowed"
  | "too-large"
  | "quota-exceeded"
  | "invalid-argument"
  | "conflict"
  | "unavailable";

/** A host call failed; `code` says why. */
export declare class WharfError extends Error {
  constructor(code: ErrorCode, op?: string);
  readonly code: ErrorCode;
}

/** Thrown from `onOpen`: the client gets this HTTP status (400-599) and reason. */
export declare class Reject extends Error {
  constructor(status: number, reason?: string);
  readonly status: number;
  readonly reason: string;
}

/** A WebSocket message: text as a string, binary as bytes. */
export type Message = string | Uint8Array;

/** What a handler may send: text, or bytes. */
export type Outgoing = string | Uint8Array | ArrayBuffer;

/** What `info()` tells about a connection of this plugin. */
export interface ConnectionInfo {
  id: string;
  route: string;
  metadata: Record<string, string>;
  channels: string[];
}

/** One WebSocket connection of this plugin. */
export declare class Connection {
  /** The connection id, as a decimal string (unique across hosts). */
  readonly id: string;
  /** Sends a message after this event returns. */
  send(msg: Outgoing): void;
  /** Sends `JSON.stringify(value)` as text. */
  sendJson(value: unknown): void;
  /** Closes with `code` (1000 or 3000-4999) and a reason of at most 123 bytes. */
  close(code?: number, reason?: string): void;
  /** One metadata value, or `undefined`. */
  metadata(key: string): string | undefined;
  /** Sets one metadata value, kept by the host until the connection closes. */
  setMetadata(key: string, value: string): void;
  /** Removes one metadata value. */
  deleteMetadata(key: string): void;
  /** The connection's route, metadata and channels. */
  info(): ConnectionInfo;
  /**
   * Joins a channel; membership ends when the connection closes. With
   * `since` on a channel that keeps history, what the client missed is
   * delivered first, in order, then the live publications, none twice.
   */
  subscribe(channel: string, options?: { since?: Position | PositionInput }): Subscribed;
  /** Leaves a channel (a no-op when not a member). */
  unsubscribe(channel: string): void;
}

/** The connection with this id (from `conn.id` or `channels.members`). */
export declare function connection(id: string | bigint): Connection;

/** What `onOpen` sees of the upgrade request. */
export interface Request {
  /** The request path, e.g. `/chat`. */
  readonly path: string;
  /** The raw query string without `?`. */
  readonly query: string;
  /** Headers by lower-case name; repeated ones joined with ", ". */
  readonly headers: Readonly<Record<string, string>>;
  /** Headers as sent: (lower-case name, value) pairs, in order. */
  readonly headerList: ReadonlyArray<[string, string]>;
  /** Subprotocols the client offered. */
  readonly subprotocols: string[];
  /** The peer address, e.g. `127.0.0.1:50312`. */
  readonly remoteAddr: string;
  /** Query parameters, decoded; the first value of each name. */
  readonly params: Readonly<Record<string, string>>;
  /** One header (any case), or `undefined`. */
  header(name: string): string | undefined;
}

/** Returned from `onOpen` to accept with a subprotocol or initial metadata. */
export interface Accept {
  subprotocol?: string;
  metadata?: Record<string, string> | Array<[string, string]>;
}

/** A handler: the default export of `src/index.ts`, an object or a class. */
export interface Handler {
  /** Accept (return nothing or an `Accept`) or `throw new Reject(status, reason)`. */
  onOpen?(conn: Connection, req: Request): Accept | void | Promise<Accept | void>;
  /** A returned message is the direct reply to the sender. */
  onMessage?(conn: Connection, msg: Message): Outgoing | void | Promise<Outgoing | void>;
  /** Runs exactly once for every accepted connection. */
  onClose?(conn: Connection, code: number, reason: string): void | Promise<void>;
  /** Timer `name` is due (see `timers`); an exception runs it again later. */
  onTimer?(name: string, payload: Uint8Array): void | Promise<void>;
}

/** Where a publication sits in its channel's history. */
export interface Position {
  /** Grows by one per publication; 0 is "before the first". */
  offset: number;
  /** Names one unbroken run of the history; offsets of another epoch mean nothing. */
  epoch: string;
}

/** A position as a client may send it back (the offset as a string or bigint too). */
export interface PositionInput {
  offset: number | bigint | string;
  epoch: string;
}

/** What `subscribe` did. */
export interface Subscribed {
  /** With `since`: whether every publication after it was delivered (`false`: some are gone). */
  recovered: boolean;
  /** How many missed publications were delivered first. */
  replayed: number;
  /** The channel's position when the connection joined; `undefined` without history. */
  latest?: Position;
}

/** One publication a channel kept. */
export interface Publication {
  offset: number;
  msg: Message;
}

/** What `history` answers. */
export interface HistoryPage {
  /** Oldest first. */
  publications: Publication[];
  /** The channel's position now (offset 0 when it has had none in this epoch). */
  latest: Position;
  /** Whether `since` could be served (`false`: too old, or another epoch). */
  recovered: boolean;
}

/** Fan-out to the route and to named channels (the plugin's own names). */
export declare const channels: {
  /** The publication's position on a channel with history, else `undefined`. */
  publish(channel: string, msg: Outgoing): Position | undefined;
  publishJson(channel: string, value: unknown): Position | undefined;
  /** A JSON object stamped with its `offset` and `epoch` (channels with history only). */
  publishStamped(channel: string, value: object | string): Position;
  /** What the channel kept after `since` (or its last `limit`, default 100, at most 1000). */
  history(channel: string, options?: { since?: Position | PositionInput; limit?: number }): HistoryPage;
  broadcast(msg: Outgoing, options?: { except?: Connection | string | bigint }): void;
  members(channel: string): Connection[];
};

/** The plugin's own key/value namespace. */
export declare const kv: {
  get(key: string): string | undefined;
  getBytes(key: string): Uint8Array | undefined;
  getJson<T = unknown>(key: string): T | undefined;
  set(key: string, value: string | Uint8Array, options?: { ttlMs?: number }): void;
  setJson(key: string, value: unknown, options?: { ttlMs?: number }): void;
  delete(key: string): boolean;
  increment(key: string, delta?: number): number;
  compareAndSwap(key: string, expected: string | Uint8Array | undefined, value: string | Uint8Array): boolean;
  listKeys(prefix?: string, options?: { cursor?: string; limit?: number }): string[];
};

/** A pending timer. */
export interface Timer {
  name: string;
  /** When it is due (after a failed run: its next attempt), Unix ms. */
  dueUnixMs: number;
  payload: Uint8Array;
  /** How many times its `onTimer` failed so far. */
  attempts: number;
}

/** Timers, run by the handler's `onTimer` at least once, never early. */
export declare const timers: {
  set(name: string, afterMs: number | bigint, payload?: string | Uint8Array): void;
  setAt(name: string, unixMs: number | bigint, payload?: string | Uint8Array): void;
  cancel(name: string): boolean;
  get(name: string): Timer | undefined;
};

/** Handing the current message on to another handler of the route. */
export declare const pipeline: {
  forward(handler: string, msg: Outgoing): void;
};

/** Lines in the host's log, tagged with the plugin and connection. */
export declare const log: {
  trace(...args: unknown[]): void;
  debug(...args: unknown[]): void;
  info(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
};

/** `v` as a Uint8Array when it holds bytes (any typed array, ArrayBuffer). */
export declare function asBytes(v: unknown): Uint8Array | undefined;

/** The UTF-8 text of bytes (a timer's payload, a binary message). */
export declare function text(bytes: Uint8Array | ArrayBuffer | ArrayBufferView): string;

/** The text of a message parsed as JSON (`undefined` for binary or bad JSON). */
export declare function parseJson<T = unknown>(msg: Message): T | undefined;
