//! Wharf's benchmark harness: a load generator with echo, broadcast,
//! connect-storm and idle modes, a native tokio-tungstenite baseline server,
//! the matrix that `make bench` runs and writes to `BENCHMARKS.md`, and the
//! multi-host runs of `make bench-cluster`, the guest languages side by side
//! (`make bench-languages`), a WebSocket-over-HTTP backend behind Wharf
//! and behind Pushpin (`make bench-grip`), timers (`make bench-timers`),
//! routes of several handlers (`make bench-pipeline`),
//! and `make soak`.
//!
//! Every target is loopback only; every loop is bounded in time and count.

pub mod baseline;
pub mod cluster;
pub mod edge;
pub mod grip;
pub mod history;
pub mod languages;
pub mod load;
pub mod matrix;
pub mod pipeline;
pub mod procfs;
pub mod redis;
pub mod report;
pub mod server;
pub mod soak;
pub mod stats;
pub mod timers;
