//! # wharf-guest: write Wharf WebSocket handlers in Rust
//!
//! A handler is a type implementing [`Handler`], exported with
//! [`export_handler!`] from a `cdylib` crate built for `wasm32-wasip2`. The
//! host owns the sockets and all state: a handler keeps nothing between
//! events, and uses [`Connection`] metadata or [`kv`] for what must survive.
//!
//! ```no_run
//! use wharf_guest::{Connection, Handler, Message, export_handler};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     fn on_message(_conn: Connection, msg: Message) -> Option<Message> {
//!         Some(msg)
//!     }
//! }
//!
//! export_handler!(Echo);
//! ```
//!
//! Messages sent through the host ([`Connection::send`], [`channels`]) are
//! delivered after the event returns, in call order; the value returned by
//! [`Handler::on_message`] is the direct reply to the sender and arrives after
//! them.
#![deny(missing_docs)]

use std::fmt;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        // The current version only (the frozen ones are in `wit/deps/`).
        path: "../wit/wharf.wit",
        world: "wharf:handler/wharf@0.2.0",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "wharf_guest::bindings",
    });
}

use bindings::wharf::handler as wit;

/// One complete WebSocket message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

impl Message {
    /// A text message.
    pub fn text(s: impl Into<String>) -> Self {
        Message::Text(s.into())
    }

    /// A binary message.
    pub fn binary(b: impl Into<Vec<u8>>) -> Self {
        Message::Binary(b.into())
    }

    /// The text, when this is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(t) => Some(t),
            Message::Binary(_) => None,
        }
    }

    /// The payload bytes of either kind.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        }
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Message::Text(s.to_string())
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Message::Text(s)
    }
}

impl From<Vec<u8>> for Message {
    fn from(b: Vec<u8>) -> Self {
        Message::Binary(b)
    }
}

impl From<wit::types::Message> for Message {
    fn from(m: wit::types::Message) -> Self {
        match m {
            wit::types::Message::Text(t) => Message::Text(t),
            wit::types::Message::Binary(b) => Message::Binary(b),
        }
    }
}

impl From<Message> for wit::types::Message {
    fn from(m: Message) -> Self {
        match m {
            Message::Text(t) => wit::types::Message::Text(t),
            Message::Binary(b) => wit::types::Message::Binary(b),
        }
    }
}

/// Why a host call failed. The handler decides what to do; nothing traps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The connection does not exist (never did, or has closed).
    UnknownConnection,
    /// This plugin may not do that.
    NotAllowed,
    /// A key, value, message or name is too large.
    TooLarge,
    /// The per-event budget for this kind of work is spent.
    QuotaExceeded,
    /// An argument is malformed.
    InvalidArgument,
    /// A compare-and-swap lost.
    Conflict,
    /// The host could not complete the call right now.
    Unavailable,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::UnknownConnection => "unknown connection",
            Error::NotAllowed => "not allowed",
            Error::TooLarge => "too large",
            Error::QuotaExceeded => "quota exceeded",
            Error::InvalidArgument => "invalid argument",
            Error::Conflict => "conflict",
            Error::Unavailable => "unavailable",
        })
    }
}

impl std::error::Error for Error {}

impl From<wit::types::Error> for Error {
    fn from(e: wit::types::Error) -> Self {
        use wit::types::Error as E;
        match e {
            E::UnknownConnection => Error::UnknownConnection,
            E::NotAllowed => Error::NotAllowed,
            E::TooLarge => Error::TooLarge,
            E::QuotaExceeded => Error::QuotaExceeded,
            E::InvalidArgument => Error::InvalidArgument,
            E::Conflict => Error::Conflict,
            E::Unavailable => Error::Unavailable,
        }
    }
}

/// The result of a host call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A connection, by id. Cheap to copy; valid until the connection closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Connection(u64);

impl Connection {
    /// The connection with this id.
    pub fn from_id(id: u64) -> Self {
        Connection(id)
    }

    /// The connection's id, unique among the hosts sharing a store.
    pub fn id(&self) -> u64 {
        self.0
    }

    /// Sends a message to this connection after the event returns.
    ///
    /// ```no_run
    /// # use wharf_guest::Connection;
    /// # fn f(conn: Connection) -> wharf_guest::Result<()> {
    /// conn.send("welcome")?;
    /// # Ok(()) }
    /// ```
    pub fn send(&self, msg: impl Into<Message>) -> Result<()> {
        Ok(wit::connections::emit(self.0, &msg.into().into())?)
    }

    /// Closes this connection with `code` (1000 or 3000-4999) and a reason of
    /// at most 123 bytes, after the event returns.
    pub fn close(&self, code: u16, reason: &str) -> Result<()> {
        Ok(wit::connections::close(self.0, code, reason)?)
    }

    /// Reads a metadata value. Metadata lives in the host until the
    /// connection closes.
    ///
    /// ```no_run
    /// # use wharf_guest::Connection;
    /// # fn f(conn: Connection) -> wharf_guest::Result<()> {
    /// conn.set_metadata("nick", "ada")?;
    /// assert_eq!(conn.metadata("nick")?.as_deref(), Some("ada"));
    /// # Ok(()) }
    /// ```
    pub fn metadata(&self, key: &str) -> Result<Option<String>> {
        Ok(wit::connections::get_metadata(self.0, key)?)
    }

    /// Sets a metadata value.
    pub fn set_metadata(&self, key: &str, value: &str) -> Result<()> {
        Ok(wit::connections::set_metadata(self.0, key, value)?)
    }

    /// Removes a metadata value.
    pub fn delete_metadata(&self, key: &str) -> Result<()> {
        Ok(wit::connections::delete_metadata(self.0, key)?)
    }

    /// Reads this connection's route, metadata and channels. Works for any
    /// connection of the same plugin, e.g. one found with
    /// [`channels::members`].
    ///
    /// ```no_run
    /// # use wharf_guest::Connection;
    /// # fn f(conn: Connection) -> wharf_guest::Result<()> {
    /// let info = conn.info()?;
    /// assert!(info.route.starts_with('/'));
    /// # Ok(()) }
    /// ```
    pub fn info(&self) -> Result<ConnectionInfo> {
        let i = wit::connections::info(self.0)?;
        Ok(ConnectionInfo { connection: Connection(i.id), route: i.route, metadata: i.metadata, channels: i.channels })
    }

    /// Adds this connection to a channel (see [`channels::publish`]).
    pub fn subscribe(&self, channel: &str) -> Result<()> {
        wit::channels::subscribe(self.0, channel, None)?;
        Ok(())
    }

    /// Adds this connection to a channel, first delivering (after the
    /// event, in order) the publications after `since`, the last position
    /// its client saw, when the channel keeps history: none missed and none
    /// twice. Without `since`, or on a channel without history, it is
    /// [`Connection::subscribe`].
    ///
    /// ```no_run
    /// # fn f(conn: wharf_guest::Connection, since: wharf_guest::Position) -> wharf_guest::Result<()> {
    /// let joined = conn.subscribe_since("room", Some(&since))?;
    /// if !joined.recovered {
    ///     conn.send(r#"{"type":"reload"}"#)?; // history was lost: start over
    /// }
    /// # Ok(()) }
    /// ```
    pub fn subscribe_since(&self, channel: &str, since: Option<&Position>) -> Result<Subscribed> {
        let since = since.map(Position::to_wit);
        let s = wit::channels::subscribe(self.0, channel, since.as_ref())?;
        Ok(Subscribed { recovered: s.recovered, replayed: s.replayed, latest: s.latest.map(Position::from_wit) })
    }

    /// Removes this connection from a channel.
    pub fn unsubscribe(&self, channel: &str) -> Result<()> {
        Ok(wit::channels::unsubscribe(self.0, channel)?)
    }
}

/// What a handler may read about a connection of its own plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection.
    pub connection: Connection,
    /// The route it opened on.
    pub route: String,
    /// Its metadata, in insertion order.
    pub metadata: Vec<(String, String)>,
    /// The channels it is a member of.
    pub channels: Vec<String>,
}

/// Where a publication sits in its channel's history: an offset that grows
/// by one per publication, and the epoch that names one unbroken run of
/// the history (it changes when the history was lost).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    /// The offset; the first publication's is 1, 0 is "before it".
    pub offset: u64,
    /// The epoch.
    pub epoch: String,
}

impl Position {
    /// A position, e.g. one a client sent back.
    pub fn new(offset: u64, epoch: impl Into<String>) -> Self {
        Position { offset, epoch: epoch.into() }
    }

    fn from_wit(p: wit::types::Position) -> Self {
        Position { offset: p.offset, epoch: p.epoch }
    }

    fn to_wit(&self) -> wit::types::Position {
        wit::types::Position { offset: self.offset, epoch: self.epoch.clone() }
    }
}

/// What [`Connection::subscribe_since`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribed {
    /// Whether every publication after `since` is delivered before the
    /// live ones (`false`: some are gone, or the epoch changed).
    pub recovered: bool,
    /// How many missed publications are delivered first.
    pub replayed: u32,
    /// The channel's position when the connection joined; `None` when the
    /// channel keeps no history.
    pub latest: Option<Position>,
}

/// One publication kept in a channel's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// Its offset.
    pub offset: u64,
    /// The message as members received it.
    pub msg: Message,
}

/// What [`channels::history`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    /// Oldest first.
    pub publications: Vec<Publication>,
    /// The channel's position now.
    pub latest: Position,
    /// Whether `since` could be served.
    pub recovered: bool,
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Fan-out to every connection of the route, or to a named channel.
pub mod channels {
    use super::{Connection, HistoryPage, Message, Position, Publication, Result, wit};

    /// Sends to every open connection on the current route except `except`.
    ///
    /// ```no_run
    /// # fn f(sender: wharf_guest::Connection) -> wharf_guest::Result<()> {
    /// wharf_guest::channels::broadcast("someone joined", Some(sender))?;
    /// # Ok(()) }
    /// ```
    pub fn broadcast(msg: impl Into<Message>, except: Option<Connection>) -> Result<()> {
        Ok(wit::channels::broadcast(&msg.into().into(), except.map(|c| c.id()))?)
    }

    /// Sends to every member of `channel`, the caller included if subscribed.
    /// On a channel that keeps history (the host's `[[channels]]`), the
    /// publication is made now and its position is the answer; otherwise it
    /// is delivered after the event and the answer is `None`.
    ///
    /// ```no_run
    /// # fn f() -> wharf_guest::Result<()> {
    /// wharf_guest::channels::publish("room", "hello, room")?;
    /// # Ok(()) }
    /// ```
    pub fn publish(channel: &str, msg: impl Into<Message>) -> Result<Option<Position>> {
        Ok(wit::channels::publish(channel, &msg.into().into())?.map(Position::from_wit))
    }

    /// Publishes the JSON object `json` to a channel that keeps history,
    /// with `"offset"` and `"epoch"` added as its first fields, so that
    /// clients can resume from the last one they saw.
    ///
    /// ```no_run
    /// # fn f() -> wharf_guest::Result<()> {
    /// let pos = wharf_guest::channels::publish_stamped("room", r#"{"type":"say","text":"hi"}"#)?;
    /// // members receive {"offset":N,"epoch":"…","type":"say","text":"hi"}
    /// # Ok(()) }
    /// ```
    pub fn publish_stamped(channel: &str, json: &str) -> Result<Position> {
        Ok(Position::from_wit(wit::channels::publish_stamped(channel, json)?))
    }

    /// The publications `channel` kept after `since` (without it, the last
    /// ones), oldest first, at most `limit` (at most 1,000).
    pub fn history(channel: &str, since: Option<&Position>, limit: u32) -> Result<HistoryPage> {
        let since = since.map(Position::to_wit);
        let page = wit::channels::history(channel, since.as_ref(), limit)?;
        Ok(HistoryPage {
            publications: page
                .publications
                .into_iter()
                .map(|p| Publication { offset: p.offset, msg: p.msg.into() })
                .collect(),
            latest: Position::from_wit(page.latest),
            recovered: page.recovered,
        })
    }

    /// The members of `channel` (presence), ascending, at most 10,000.
    ///
    /// ```no_run
    /// # fn f() -> wharf_guest::Result<()> {
    /// let online = wharf_guest::channels::members("room")?.len();
    /// # Ok(()) }
    /// ```
    pub fn members(channel: &str) -> Result<Vec<Connection>> {
        Ok(wit::channels::members(channel)?.into_iter().map(Connection::from_id).collect())
    }
}

/// The plugin's own key/value namespace, kept by the host.
///
/// ```no_run
/// # fn f() -> wharf_guest::Result<()> {
/// let hits = wharf_guest::kv::increment("hits", 1)?;
/// wharf_guest::kv::set("last", hits.to_string().as_bytes())?;
/// # Ok(()) }
/// ```
pub mod kv {
    use super::{Result, wit};

    /// Reads a value; `None` when absent or expired.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>> {
        Ok(wit::kv::get(key)?)
    }

    /// Writes a value.
    pub fn set(key: &str, value: &[u8]) -> Result<()> {
        Ok(wit::kv::set(key, value, None)?)
    }

    /// Writes a value that expires after `ttl_ms` milliseconds.
    pub fn set_with_ttl(key: &str, value: &[u8], ttl_ms: u64) -> Result<()> {
        Ok(wit::kv::set(key, value, Some(ttl_ms))?)
    }

    /// Removes a key; whether it existed.
    pub fn delete(key: &str) -> Result<bool> {
        Ok(wit::kv::delete(key)?)
    }

    /// Atomically adds `delta` to a counter; the new value.
    pub fn increment(key: &str, delta: i64) -> Result<i64> {
        Ok(wit::kv::increment(key, delta)?)
    }

    /// Replaces the value if it still equals `expected` (`None`: absent).
    pub fn compare_and_swap(key: &str, expected: Option<&[u8]>, value: &[u8]) -> Result<bool> {
        Ok(wit::kv::compare_and_swap(key, expected, value)?)
    }

    /// Keys starting with `prefix`, ascending, after `cursor`, at most `limit`.
    pub fn list_keys(prefix: &str, cursor: Option<&str>, limit: u32) -> Result<Vec<String>> {
        Ok(wit::kv::list_keys(prefix, cursor, limit)?)
    }
}

/// Timers: work for later, kept by the host and run by
/// [`Handler::on_timer`] on exactly one host, at least once, never before
/// its time. Names are the plugin's own; a second `set` of a name replaces
/// the pending timer.
///
/// ```no_run
/// # fn f() -> wharf_guest::Result<()> {
/// use std::time::Duration;
/// wharf_guest::timers::set("turn:lobby", Duration::from_secs(30), b"lobby")?;
/// # Ok(()) }
/// ```
pub mod timers {
    use super::{Result, wit};

    /// A pending timer.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Timer {
        /// Its name.
        pub name: String,
        /// When it is due (after a failed run: its next attempt), Unix ms.
        pub due_unix_ms: u64,
        /// What [`crate::Handler::on_timer`] will be given.
        pub payload: Vec<u8>,
        /// How many times its `on_timer` failed so far.
        pub attempts: u32,
    }

    /// Sets timer `name` due `after` from now, replacing a pending one of
    /// that name. `NotAllowed` when the component has no `on_timer`
    /// (export it with [`crate::export_handler!`]), `QuotaExceeded` past
    /// the plugin's cap on pending timers.
    pub fn set(name: &str, after: std::time::Duration, payload: &[u8]) -> Result<()> {
        let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        Ok(wit::timers::set(name, wit::timers::When::AfterMs(ms), payload)?)
    }

    /// Sets timer `name` due at Unix time `unix_ms` (milliseconds; a time
    /// already past is due at once), replacing a pending one of that name.
    pub fn set_at(name: &str, unix_ms: u64, payload: &[u8]) -> Result<()> {
        Ok(wit::timers::set(name, wit::timers::When::AtUnixMs(unix_ms), payload)?)
    }

    /// Cancels timer `name`; whether it was pending.
    pub fn cancel(name: &str) -> Result<bool> {
        Ok(wit::timers::cancel(name)?)
    }

    /// Timer `name`, when it is pending.
    pub fn get(name: &str) -> Result<Option<Timer>> {
        Ok(wit::timers::get(name)?.map(|t| Timer {
            name: t.name,
            due_unix_ms: t.due_unix_ms,
            payload: t.payload,
            attempts: t.attempts,
        }))
    }
}

/// Handing the current message on to another handler of the route (a
/// route may be a chain of handlers: the host's config).
pub mod pipeline {
    use super::{Message, Result, wit};

    /// Hands `msg` to `handler`, another plugin of this route's handlers:
    /// its `on_message` runs after this event, in the order of this
    /// event's sends, and its direct reply goes to the client.
    /// `NotAllowed` outside `on_message`, for this handler itself or one
    /// the route does not have.
    ///
    /// ```no_run
    /// # fn f(msg: wharf_guest::Message) -> wharf_guest::Result<()> {
    /// wharf_guest::pipeline::forward("chat", msg)?; // a rate limiter let it through
    /// # Ok(()) }
    /// ```
    pub fn forward(handler: &str, msg: impl Into<Message>) -> Result<()> {
        Ok(wit::pipeline::forward(handler, &msg.into().into())?)
    }

    /// Hands `msg` to the next handler of the route's chain after this one
    /// (a rate limiter or authoriser in front of the rest): [`forward`] by
    /// position.
    pub fn forward_next(msg: impl Into<Message>) -> Result<()> {
        Ok(wit::pipeline::forward("", &msg.into().into())?)
    }
}

/// Lines in the host's log, tagged with the plugin and connection.
pub mod log {
    use super::wit::{logging, types::LogLevel};

    /// Logs at debug level.
    pub fn debug(text: &str) {
        logging::log(LogLevel::Debug, text)
    }

    /// Logs at info level.
    ///
    /// ```no_run
    /// wharf_guest::log::info("handler started");
    /// ```
    pub fn info(text: &str) {
        logging::log(LogLevel::Info, text)
    }

    /// Logs at warn level.
    pub fn warn(text: &str) {
        logging::log(LogLevel::Warn, text)
    }

    /// Logs at error level.
    pub fn error(text: &str) {
        logging::log(LogLevel::Error, text)
    }
}

/// The HTTP request that asks to open a connection.
#[derive(Clone, Debug)]
pub struct Request {
    /// The path, e.g. `/chat`.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// Header (lower-case name, value) pairs.
    pub headers: Vec<(String, String)>,
    /// Subprotocols the client offered.
    pub subprotocols: Vec<String>,
    /// The peer address.
    pub remote_addr: String,
}

impl Request {
    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The first value of a query parameter (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

/// Consent to open a connection.
#[derive(Clone, Debug, Default)]
pub struct Accept {
    /// The subprotocol to select (one the client offered).
    pub subprotocol: Option<String>,
    /// Initial metadata.
    pub metadata: Vec<(String, String)>,
}

impl Accept {
    /// Selects a subprotocol.
    pub fn subprotocol(mut self, p: impl Into<String>) -> Self {
        self.subprotocol = Some(p.into());
        self
    }

    /// Adds an initial metadata value.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }
}

/// Refusal to open a connection: the client gets this HTTP status and body.
#[derive(Clone, Debug)]
pub struct Reject {
    /// HTTP status, 400 to 599.
    pub status: u16,
    /// Response body.
    pub reason: String,
}

impl Reject {
    /// A refusal with a status and reason.
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Reject { status, reason: reason.into() }
    }
}

/// The events of a connection, and of the plugin's timers. Every method
/// has a default: accept every connection, ignore every message, do nothing
/// on close or when a timer is due.
pub trait Handler {
    /// A client asks to open a connection.
    fn on_open(conn: Connection, req: Request) -> std::result::Result<Accept, Reject> {
        let _ = (conn, req);
        Ok(Accept::default())
    }

    /// A message arrived; the returned message is the direct reply.
    fn on_message(conn: Connection, msg: Message) -> Option<Message> {
        let _ = (conn, msg);
        None
    }

    /// The connection closed. Runs exactly once per accepted connection.
    fn on_close(conn: Connection, code: u16, reason: String) {
        let _ = (conn, code, reason);
    }

    /// Timer `name` (set with [`timers::set`]) is due, with its payload.
    /// No connection is the sender: it may send to any connection of the
    /// plugin, publish, broadcast (to the route of the event that set the
    /// timer), and set timers. A panic runs it again later, a bounded
    /// number of times.
    fn on_timer(name: String, payload: Vec<u8>) {
        let _ = (name, payload);
    }
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use super::bindings::exports::wharf::handler::handler::Guest;
    pub use super::bindings::exports::wharf::handler::timer_handler::Guest as TimerGuest;

    pub fn on_open<H: Handler>(
        conn: u64,
        req: wit::types::Request,
    ) -> std::result::Result<wit::types::Accept, wit::types::Reject> {
        let req = Request {
            path: req.path,
            query: req.query,
            headers: req.headers,
            subprotocols: req.subprotocols,
            remote_addr: req.remote_addr,
        };
        H::on_open(Connection(conn), req)
            .map(|a| wit::types::Accept { subprotocol: a.subprotocol, metadata: a.metadata })
            .map_err(|r| wit::types::Reject { status: r.status, reason: r.reason })
    }

    pub fn on_message<H: Handler>(conn: u64, msg: wit::types::Message) -> Option<wit::types::Message> {
        H::on_message(Connection(conn), msg.into()).map(Into::into)
    }

    pub fn on_close<H: Handler>(conn: u64, code: u16, reason: String) {
        H::on_close(Connection(conn), code, reason)
    }

    pub fn on_timer<H: Handler>(name: String, payload: Vec<u8>) {
        H::on_timer(name, payload)
    }
}

/// Exports a [`Handler`] type as the component's `wharf:handler` exports
/// (`handler` and `timer-handler`). Use it once per crate.
#[macro_export]
macro_rules! export_handler {
    ($handler:ty) => {
        const _: () = {
            struct __WharfExport;
            impl $crate::__private::Guest for __WharfExport {
                fn on_open(
                    conn: u64,
                    req: $crate::bindings::wharf::handler::types::Request,
                ) -> ::core::result::Result<
                    $crate::bindings::wharf::handler::types::Accept,
                    $crate::bindings::wharf::handler::types::Reject,
                > {
                    $crate::__private::on_open::<$handler>(conn, req)
                }
                fn on_message(
                    conn: u64,
                    msg: $crate::bindings::wharf::handler::types::Message,
                ) -> ::core::option::Option<$crate::bindings::wharf::handler::types::Message> {
                    $crate::__private::on_message::<$handler>(conn, msg)
                }
                fn on_close(conn: u64, code: u16, reason: ::std::string::String) {
                    $crate::__private::on_close::<$handler>(conn, code, reason)
                }
            }
            impl $crate::__private::TimerGuest for __WharfExport {
                fn on_timer(name: ::std::string::String, payload: ::std::vec::Vec<u8>) {
                    $crate::__private::on_timer::<$handler>(name, payload)
                }
            }
    $crate::bindings::export!(__WharfExport with_types_in $crate::bindings);
        };
    };
}
