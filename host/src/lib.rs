//! Wharf: a WebSocket host for sandboxed WebAssembly handlers.
//!
//! The host owns every connection and all state; handlers are WebAssembly
//! components (the `wharf:handler` WIT world) called once per event. See
//! `docs/ARCHITECTURE.md` for one frame's path through these modules.
//!
//! - [`hub`]: the transport-independent core: routes, the registry of
//!   mailboxes, each connection's life from admission to one close, and
//!   where effects go (this host, or others over the [`hub::Bus`]).
//! - [`transport`]: front ends: WebSocket (hyper + tungstenite) and the
//!   conformance kit's simulated clients.
//! - [`handler`]: the [`handler::Handler`] seam and the plain types it takes
//!   and answers.
//! - [`runtime`]: the Wasmtime engine, compiled plugins, instance pools and
//!   the host side of the WIT imports. Knows nothing of sockets.
//! - [`store`]: key/value and connection records behind one trait.
//! - [`cluster`]: several hosts on one Redis: the Redis bus and host
//!   liveness.
//! - [`channel`]: channel names within namespaces.
//! - [`admin`]: the operators' HTTP API.
//! - [`app`]: the composition root.
//! - [`build`], [`scaffold`]: `wharf build` and `wharf new`, for every
//!   guest language.

pub mod admin;
pub mod app;
pub mod auth;
pub mod build;
pub mod channel;
pub mod cli;
pub mod clock;
pub mod close;
pub mod cluster;
pub mod config;
pub mod conn_id;
#[cfg(test)]
mod fuzzing;
pub mod grip;
pub mod handler;
pub mod history;
pub mod hub;
pub mod metrics;
pub mod pipeline;
pub mod runtime;
pub mod scaffold;
pub mod scheduler;
pub mod store;
pub mod telemetry;
pub mod testkit;
pub mod tls;
pub mod transport;
