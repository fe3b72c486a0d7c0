//! Front ends: how clients reach the hub. Each one turns its own protocol
//! into the hub's admission, open, messages and close, and writes what a
//! connection's mailbox holds back to its client.
//!
//! - [`ws`]: WebSocket over HTTP/1.1 (hyper for the upgrade, tungstenite for
//!   frames), one task per connection, plus static files.
//! - [`sim`]: simulated clients for the conformance kit, through the same
//!   admission and lifecycle without a socket.
//!
//! A new front end is a new module here.

pub mod sim;
pub mod ws;
