//! The way to the other hosts sharing this host's store: effects on their
//! connections and fan-outs to their members go over a [`Bus`]. A host on
//! its own has [`LocalBus`], which holds every connection and carries
//! nothing; hosts on one Redis have the cluster's bus (`crate::cluster`).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::handler::{ConnId, Effect};

/// A frame could not be sent to a connection's host right now.
#[derive(Debug, thiserror::Error)]
#[error("other hosts unreachable: {0}")]
pub struct Unreachable(pub String);

/// Carries effects to the other hosts.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Whether connection `id` is held by this host.
    fn is_local(&self, id: ConnId) -> bool;

    /// Queues `effect` for the other hosts it concerns, without waiting: a
    /// fan-out (publish, broadcast) for every other host, an effect on one
    /// connection for the host that holds it. What cannot be sent is
    /// counted, not returned.
    fn forward(&self, effect: &Effect);

    /// Sends an effect on another host's connection now; whether that host
    /// received it (`false`: no host listens for it, it is dead).
    async fn send_now(&self, effect: &Effect) -> Result<bool, Unreachable>;

    /// When the clients of `conns`, connections host `host` holds, last
    /// sent a message (Unix milliseconds), as that host answers within
    /// `wait`; connections it does not hold are left out.
    async fn activity(&self, host: u32, conns: Vec<ConnId>, wait: Duration) -> Vec<(ConnId, u64)>;

    /// Whether the way to the other hosts is healthy, and the details
    /// `/healthz` shows.
    fn health(&self) -> (bool, Value);

    /// This host is stopping and every connection has closed: send what is
    /// still queued, then tell the other hosts this host is gone.
    async fn leave(&self);
}

/// The bus of a host on its own: every connection is local.
pub struct LocalBus;

#[async_trait]
impl Bus for LocalBus {
    fn is_local(&self, _id: ConnId) -> bool {
        true
    }

    fn forward(&self, _effect: &Effect) {}

    async fn send_now(&self, _effect: &Effect) -> Result<bool, Unreachable> {
        Ok(false)
    }

    async fn activity(&self, _host: u32, _conns: Vec<ConnId>, _wait: Duration) -> Vec<(ConnId, u64)> {
        Vec::new()
    }

    fn health(&self) -> (bool, Value) {
        (true, json!({ "status": "ok" }))
    }

    async fn leave(&self) {}
}
