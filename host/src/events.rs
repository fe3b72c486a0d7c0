//! Plain types that cross between the server and the runtime.
//!
//! Neither side's library types (Wasmtime bindings, tungstenite frames) appear
//! here, so `server/` and `runtime/` stay independent of each other.

use std::sync::Arc;

/// Identifies one connection; unique among the hosts sharing a store. The
/// high [`HOST_BITS`] bits are the number of the host that holds it (0 for a
/// host on its own), the rest count up from 1 on that host.
pub type ConnId = u64;

/// Bits of a connection id that name its host.
pub const HOST_BITS: u32 = 24;

const LOCAL_BITS: u32 = 64 - HOST_BITS;

/// The host that holds connection `id`.
pub fn host_of(id: ConnId) -> u32 {
    (id >> LOCAL_BITS) as u32
}

/// The id before the first one host `host` hands out.
pub fn id_base(host: u32) -> ConnId {
    u64::from(host) << LOCAL_BITS
}

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
        /// The channel.
        channel: String,
    },
    /// Remove a connection from a channel.
    Unsubscribe {
        /// The connection.
        conn: ConnId,
        /// The channel.
        channel: String,
    },
    /// Send to every member of a channel.
    Publish {
        /// The channel.
        channel: String,
        /// Payload.
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

/// Why a handler event failed. The detail is for the log, never for clients.
#[derive(Debug, thiserror::Error)]
pub enum HandlerFailure {
    /// The guest trapped (panic, unreachable, out of bounds, deadline).
    #[error("handler trapped: {0}")]
    Trap(String),
    /// The host could not run the handler (no instance could be made).
    #[error("handler unavailable: {0}")]
    Unavailable(String),
}
