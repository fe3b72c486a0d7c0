//! WebSocket-over-HTTP and GRIP: the second kind of handler beside the Wasm
//! plugin. A route served by a backend turns each connection's events into
//! HTTP requests to it (one in flight per connection; what arrives meanwhile
//! goes in the next one, in order) and the events of its answers back into
//! effects: messages to the client, channel subscriptions, metadata, close.
//! The admin API's `/publish/` takes the publishes GRIP libraries send.
//!
//! - [`events`]: the `application/websocket-events` body format;
//! - [`control`]: GRIP control messages (`c:{"type": "subscribe", ...}`)
//!   and the message prefix;
//! - [`publish`]: the GRIP publish format (`{"items": [...]}`);
//! - [`sig`]: `Grip-Sig` and publish tokens (HS256 JWTs);
//! - `client.rs`: the pooled HTTP/1.1 client;
//! - `backend/`: the backend as a [`Handler`](crate::handler::Handler)
//!   (`mod.rs`: opening, the request with its retries), each connection's
//!   session task (`session.rs`), and what an answer's events, control
//!   messages and headers come to (`answer.rs`).

mod backend;
mod client;
pub mod control;
pub mod events;
pub mod publish;
pub mod sig;

use std::time::Duration;

pub use backend::BackendHandler;

/// The name the connections of a backend route are recorded under (no
/// plugin can have it: plugin names have no `:` or `/`).
pub fn handler_name(route: &str) -> String {
    format!("backend:{route}")
}

/// How a route talks to its backend (the route's `backend` key).
#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// The base URL; the client's path and query are appended to its path.
    pub url: http::Uri,
    /// How long one request may take, answer included.
    pub timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How many times a request the backend cannot have seen (it could not
    /// be connected to) is sent again before the client is closed (1011).
    pub retries: u32,
    /// The wait before the first retry; it doubles for each next one.
    pub retry_backoff: Duration,
    /// The `Grip-Sig` key and issuer, when requests are signed.
    pub sig: Option<(Vec<u8>, String)>,
    /// The channel namespace of the channels the backend subscribes
    /// connections to.
    pub channel_namespace: String,
    /// Events queued for one request stop being added past this many bytes;
    /// a client whose events wait beyond it is not read until they are sent.
    pub max_request_bytes: usize,
    /// The largest answer body accepted.
    pub max_response_bytes: usize,
    /// Requests in flight to the backend at once, for all the route's
    /// connections together; more wait (within `timeout`).
    pub max_concurrent_requests: usize,
}
