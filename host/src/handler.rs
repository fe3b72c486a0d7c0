//! The seam between the core and the code that handles connections: the
//! [`Handler`] trait and the plain types it takes and answers.
//!
//! A handler is told of three events per connection (open, message, close)
//! and answers with a decision and the [`Effect`]s it asks for, which the
//! hub applies after the event returns. The Wasm plugin slot is one
//! implementation (`app::wasm_handler`); any other kind of handler (an HTTP
//! backend) is another, chosen per route. No library type of either side
//! (Wasmtime bindings, tungstenite frames) appears here.

use std::sync::Arc;

use async_trait::async_trait;

pub use crate::conn_id::ConnId;
use crate::history::{Limits, Page, Position};
use crate::store::{Entry, StoreResult};

/// One complete WebSocket message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

/// The HTTP upgrade request that asks to open a connection.
#[derive(Clone, Debug, Default)]
pub struct OpenRequest {
    /// The request path.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// Header (lower-case name, value) pairs, in order.
    pub headers: Vec<(String, String)>,
    /// Subprotocols offered by the client.
    pub subprotocols: Vec<String>,
    /// The peer address.
    pub remote_addr: String,
}

/// A handler accepted the connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accept {
    /// The selected subprotocol, one the client offered.
    pub subprotocol: Option<String>,
    /// Initial connection metadata.
    pub metadata: Vec<(String, String)>,
}

/// A handler refused the connection with an HTTP status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    /// HTTP status, 400..=599.
    pub status: u16,
    /// Response body.
    pub reason: String,
}

/// Something a handler asked the host to do, applied after its event returns,
/// in the order the handler asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send to one connection.
    Emit {
        /// Recipient.
        to: ConnId,
        /// Payload.
        msg: Message,
    },
    /// Send to every connection on a route.
    Broadcast {
        /// The route of the calling event.
        route: Arc<str>,
        /// Payload.
        msg: Message,
        /// A connection to leave out.
        except: Option<ConnId>,
    },
    /// Add a connection to a channel.
    Subscribe {
        /// The connection.
        conn: ConnId,
        /// The channel, qualified by its namespace (`crate::channel`).
        channel: String,
    },
    /// Finish a subscription that replays (this host's connection only):
    /// queue the publications of `page` after `since`, then those held
    /// since the replay began, then deliver live (`Registry::finish_replay`).
    Resume {
        /// The connection.
        conn: ConnId,
        /// The channel, qualified by its namespace (`crate::channel`).
        channel: String,
        /// The position the client had.
        since: Option<crate::history::Position>,
        /// What was read of the channel's history.
        page: Arc<crate::history::Page>,
    },
    /// Remove a connection from a channel.
    Unsubscribe {
        /// The connection.
        conn: ConnId,
        /// The channel, qualified by its namespace (`crate::channel`).
        channel: String,
    },
    /// Send to every member of a channel.
    Publish {
        /// The channel, qualified by its namespace (`crate::channel`).
        channel: String,
        /// Payload.
        msg: Message,
    },
    /// Hand the current connection's message on to another handler of its
    /// route (`pipeline.forward`): taken by the route's [`crate::pipeline`]
    /// before the effects are applied, never applied by the hub.
    Forward {
        /// The connection.
        conn: ConnId,
        /// The handler forwarding it.
        from: Arc<str>,
        /// The handler's name; empty: the one after `from` in the chain.
        handler: String,
        /// The message.
        msg: Message,
    },
    /// Close a connection.
    Close {
        /// The connection.
        conn: ConnId,
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
}

impl Effect {
    /// The one connection this effect is for, or `None` for a fan-out
    /// (publish, broadcast) that reaches every host's members.
    pub fn recipient(&self) -> Option<ConnId> {
        match self {
            Effect::Emit { to, .. } => Some(*to),
            Effect::Subscribe { conn, .. }
            | Effect::Resume { conn, .. }
            | Effect::Unsubscribe { conn, .. }
            | Effect::Forward { conn, .. }
            | Effect::Close { conn, .. } => Some(*conn),
            Effect::Broadcast { .. } | Effect::Publish { .. } => None,
        }
    }
}

/// Why a handler event failed. The detail is for the log, never for clients.
#[derive(Debug, thiserror::Error)]
pub enum HandlerFailure {
    /// The guest trapped (panic, unreachable, out of bounds, deadline).
    #[error("handler trapped: {0}")]
    Trap(String),
    /// The host could not run the handler (no instance could be made).
    #[error("handler unavailable: {0}")]
    Unavailable(String),
    /// The handler's answer broke a limit the host cannot answer with a WIT
    /// error (a direct reply or accept metadata too large).
    #[error("handler answer over a limit: {0}")]
    OverLimit(String),
}

/// The outcome of one event: the handler's answer and the effects it asked
/// for, in order.
pub type Outcome<T> = Result<(T, Vec<Effect>), HandlerFailure>;

/// Which connection, on which route, an event is about.
#[derive(Clone, Debug)]
pub struct EventContext {
    /// The connection.
    pub conn: ConnId,
    /// The route it opened on.
    pub route: Arc<str>,
    /// The route's handlers, which `pipeline.forward` may hand a message to.
    pub handlers: Arc<RouteHandlers>,
}

impl EventContext {
    /// An event on connection `conn` of `route`, served by `handlers`.
    pub fn new(conn: ConnId, route: Arc<str>, handlers: Arc<RouteHandlers>) -> Self {
        EventContext { conn, route, handlers }
    }

    /// An event of no connection (a timer firing) on `route`: there is no
    /// handler to forward to.
    pub fn detached(route: Arc<str>) -> Self {
        EventContext { conn: 0, route, handlers: Arc::new(RouteHandlers::default()) }
    }
}

/// A route's handlers by name: its chain first (every connection's open
/// and close go through it; a route of one handler is a chain of one), then
/// those only a message selection names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteHandlers {
    names: Vec<Arc<str>>,
    chain: usize,
}

impl RouteHandlers {
    /// Handlers `names`, of which the first `chain` are the chain.
    pub fn new(names: Vec<Arc<str>>, chain: usize) -> Self {
        assert!(chain <= names.len(), "the chain is among the handlers");
        RouteHandlers { names, chain }
    }

    /// A route of the one handler `name`.
    pub fn one(name: Arc<str>) -> Self {
        RouteHandlers { names: vec![name], chain: 1 }
    }

    /// Their names, the chain's first.
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// The handler (an index into [`RouteHandlers::names`]) that handler
    /// `from` reaches by forwarding to `to`; an empty `to` is the next one
    /// of the chain after `from`. `None`: the route has no such handler,
    /// `from` is the chain's last, or `to` is `from` itself.
    pub fn forward(&self, from: &str, to: &str) -> Option<usize> {
        if to.is_empty() {
            let at = self.names[..self.chain].iter().position(|n| **n == *from)?;
            return (at + 1 < self.chain).then_some(at + 1);
        }
        if to == from {
            return None;
        }
        self.names.iter().position(|n| **n == *to)
    }
}

/// Where a handler that acts between events (an HTTP backend's answer
/// arrives after the event that caused it returned) sends the effects it
/// asks for; the hub applies them as it applies an event's.
pub trait EffectSink: Send + Sync + 'static {
    /// Applies `effects` in order.
    fn apply(&self, effects: Vec<Effect>);
}

/// Channel history as a handler reaches it during an event: the hub's
/// (`hub::history`). Publishing to a channel that keeps history, reading
/// it and starting a replay happen at once, not after the event.
#[async_trait]
pub trait ChannelHistory: Send + Sync + 'static {
    /// What qualified channel `channel` keeps; `None`: no history.
    fn limits(&self, channel: &str) -> Option<Limits>;

    /// Publishes `entry` to `channel` (which keeps `limits`): kept, then
    /// delivered to its members on every host, in offset order.
    async fn publish(&self, channel: &str, limits: Limits, entry: Entry) -> StoreResult<Position>;

    /// What `channel` kept after `since` (or its last), at most `limit`.
    async fn read(&self, channel: &str, limits: Limits, since: Option<&Position>, limit: usize) -> StoreResult<Page>;

    /// Starts a subscription of this host's connection `conn` that replays
    /// (finished by [`Effect::Resume`]); whether the connection is here.
    fn begin_replay(&self, conn: ConnId, channel: &str) -> bool;

    /// Takes back a replay whose [`Effect::Resume`] will not be applied (its
    /// event failed): the connection leaves the channel on this host.
    fn abandon_replay(&self, conn: ConnId, channel: &str);
}

/// What became of one timer firing handed to a [`TimerTarget`].
#[derive(Debug)]
pub enum Fired {
    /// `on-timer` ran and its effects were applied.
    Ran,
    /// It failed (trapped, ran out of time, could not run).
    Failed(HandlerFailure),
    /// This host serves no plugin of that name (now).
    NoPlugin,
}

/// Where the timer scheduler hands due timers: the plugins by name.
#[async_trait]
pub trait TimerTarget: Send + Sync + 'static {
    /// Runs `plugin`'s `on-timer` for `timer` and applies its effects.
    async fn fire(&self, plugin: &str, timer: &crate::store::Timer) -> Fired;

    /// Firings per second this host runs for `plugin`; `None` when it
    /// serves no plugin of that name.
    fn firing_rate(&self, plugin: &str) -> Option<u32>;
}

/// The code behind a route: told of each connection's open, messages and
/// close, one event at a time per connection.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The name connections of this handler are recorded under (the
    /// plugin's name; a route's handler graph, `pipeline/`, the names of
    /// all its handlers, comma-separated): handlers act only on connections
    /// whose record names them.
    fn name(&self) -> Arc<str>;

    /// The handlers behind the route by name (one: this one; a route's
    /// handler graph: each of its own).
    fn handlers(&self) -> Arc<RouteHandlers> {
        Arc::new(RouteHandlers::one(self.name()))
    }

    /// A client asks to open a connection: accept (with a subprotocol and
    /// metadata) or reject (with an HTTP status).
    async fn open(&self, cx: &EventContext, req: OpenRequest) -> Outcome<Result<Accept, Reject>>;

    /// A message arrived; the answer is the direct reply.
    async fn message(&self, cx: &EventContext, msg: Message) -> Outcome<Option<Message>>;

    /// The connection ended. Called exactly once per accepted connection.
    async fn close(&self, cx: &EventContext, code: u16, reason: &str) -> Outcome<()>;

    /// Waits, for a bounded time, until the effects answering the messages
    /// already handed over have been applied. A handler that answers within
    /// its events (a plugin) has nothing to wait for.
    async fn settle(&self, _cx: &EventContext) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_reaches_another_handler_of_the_route_or_the_next_of_the_chain() {
        let names = ["auth", "limit", "chat", "rooms"].map(Arc::from).to_vec();
        let route = RouteHandlers::new(names, 3);
        assert_eq!(route.forward("auth", ""), Some(1));
        assert_eq!(route.forward("limit", ""), Some(2));
        assert_eq!(route.forward("chat", ""), None, "the chain's last has no next");
        assert_eq!(route.forward("rooms", ""), None, "a selected handler is not in the chain");
        assert_eq!(route.forward("auth", "rooms"), Some(3));
        assert_eq!(route.forward("rooms", "auth"), Some(0));
        assert_eq!(route.forward("chat", "chat"), None, "not to itself");
        assert_eq!(route.forward("chat", "other"), None);
        let one = RouteHandlers::one(Arc::from("echo"));
        assert_eq!((one.forward("echo", ""), one.forward("echo", "echo")), (None, None));
        assert_eq!(RouteHandlers::default().forward("echo", ""), None);
    }
}
