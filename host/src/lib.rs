//! Wharf: a WebSocket host for sandboxed WebAssembly handlers.
//!
//! The host owns every connection and all state; handlers are WebAssembly
//! components (the `wharf:handler` WIT world) called once per event. See
//! `docs/ARCHITECTURE.md` for one frame's path through these modules.
//!
//! - [`server`]: the listener, the WebSocket handshake, one task per
//!   connection and the registry of open connections. Knows nothing of Wasm.
//! - [`runtime`]: the Wasmtime engine, compiled plugins, instance pools and
//!   the host side of the WIT imports. Knows nothing of sockets.
//! - [`store`]: key/value and connection metadata behind one trait.
//! - [`cluster`]: several hosts on one Redis: cross-host delivery and
//!   host liveness.
//! - [`app`]: the one place where server and runtime meet.

pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod events;
#[cfg(test)]
mod fuzzing;
pub mod metrics;
pub mod runtime;
pub mod scaffold;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod testkit;
