//! Wharf's benchmark harness: a load generator with echo, broadcast,
//! connect-storm and idle modes, a native tokio-tungstenite baseline server,
//! and the matrix that `make bench` runs and writes to `BENCHMARKS.md`.
//!
//! Every target is loopback only; every loop is bounded in time and count.

pub mod baseline;
pub mod load;
pub mod matrix;
pub mod procfs;
pub mod report;
pub mod server;
pub mod stats;
