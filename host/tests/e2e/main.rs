//! End-to-end tests of the host: real `wharf` hosts (in process or as
//! `wharf serve` processes) on 127.0.0.1, real WebSocket and HTTP clients,
//! real components built from the examples, a real `redis-server` where Redis
//! is the subject.
//!
//! One test binary, one module per subject: every test binary links Wasmtime,
//! so one binary per file cost a link and about 100 MB of disk each.
//! `cargo test -p wharf --test e2e cluster::` runs one subject.

mod common;

mod admin;
mod browser;
mod cli;
mod cluster;
mod edge;
mod examples;
mod fuzz;
mod grip;
mod history;
mod languages;
mod lifecycle;
mod limits;
mod reload;
mod sandbox;
mod store;
mod testkit;
mod timers;
