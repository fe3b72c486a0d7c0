//! Helpers shared by the host's unit tests and its end-to-end tests.

pub mod redis_server;
